"""The export's semantics seen through a mounted file, on every transport."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import random
import shutil
import subprocess

import pytest

from conftest import served
from transports.base import transport_class
from transports.export.image import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE

pytestmark = pytest.mark.mount

MiB = 1 << 20
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, mode, ctypes.c_int64(offset), ctypes.c_int64(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def supports(spec: str, op: str) -> bool:
    cls = transport_class(spec.partition(":")[0])
    return op not in getattr(cls, "unsupported_ops", ())


@pytest.mark.parametrize("cache", ["pagecache", "direct"])
def test_round_trips_at_odd_offsets(transport_spec, mountfile, cache):
    rng = random.Random(7)
    size = 8 * MiB
    shadow = bytearray(size)
    with served(transport_spec, mountfile, f"memory:{size}", "--cache", cache):
        fd = os.open(mountfile, os.O_RDWR)
        try:
            for _ in range(60):
                length = rng.choice([1, 3, 511, 4095, 4097, 65537, 300001])
                offset = rng.randrange(0, size - length)
                data = rng.randbytes(length)
                assert os.pwrite(fd, data, offset) == length
                shadow[offset : offset + length] = data
            for _ in range(60):
                length = rng.choice([1, 7, 4096, 12289, 131071])
                offset = rng.randrange(0, size - length)
                assert os.pread(fd, length, offset) == shadow[offset : offset + length]
        finally:
            os.close(fd)
        # A fresh open, past any cache of the first one.
        with open(mountfile, "rb") as f:
            assert f.read() == shadow


def test_size_and_reads_at_the_end(transport_spec, mountfile):
    size = 1 * MiB + 1000  # not a multiple of the page size
    with served(transport_spec, mountfile, f"memory:{size}", "--cache", "direct"):
        st = os.stat(mountfile)
        assert st.st_size == size
        fd = os.open(mountfile, os.O_RDWR)
        try:
            assert len(os.pread(fd, 4096, size - 100)) == 100
            assert os.pread(fd, 4096, size) == b""
            assert os.pread(fd, 4096, size + 5 * MiB) == b""
            # A fixed-size image: a write across the end is short, one past it fails.
            assert os.pwrite(fd, b"x" * 300, size - 100) == 100
            with pytest.raises(OSError) as err:
                os.pwrite(fd, b"y" * 10, size + 10)
            assert err.value.errno in (errno.ENOSPC, errno.EFBIG)
            with pytest.raises(OSError) as err:
                os.truncate(mountfile, size * 2)
            assert err.value.errno == errno.EPERM
        finally:
            os.close(fd)
        assert os.stat(mountfile).st_size == size


def test_read_only_export_refuses_writes(transport_spec, mountfile):
    with served(transport_spec, mountfile, "memory:1M", "--read-only"):
        with pytest.raises(OSError) as err:
            os.open(mountfile, os.O_WRONLY)
        assert err.value.errno in (errno.EROFS, errno.EACCES)
        with open(mountfile, "rb") as f:
            assert f.read(10) == bytes(10)


def test_growable_export_extends_and_truncates(transport_spec, mountfile):
    with served(transport_spec, mountfile, "memory:1M", "--growable", "--cache", "direct"):
        fd = os.open(mountfile, os.O_RDWR)
        try:
            assert os.pwrite(fd, b"tail", 3 * MiB) == 4
        finally:
            os.close(fd)
        assert os.stat(mountfile).st_size == 3 * MiB + 4
        with open(mountfile, "rb") as f:
            f.seek(3 * MiB - 2)
            assert f.read() == b"\0\0tail"
        os.truncate(mountfile, 2 * MiB)
        assert os.stat(mountfile).st_size == 2 * MiB


def test_file_backing_keeps_what_was_written(transport_spec, mountfile, tmp_path):
    image = tmp_path / "image.raw"
    data = os.urandom(3 * MiB)
    with served(transport_spec, mountfile, f"file:{image}", "--size", "4M"):
        with open(mountfile, "r+b") as f:
            f.seek(4096 + 3)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fdatasync(f.fileno())
    assert image.stat().st_size == 4 * MiB
    with open(image, "rb") as f:
        f.seek(4096 + 3)
        assert f.read(len(data)) == data


def test_punch_hole_and_zero_range(transport_spec, mountfile, tmp_path):
    image = tmp_path / "image.raw"
    with served(transport_spec, mountfile, f"file:{image}", "--size", "4M", "--cache", "direct"):
        fd = os.open(mountfile, os.O_RDWR)
        try:
            os.pwrite(fd, b"\xab" * (2 * MiB), 0)
            if not supports(transport_spec, "fallocate"):
                # The transport does not bind fallocate: the kernel must say so, not pretend.
                with pytest.raises(OSError) as err:
                    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096)
                assert err.value.errno == errno.EOPNOTSUPP
                return
            fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 64 * 1024, 128 * 1024)
            assert os.pread(fd, 128 * 1024, 64 * 1024) == bytes(128 * 1024)
            assert os.pread(fd, 4, 64 * 1024 - 4) == b"\xab" * 4
            fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 1 * MiB + 1, 10)
            assert os.pread(fd, 12, 1 * MiB) == b"\xab" + bytes(10) + b"\xab"
        finally:
            os.close(fd)
        assert os.stat(mountfile).st_size == 4 * MiB


def test_seek_data_and_hole(transport_spec, mountfile, tmp_path):
    image = tmp_path / "image.raw"
    with served(transport_spec, mountfile, f"file:{image}", "--size", "8M", "--cache", "direct"):
        fd = os.open(mountfile, os.O_RDWR)
        try:
            os.pwrite(fd, b"d" * MiB, 2 * MiB)
            os.fsync(fd)
            if not supports(transport_spec, "lseek"):
                # Without an lseek handler the kernel's generic answer: all data, hole at EOF.
                assert os.lseek(fd, 0, os.SEEK_DATA) == 0
                assert os.lseek(fd, 0, os.SEEK_HOLE) == 8 * MiB
                return
            assert os.lseek(fd, 0, os.SEEK_DATA) == 2 * MiB
            assert os.lseek(fd, 2 * MiB, os.SEEK_HOLE) == 3 * MiB
            assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
            with pytest.raises(OSError) as err:
                os.lseek(fd, 4 * MiB, os.SEEK_DATA)
            assert err.value.errno == errno.ENXIO
        finally:
            os.close(fd)


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is missing: apt-get install fio")
def test_fio_verify_crc32c(transport_spec, mountfile):
    with served(transport_spec, mountfile, "memory:64M"):
        proc = subprocess.run(
            [
                "fio",
                "--name=verify",
                f"--filename={mountfile}",
                "--rw=randwrite",
                "--bs=4k",
                "--size=16M",
                "--direct=1",
                "--ioengine=psync",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--verify_state_save=0",  # no state file in the working directory
                "--output-format=json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        job = json.loads(proc.stdout[proc.stdout.index("{") :])["jobs"][0]
        assert job["error"] == 0
        # The verify pass read back every block it wrote.
        assert job["read"]["io_bytes"] == job["write"]["io_bytes"] == 16 * MiB
