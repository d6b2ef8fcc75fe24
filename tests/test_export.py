"""The export's typed interface, without any transport in between."""

from __future__ import annotations

import argparse
import errno
import os

import pytest

from transports.export.backing import BackingError, parse_backing, parse_size
from transports.export.image import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE,
    Export,
    ExportOptions,
)
from transports.export.spec import ExportSpec

MiB = 1 << 20


@pytest.fixture(params=["memory", "file"])
def export(request, tmp_path):
    spec = "memory:4M" if request.param == "memory" else f"file:{tmp_path / 'img'}"
    with Export(parse_backing(spec, None if request.param == "memory" else 4 * MiB)) as e:
        yield e


@pytest.mark.parametrize(
    "text, value",
    [
        ("4096", 4096),
        ("4k", 4096),
        ("1M", MiB),
        ("2G", 2 << 30),
        ("1GiB", 1 << 30),
        ("3 MB", 3 * MiB),
    ],
)
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "x", "1.5G", "-1", "12Q"])
def test_parse_size_rejects(text):
    with pytest.raises(BackingError, match="cannot parse size"):
        parse_size(text)


def test_read_write_and_end(export):
    assert export.write(10, b"abc") == 3
    assert export.read(9, 5) == b"\0abc\0"
    buf = bytearray(8)
    assert export.read_into(4 * MiB - 3, memoryview(buf)) == 3
    assert export.read(4 * MiB, 10) == b""
    assert export.write(4 * MiB - 2, b"wxyz") == 2
    with pytest.raises(OSError) as err:
        export.write(4 * MiB, b"a")
    assert err.value.errno == errno.ENOSPC


def test_punch_hole_zero_range_and_seek(export):
    export.write(0, b"\xff" * (2 * MiB))
    export.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, MiB, MiB)
    assert export.read(MiB - 1, 3) == b"\xff\0\0"
    assert export.lseek(0, os.SEEK_HOLE) == MiB
    with pytest.raises(OSError) as err:
        export.lseek(MiB, os.SEEK_DATA)
    assert err.value.errno == errno.ENXIO  # nothing but holes up to the end
    export.fallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 5, 5)
    assert export.read(4, 7) == b"\xff" + bytes(5) + b"\xff"
    with pytest.raises(OSError) as err:
        export.fallocate(FALLOC_FL_PUNCH_HOLE, 0, 10)
    assert err.value.errno == errno.EINVAL
    assert export.size == 4 * MiB


def test_read_only_and_growable(tmp_path):
    spec = parse_backing("memory:1M")
    with Export(spec, ExportOptions(read_only=True)) as e:
        for call in (
            lambda: e.write(0, b"x"),
            lambda: e.fallocate(0, 0, 10),
            lambda: e.setattr(size=10),
            lambda: e.open(os.O_RDWR),
        ):
            with pytest.raises(OSError) as err:
                call()
            assert err.value.errno == errno.EROFS
    with Export(spec, ExportOptions(growable=True)) as e:
        e.write(2 * MiB, b"x")
        assert e.getattr().size == 2 * MiB + 1
        e.setattr(size=MiB)
        assert e.size == MiB


def test_open_direct_io():
    with Export(parse_backing("memory:1M")) as e:
        assert e.open(os.O_RDONLY | os.O_DIRECT).direct_io
        assert not e.open(os.O_RDONLY).direct_io
    with Export(parse_backing("memory:1M"), ExportOptions(cache="direct")) as e:
        assert e.open(os.O_RDONLY).direct_io


def test_existing_file_size_mismatch_is_an_error(tmp_path):
    image = tmp_path / "img"
    image.write_bytes(b"x" * 4096)
    with pytest.raises(BackingError, match="qemu-img resize"):
        Export(parse_backing(f"file:{image}", 8192))


def _allocated(fd: int) -> int:
    return os.fstat(fd).st_blocks * 512


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_fill_writes_data_over_a_created_backing(tmp_path, kind):
    spec = "memory:3M" if kind == "memory" else f"file:{tmp_path / 'new.img'}"
    size = None if kind == "memory" else 3 << 20
    with Export(parse_backing(spec, size), ExportOptions(fill=True)) as e:
        assert _allocated(e.fd) >= 3 << 20
        blocks = [e.read(off, 4096) for off in range(0, 3 << 20, 4096)]
        assert all(block.count(0) < 64 for block in blocks)  # pseudo-random, no zero pages
        assert e.describe()["fill"] == "data"
    with Export(parse_backing("memory:3M"), ExportOptions(fill=True)) as again:
        assert again.read(12345, 100) == blocks[3][12345 - 3 * 4096 : 12345 - 3 * 4096 + 100]


def test_without_fill_a_created_backing_stays_sparse(tmp_path):
    with Export(parse_backing("memory:3M")) as e:
        assert _allocated(e.fd) == 0
        assert e.read(0, 4096) == bytes(4096)
        assert e.describe()["fill"] == "none"


def test_fill_never_writes_an_existing_image(tmp_path):
    image = tmp_path / "mine.img"
    image.write_bytes(b"\x07" * 8192)
    with Export(parse_backing(f"file:{image}"), ExportOptions(fill=True)) as e:
        assert e.read(0, 8192) == b"\x07" * 8192


def test_filled_memory_image_reads_through_its_mapping_until_a_hole_is_punched():
    size = 3 << 20
    with Export(parse_backing(f"memory:{size}"), ExportOptions(fill=True)) as e:
        assert e.describe()["read_path"] == "mmap"
        for offset, length in [(0, 4096), (123, 5000), (1 << 20, 1 << 20), (size - 700, 4096),
                               (size - (512 << 10), 1 << 20), (size, 10)]:
            expected = os.pread(e.fd, length, offset)
            assert e.read(offset, length) == expected
            out = bytearray(length)
            assert e.read_into(offset, memoryview(out)) == len(expected)
            assert bytes(out[: len(expected)]) == expected
        e.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20)
        assert e.describe()["read_path"] == "pread"
        assert e.read(1 << 20, 4096) == bytes(4096)
        assert e.lseek(1 << 20, os.SEEK_DATA) == 2 << 20  # reading did not fill the hole


@pytest.mark.parametrize("options", [ExportOptions(), ExportOptions(fill=True, growable=True)])
def test_sparse_or_growable_images_read_with_pread(options):
    with Export(parse_backing("memory:1M"), options) as e:
        assert e.describe()["read_path"] == "pread"


@pytest.mark.parametrize(
    "spec",
    [
        ExportSpec(),
        ExportSpec(backing="file:/tmp/x.img", size="1G", fill="data", read_only=True,
                   growable=True, cache="direct", attr_timeout=0.0),
    ],
)
def test_export_spec_round_trips_through_its_argv(spec: ExportSpec) -> None:
    parser = argparse.ArgumentParser()
    ExportSpec.add_arguments(parser)
    assert ExportSpec.from_args(parser.parse_args(spec.argv())) == spec
    described = spec.describe()
    assert described["fill"] == spec.fill and described["cache"] == spec.cache
    assert spec.options().fill == (spec.fill == "data")


def test_export_spec_names_a_bad_option() -> None:
    with pytest.raises(ValueError, match="attr-timeout -1.0: must be >= 0"):
        ExportSpec(attr_timeout=-1.0)
    with pytest.raises(ValueError, match="cache must be"):
        ExportSpec().replace(cache="none")
