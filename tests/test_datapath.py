"""datapath=native: READ and WRITE answered by the compiled helper, the rest by Python.

Checked for devfuse and uring, on both read paths of the export (a filled memory image
read through its mapping; an image file read with pread): the bytes that come back are
the backing's, the helper counts what it served, and what it must not serve (a write
that grows the image) goes to the export's Python methods, after which the helper sees
the new size. The semantics, integrity, fault and user suites run the native specs as
well (conftest.SERVED_TRANSPORTS); test_uring_pools runs them on 7.46's pools.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_uring import Server
from test_uring import serving as uring_serving

from conftest import fuse_usable, require
from transports.export.backing import parse_backing
from transports.export.image import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, Export, ExportOptions

NATIVE_SPECS = ["devfuse:datapath=native", "uring:datapath=native"]
SIZE = 8 << 20
CHUNK = 64 << 10


@contextmanager
def serving(path: Path, spec: str, export: Export) -> Iterator[Server]:
    require(fuse_usable())
    with uring_serving(path, spec, export=export) as server:
        yield server


def _pattern(seed: int) -> mmap.mmap:
    buf = mmap.mmap(-1, CHUNK)  # page aligned, as O_DIRECT wants
    buf.write(bytes((i * seed + 11) & 0xFF for i in range(CHUNK)))
    return buf


def _native(stats: dict) -> dict:
    assert stats["settings"]["datapath"] == "native"
    return stats["native"]


@pytest.mark.mount
@pytest.mark.parametrize("spec", NATIVE_SPECS)
@pytest.mark.parametrize("backing", ["mapped-memory", "file"])
def test_native_reads_and_writes_are_the_backings_bytes(tmp_path, spec, backing):
    if backing == "file":
        export = Export(parse_backing(f"file:{tmp_path / 'image.raw'}", SIZE),
                        ExportOptions(fill=True))
    else:
        export = Export(parse_backing(f"memory:{SIZE}"), ExportOptions(fill=True))
    read_path = export.describe()["read_path"]
    assert read_path == ("pread" if backing == "file" else "mmap")
    path = tmp_path / "disk.img"
    with serving(path, spec, export) as server:
        fd = os.open(path, os.O_RDWR | os.O_DIRECT)
        try:
            back = mmap.mmap(-1, CHUNK)
            for off in range(0, SIZE, 1 << 20):  # reads of the filled image
                assert os.preadv(fd, [back], off) == CHUNK
                assert back[:] == os.pread(export.fd, CHUNK, off), f"{read_path} read at {off}"
            for i, off in enumerate(range(CHUNK, SIZE, 1 << 20)):
                data = _pattern(i + 3)
                assert os.pwritev(fd, [data], off) == CHUNK
                assert os.pread(export.fd, CHUNK, off) == data[:], f"write at {off}"
                assert os.preadv(fd, [back], off) == CHUNK and back[:] == data[:]
        finally:
            os.close(fd)
        stats = server.stats()
    native = _native(stats)
    assert native["reads"] >= 16 and native["writes"] >= 8, native
    assert native["write_bytes"] >= 8 * CHUNK and native["errors"] == 0, native
    assert stats["ops"]["READ"] >= native["reads"] and stats["ops"]["WRITE"] >= native["writes"]


@pytest.mark.mount
@pytest.mark.parametrize("spec", NATIVE_SPECS)
def test_a_growing_write_goes_to_python_and_the_helper_sees_the_new_size(tmp_path, spec):
    export = Export(parse_backing(f"memory:{SIZE}"), ExportOptions(growable=True))
    path = tmp_path / "disk.img"
    with serving(path, spec, export) as server:
        fd = os.open(path, os.O_RDWR | os.O_DIRECT)
        try:
            data = _pattern(5)
            before = _native(server.stats())
            assert os.pwritev(fd, [data], SIZE) == CHUNK  # past the end: the image grows
            after_grow = _native(server.stats())
            assert os.fstat(export.fd).st_size == SIZE + CHUNK
            back = mmap.mmap(-1, CHUNK)
            assert os.preadv(fd, [back], SIZE) == CHUNK and back[:] == data[:]
            after_read = _native(server.stats())
        finally:
            os.close(fd)
    assert after_grow["deferred"] == before["deferred"] + 1, (before, after_grow)
    assert after_grow["writes"] == before["writes"]  # Python wrote it
    assert after_read["reads"] == after_grow["reads"] + 1  # inside the new size: native


def test_the_helpers_view_follows_the_export():
    """No mount: NativeImage tracks size changes and the end of mapped reads."""
    from transports.datapath import NativeImage
    from transports.native import ffi

    export = Export(parse_backing("memory:1M"), ExportOptions(fill=True))
    try:
        image = NativeImage(export)
        s = image.struct
        assert s.fd == export.fd and s.size == 1 << 20 and s.writable == 1
        assert int(ffi.cast("uintptr_t", s.map)) == export.mapped_address() != 0
        export.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096)
        assert export.mapped_address() == 0
        assert s.map == ffi.NULL
        image.close()
    finally:
        export.close()
    grow = Export(parse_backing("memory:1M"), ExportOptions(growable=True, read_only=False))
    try:
        image = NativeImage(grow)
        grow.setattr(size=3 << 20)
        assert image.struct.size == 3 << 20
        image.close()
        grow.setattr(size=1 << 20)
        assert image.struct.size == 3 << 20  # no longer watched
    finally:
        grow.close()
    ro = Export(parse_backing("memory:1M"), ExportOptions(read_only=True))
    try:
        assert NativeImage(ro).struct.writable == 0
    finally:
        ro.close()
