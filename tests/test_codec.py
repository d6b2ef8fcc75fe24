"""The FUSE ABI definitions and the codec, fed hand-built and random requests (no mount)."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transports.export.backing import parse_backing
from transports.export.image import Export, ExportOptions
from transports.fuse import abi
from transports.fuse.codec import Codec, Negotiated, merge_counters, pack_out_header

# Sizes as stated in include/uapi/linux/fuse.h (protocol 7.42).
KERNEL_SIZES = {
    "IN_HEADER": 40,
    "OUT_HEADER": 16,
    "INIT_IN": 64,
    "INIT_OUT": 64,
    "ATTR": 88,
    "ATTR_OUT": 104,
    "GETATTR_IN": 16,
    "SETATTR_IN": 88,
    "OPEN_IN": 8,
    "OPEN_OUT": 16,
    "READ_IN": 40,
    "WRITE_IN": 40,
    "WRITE_OUT": 8,
    "FLUSH_IN": 24,
    "RELEASE_IN": 24,
    "FSYNC_IN": 16,
    "FALLOCATE_IN": 32,
    "LSEEK_IN": 24,
    "LSEEK_OUT": 8,
    "STATFS_OUT": 80,
    "INTERRUPT_IN": 8,
    "FORGET_IN": 8,
    "FORGET_ONE": 16,
    "BATCH_FORGET_IN": 8,
    "URING_ENT_IN_OUT": 32,
}


def test_abi_sizes_match_kernel_header() -> None:
    for name, size in KERNEL_SIZES.items():
        assert getattr(abi, name).size == size, name
    assert abi.INIT_IN_COMPAT.size == 16
    assert abi.URING_REQ_HEADER_SIZE == 288
    assert abi.URING_REQ_OP_IN_OFFSET == 128
    assert abi.URING_REQ_ENT_IN_OUT_OFFSET == 256
    assert abi.FUSE_OVER_IO_URING == 1 << 41 and abi.FUSE_OVER_IO_URING >> 32 == 1 << 9
    assert abi.FUSE_INIT_EXT == 1 << 30
    assert abi.FUSE_MAX_PAGES == 1 << 22
    assert abi.FOPEN_DIRECT_IO == 1 and abi.FOPEN_KEEP_CACHE == 2
    assert (abi.READ, abi.WRITE, abi.INIT, abi.BATCH_FORGET, abi.LSEEK) == (15, 16, 26, 42, 46)


def test_binding_compiled_from_the_same_abi_header() -> None:
    """abi.py parses fuse_abi.h; the native module was compiled from it: same layout."""
    from transports import native

    try:
        ffi, lib = native.load()
    except native.NativeModuleUnavailable as e:
        pytest.skip(str(e))
    assert ffi.sizeof("struct fuse_uring_req_header") == abi.URING_REQ_HEADER_SIZE
    assert ffi.offsetof("struct fuse_uring_req_header", "op_in") == abi.URING_REQ_OP_IN_OFFSET
    assert (
        ffi.offsetof("struct fuse_uring_req_header", "ring_ent_in_out")
        == abi.URING_REQ_ENT_IN_OUT_OFFSET
    )
    assert ffi.sizeof("struct fuse_uring_cmd_req") == abi.URING_CMD_REQ_SIZE == 40
    assert ffi.offsetof("struct fuse_uring_cmd_req", "bufpool") == abi.URING_CMD_REQ_BUFPOOL_OFFSET
    assert lib.FUSE_IO_URING_CMD_ADD_BUFPOOL == abi.URING_CMD_ADD_BUFPOOL == 4
    # the ring counts READ/WRITE by the header's two opcodes; abi.py has the whole table
    assert (lib.FUSE_READ, lib.FUSE_WRITE) == (abi.READ, abi.WRITE)
    assert ffi.sizeof("struct fuse_out_header") == abi.OUT_HEADER.size
    assert lib.FUSE_IO_URING_CMD_COMMIT_AND_FETCH == 2


def _offsets(st_obj: struct.Struct, count: int) -> list[int]:
    """Byte offset of each field, found by packing distinct marker values."""
    fmt = st_obj.format
    codes = [c for c in fmt.lstrip("<") if c.isalpha() and c != "x"]
    assert len(codes) == count
    out = []
    for i, code in enumerate(codes):
        values = [0] * count
        values[i] = 0x5A
        data = st_obj.pack(*values)
        assert code in "QIHiqh"
        out.append(data.index(0x5A))
    return out


def test_abi_field_offsets() -> None:
    # fuse_init_out: flags2 at 32, max_pages at 28, max_write at 20.
    assert _offsets(abi.INIT_OUT, 12) == [0, 4, 8, 12, 16, 18, 20, 24, 28, 30, 32, 36]
    # fuse_init_in: flags2 at 16.
    assert _offsets(abi.INIT_IN, 5) == [0, 4, 8, 12, 16]
    assert _offsets(abi.IN_HEADER, 9) == [0, 4, 8, 16, 24, 28, 32, 36, 38]
    assert _offsets(abi.SETATTR_IN, 13) == [0, 8, 16, 24, 32, 40, 48, 56, 60, 64, 68, 76, 80]
    assert _offsets(abi.ATTR_OUT, 18)[:3] == [0, 8, 16]  # attr starts at 16
    assert _offsets(abi.READ_IN, 6) == [0, 8, 16, 20, 24, 32]
    assert _offsets(abi.READ_IN_HEAD, 2) == [8, 16]
    assert _offsets(abi.URING_ENT_IN_OUT, 5) == [0, 8, 16, 20, 24]
    assert abi.URING_ENT_OFFSET_OFFSET == 20


_C_CHECK = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/fuse.h>
#define S(t) printf(#t " %zu\n", sizeof(struct t))
#define O(t, f) printf(#t "." #f " %zu\n", offsetof(struct t, f))
int main(void) {
    S(fuse_in_header); S(fuse_out_header); S(fuse_init_in); S(fuse_init_out);
    S(fuse_attr); S(fuse_attr_out); S(fuse_getattr_in); S(fuse_setattr_in);
    S(fuse_open_in); S(fuse_open_out); S(fuse_read_in); S(fuse_write_in);
    S(fuse_write_out); S(fuse_flush_in); S(fuse_release_in); S(fuse_fsync_in);
    S(fuse_fallocate_in); S(fuse_lseek_in); S(fuse_lseek_out); S(fuse_kstatfs);
    S(fuse_interrupt_in); S(fuse_forget_in); S(fuse_forget_one); S(fuse_batch_forget_in);
    O(fuse_init_out, max_pages); O(fuse_init_out, flags2); O(fuse_init_in, flags2);
    O(fuse_setattr_in, mode); O(fuse_setattr_in, uid); O(fuse_attr_out, attr);
    O(fuse_read_in, size); O(fuse_write_in, size); O(fuse_fallocate_in, mode);
    return 0;
}
"""

_C_EXPECTED = {
    "fuse_in_header": "IN_HEADER",
    "fuse_out_header": "OUT_HEADER",
    "fuse_init_in": "INIT_IN",
    "fuse_init_out": "INIT_OUT",
    "fuse_attr": "ATTR",
    "fuse_attr_out": "ATTR_OUT",
    "fuse_getattr_in": "GETATTR_IN",
    "fuse_setattr_in": "SETATTR_IN",
    "fuse_open_in": "OPEN_IN",
    "fuse_open_out": "OPEN_OUT",
    "fuse_read_in": "READ_IN",
    "fuse_write_in": "WRITE_IN",
    "fuse_write_out": "WRITE_OUT",
    "fuse_flush_in": "FLUSH_IN",
    "fuse_release_in": "RELEASE_IN",
    "fuse_fsync_in": "FSYNC_IN",
    "fuse_fallocate_in": "FALLOCATE_IN",
    "fuse_lseek_in": "LSEEK_IN",
    "fuse_lseek_out": "LSEEK_OUT",
    "fuse_kstatfs": "STATFS_OUT",
    "fuse_interrupt_in": "INTERRUPT_IN",
    "fuse_forget_in": "FORGET_IN",
    "fuse_forget_one": "FORGET_ONE",
    "fuse_batch_forget_in": "BATCH_FORGET_IN",
}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_abi_matches_installed_header(tmp_path) -> None:
    """Cross-check against the system's (older, 7.38) header for the structs it has."""
    if not os.path.exists("/usr/include/linux/fuse.h"):
        pytest.skip("no /usr/include/linux/fuse.h")
    src = tmp_path / "check.c"
    src.write_text(_C_CHECK)
    exe = tmp_path / "check"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True, capture_output=True)
    got = dict(
        line.rsplit(" ", 1) for line in subprocess.check_output([str(exe)], text=True).splitlines()
    )
    for cname, pyname in _C_EXPECTED.items():
        assert int(got[cname]) == getattr(abi, pyname).size, cname
    assert int(got["fuse_init_out.max_pages"]) == 28
    assert int(got["fuse_init_out.flags2"]) == 32
    assert int(got["fuse_init_in.flags2"]) == 16
    assert int(got["fuse_setattr_in.mode"]) == 68
    assert int(got["fuse_setattr_in.uid"]) == 76
    assert int(got["fuse_attr_out.attr"]) == 16
    assert int(got["fuse_read_in.size"]) == 16
    assert int(got["fuse_write_in.size"]) == 16
    assert int(got["fuse_fallocate_in.mode"]) == 24


# -- helpers ------------------------------------------------------------------------------
SIZE = 1 << 20


@pytest.fixture
def export():
    exp = Export(parse_backing(f"memory:{SIZE}"), ExportOptions(attr_timeout=1.5))
    yield exp
    exp.close()


def request(opcode: int, op: bytes = b"", payload: bytes = b"", unique: int = 77) -> bytearray:
    total = abi.IN_HEADER.size + len(op) + len(payload)
    buf = bytearray(abi.IN_HEADER.pack(total, opcode, unique, 1, 0, 0, 123, 0, 0))
    return buf + op + payload


class Harness:
    """Feeds /dev/fuse-layout requests through split() + handle(), as devfuse does."""

    def __init__(self, codec: Codec):
        self.codec = codec
        self.inbuf = memoryview(bytearray(SIZE + 8192))
        self.outbuf = memoryview(bytearray(SIZE + 8192))

    def __call__(self, req: bytes | bytearray) -> tuple[int | None, memoryview]:
        n = len(req)
        self.inbuf[:n] = req
        hdr, op_in, payload = self.codec.split(self.inbuf, n)
        out = self.outbuf[abi.OUT_HEADER.size :]
        return self.codec.handle(hdr, op_in, payload, out), out


def init_request(
    minor: int = 45, flags: int = 0, flags2: int = 0, readahead: int = 131072
) -> bytes:
    return request(abi.INIT, abi.INIT_IN.pack(7, minor, readahead, flags, flags2))


# -- INIT -----------------------------------------------------------------------------------
ALL_FLAGS = (1 << 32) - 1 & ~abi.FUSE_INIT_EXT  # everything but the extension bit


def test_init_negotiates_uring_when_offered(export) -> None:
    codec = Codec(export, want_uring=True, max_write=1 << 20)
    h = Harness(codec)
    flags = ALL_FLAGS | abi.FUSE_INIT_EXT
    result, out = h(init_request(minor=45, flags=flags, flags2=0xFFFFFFFF))
    assert result == 64
    major, minor, ra, rflags, _bg, _ct, max_write, gran, max_pages, _al, rflags2, _sd = (
        abi.INIT_OUT.unpack_from(out)
    )
    assert (major, minor, ra, max_write, gran) == (7, 42, 131072, 1 << 20, 1)
    assert max_pages == (1 << 20) // os.sysconf("SC_PAGE_SIZE")
    for bit in (abi.FUSE_INIT_EXT, abi.FUSE_MAX_PAGES, abi.FUSE_BIG_WRITES, abi.FUSE_ASYNC_READ):
        assert rflags & bit
    assert not rflags & abi.FUSE_WRITEBACK_CACHE
    assert rflags2 & (abi.FUSE_OVER_IO_URING >> 32)
    neg = codec.negotiated
    assert isinstance(neg, Negotiated)
    assert neg.uring and neg.uring_offered and neg.minor == 42 and neg.kernel_minor == 45
    assert neg.max_write == 1 << 20 and neg.max_readahead == 131072
    assert codec.last_unique == 77 and codec.last_opcode == abi.INIT


def test_init_without_uring_offer_still_replies(export) -> None:
    codec = Codec(export, want_uring=True)
    result, out = Harness(codec)(init_request(flags=ALL_FLAGS | abi.FUSE_INIT_EXT, flags2=0))
    assert result == 64
    assert abi.INIT_OUT.unpack_from(out)[10] & (abi.FUSE_OVER_IO_URING >> 32) == 0
    assert codec.negotiated is not None
    assert not codec.negotiated.uring and not codec.negotiated.uring_offered


def test_init_uring_not_asked(export) -> None:
    codec = Codec(export, want_uring=False)
    result, out = Harness(codec)(
        init_request(flags=ALL_FLAGS | abi.FUSE_INIT_EXT, flags2=~0 & 0xFFFFFFFF)
    )
    assert result == 64
    assert abi.INIT_OUT.unpack_from(out)[10] & (abi.FUSE_OVER_IO_URING >> 32) == 0
    assert codec.negotiated is not None and not codec.negotiated.uring
    assert codec.negotiated.uring_offered


def test_init_flags2_ignored_without_init_ext(export) -> None:
    codec = Codec(export, want_uring=True)
    result, out = Harness(codec)(init_request(flags=ALL_FLAGS, flags2=0xFFFFFFFF))
    assert result == 64
    rflags, rflags2 = abi.INIT_OUT.unpack_from(out)[3], abi.INIT_OUT.unpack_from(out)[10]
    assert not rflags & abi.FUSE_INIT_EXT and rflags2 == 0
    assert codec.negotiated is not None and not codec.negotiated.uring


def test_init_old_kernels(export) -> None:
    codec = Codec(export)
    result, out = Harness(codec)(request(abi.INIT, abi.INIT_IN_COMPAT.pack(7, 22, 4096, 0)))
    assert result == abi.INIT_OUT_COMPAT_22_SIZE
    assert abi.INIT_OUT.unpack_from(out)[:2] == (7, 22)
    assert Harness(Codec(export))(request(abi.INIT, abi.INIT_IN_COMPAT.pack(6, 1, 0, 0)))[0] == (
        -errno.EPROTO
    )
    result, out = Harness(Codec(export))(request(abi.INIT, abi.INIT_IN_COMPAT.pack(8, 0, 0, 0)))
    assert result == 8 and struct.unpack_from("<II", out) == (7, 42)


# -- exact round trips --------------------------------------------------------------------
def test_getattr_round_trip(export) -> None:
    h = Harness(Codec(export))
    result, out = h(request(abi.GETATTR, abi.GETATTR_IN.pack(0, 0), unique=9))
    assert result == abi.ATTR_OUT.size
    fields = abi.ATTR_OUT.unpack_from(out)
    attr = export.getattr()
    valid, valid_nsec, ino, size, blocks, atime, mtime, ctime = fields[:8]
    anano, mnano, cnano, mode, nlink, uid, gid, rdev, blksize, aflags = fields[8:]
    assert (valid, valid_nsec) == (1, 500_000_000)
    assert (ino, size, mode, nlink, uid, gid, blksize) == (
        1, SIZE, attr.mode, 1, attr.uid, attr.gid, attr.blksize,
    )  # fmt: skip
    assert blocks == attr.blocks and rdev == 0 and aflags == 0
    assert atime * 10**9 + anano == attr.atime_ns
    assert mtime * 10**9 + mnano == attr.mtime_ns
    assert ctime * 10**9 + cnano == attr.ctime_ns
    assert h.codec.last_unique == 9


def test_read_round_trip_odd_offset(export) -> None:
    data = os.urandom(10_000)
    export.write(12_345, data)
    h = Harness(Codec(export))
    result, out = h(request(abi.READ, abi.READ_IN.pack(0, 12_346, 7_777, 0, 0, 0)))
    assert result == 7_777
    assert bytes(out[:result]) == data[1:7_778]
    # Short at the end of the image, empty past it.
    result, out = h(request(abi.READ, abi.READ_IN.pack(0, SIZE - 100, 4096, 0, 0, 0)))
    assert result == 100
    assert h(request(abi.READ, abi.READ_IN.pack(0, SIZE + 5, 4096, 0, 0, 0)))[0] == 0


def test_write_round_trip_odd_offset(export) -> None:
    data = os.urandom(5_001)
    h = Harness(Codec(export))
    result, out = h(request(abi.WRITE, abi.WRITE_IN.pack(0, 777, len(data), 0, 0, 0), data))
    assert result == abi.WRITE_OUT.size
    assert abi.WRITE_OUT.unpack_from(out) == (len(data),)
    assert export.read(777, len(data)) == data
    # Payload shorter than the size the header claims.
    result, _ = h(request(abi.WRITE, abi.WRITE_IN.pack(0, 0, 100, 0, 0, 0), b"x" * 10))
    assert result == -errno.EINVAL
    # A fixed-size export refuses to grow.
    result, _ = h(request(abi.WRITE, abi.WRITE_IN.pack(0, SIZE, 4, 0, 0, 0), b"abcd"))
    assert result == -errno.ENOSPC


def test_uring_layout_round_trip(export) -> None:
    """The ring entry layout: 128-byte op area, payload in its own buffer, reply in place."""
    codec = Codec(export)
    header = bytearray(abi.URING_REQ_HEADER_SIZE)
    payload = bytearray(1 << 16)
    data = os.urandom(4096)
    abi.IN_HEADER.pack_into(header, 0, 80 + 4096, abi.WRITE, 5, 1, 0, 0, 0, 0, 0)
    abi.WRITE_IN.pack_into(header, abi.URING_REQ_OP_IN_OFFSET, 0, 4097, 4096, 0, 0, 0)
    payload[:4096] = data
    hv, pv = memoryview(header), memoryview(payload)
    op_in = hv[abi.URING_REQ_OP_IN_OFFSET : abi.URING_REQ_ENT_IN_OUT_OFFSET]
    assert codec.handle(hv[:40], op_in, pv[:4096], pv) == 8
    assert abi.WRITE_OUT.unpack_from(pv) == (4096,)
    pack_out_header(hv, codec.last_unique, 0, 8)
    assert abi.OUT_HEADER.unpack_from(hv) == (24, 0, 5)
    abi.IN_HEADER.pack_into(header, 0, 80, abi.READ, 6, 1, 0, 0, 0, 0, 0)
    abi.READ_IN.pack_into(header, abi.URING_REQ_OP_IN_OFFSET, 0, 4097, 4096, 0, 0, 0)
    assert codec.handle(hv[:40], op_in, pv[:0], pv) == 4096
    assert bytes(pv[:4096]) == data and codec.last_unique == 6
    codec.pack_out_header(hv, codec.last_unique, -errno.EIO, 0)
    assert abi.OUT_HEADER.unpack_from(hv) == (16, -errno.EIO, 6)


def test_open_flags(export) -> None:
    h = Harness(Codec(export))
    result, out = h(request(abi.OPEN, abi.OPEN_IN.pack(os.O_RDWR | os.O_DIRECT, 0)))
    assert result == 16
    _fh, open_flags, _backing = abi.OPEN_OUT.unpack_from(out)
    assert open_flags & abi.FOPEN_DIRECT_IO
    result, out = h(request(abi.OPEN, abi.OPEN_IN.pack(os.O_RDWR, 0)))
    assert abi.OPEN_OUT.unpack_from(out)[1] & abi.FOPEN_DIRECT_IO == 0


def test_setattr_and_errors() -> None:
    exp = Export(parse_backing("memory:64K"), ExportOptions(growable=True))
    try:
        h = Harness(Codec(exp))
        valid = abi.FATTR_SIZE | abi.FATTR_MTIME | abi.FATTR_MODE
        op = abi.SETATTR_IN.pack(valid, 0, 100_000, 0, 0, 1_600_000_000, 0, 0, 5, 0, 0o640, 0, 0)
        result, out = h(request(abi.SETATTR, op))
        assert result == abi.ATTR_OUT.size
        fields = abi.ATTR_OUT.unpack_from(out)
        assert fields[3] == 100_000 and exp.size == 100_000
        assert fields[6] == 1_600_000_000 and fields[11] & 0o7777 == 0o640
        # ATIME_NOW uses the server's clock.
        before = time.time_ns()
        op = abi.SETATTR_IN.pack(
            abi.FATTR_ATIME | abi.FATTR_ATIME_NOW, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        )
        assert h(request(abi.SETATTR, op))[0] == abi.ATTR_OUT.size
        assert exp.getattr().atime_ns >= before
    finally:
        exp.close()
    ro = Export(parse_backing("memory:64K"), ExportOptions(read_only=True))
    try:
        h = Harness(Codec(ro))
        result, _ = h(request(abi.WRITE, abi.WRITE_IN.pack(0, 0, 1, 0, 0, 0), b"x"))
        assert result == -errno.EROFS
        assert h(request(abi.OPEN, abi.OPEN_IN.pack(os.O_RDWR, 0)))[0] == -errno.EROFS
    finally:
        ro.close()


def test_other_ops(export) -> None:
    h = Harness(Codec(export))
    assert h(request(abi.LOOKUP, b"name\0"))[0] == -errno.ENOENT
    assert h(request(abi.MKDIR, b"\0" * 8 + b"d\0"))[0] == -errno.ENOSYS
    assert h(request(4096))[0] == -errno.ENOSYS  # CUSE_INIT
    assert h(request(abi.FORGET, abi.FORGET_IN.pack(1)))[0] is None
    batch = abi.BATCH_FORGET_IN.pack(2) + abi.FORGET_ONE.pack(1, 1) * 2
    assert h(request(abi.BATCH_FORGET, batch))[0] is None
    assert h(request(abi.INTERRUPT, abi.INTERRUPT_IN.pack(5)))[0] is None
    assert h(request(abi.FLUSH, abi.FLUSH_IN.pack(0, 0, 0)))[0] == 0
    assert h(request(abi.RELEASE, abi.RELEASE_IN.pack(0, 0, 0, 0)))[0] == 0
    assert h(request(abi.FSYNC, abi.FSYNC_IN.pack(0, 1)))[0] == 0
    assert h(request(abi.DESTROY))[0] == 0
    result, out = h(request(abi.STATFS))
    assert result == 80 and abi.STATFS_OUT.unpack_from(out)[5] > 0  # bsize
    # Punch a hole, then SEEK_HOLE finds it and SEEK_DATA skips it.
    export.write(0, b"\1" * SIZE)
    op = abi.FALLOCATE_IN.pack(0, 65536, 65536, 0x01 | 0x02)
    assert h(request(abi.FALLOCATE, op))[0] == 0
    result, out = h(request(abi.LSEEK, abi.LSEEK_IN.pack(0, 0, os.SEEK_HOLE)))
    assert result == 8 and abi.LSEEK_OUT.unpack_from(out) == (65536,)
    result, out = h(request(abi.LSEEK, abi.LSEEK_IN.pack(0, 65536, os.SEEK_DATA)))
    assert result == 8 and abi.LSEEK_OUT.unpack_from(out) == (131072,)
    assert h(request(abi.LSEEK, abi.LSEEK_IN.pack(0, 0, os.SEEK_END)))[0] == -errno.EINVAL


def test_short_requests_get_errors(export) -> None:
    h = Harness(Codec(export))
    assert h(b"")[0] == -errno.EIO
    assert h(b"\0" * 39)[0] == -errno.EIO
    assert h(request(abi.READ, b"\0" * 10))[0] == -errno.EINVAL
    assert h(request(abi.INIT, b"\0" * 4))[0] == -errno.EINVAL
    assert h.codec.exceptions == 0


def test_counters(export) -> None:
    a, b = Harness(Codec(export)), Harness(Codec(export))
    a(request(abi.GETATTR, abi.GETATTR_IN.pack(0, 0)))
    a(request(abi.LOOKUP, b"x\0"))
    b(request(abi.GETATTR, abi.GETATTR_IN.pack(0, 0)))
    assert a.codec.counters() == {
        "requests": 2, "errors": 1, "exceptions": 0, "ops": {"LOOKUP": 1, "GETATTR": 1}
    }  # fmt: skip
    total = merge_counters([a.codec.counters(), b.codec.counters()])
    assert total["requests"] == 3 and total["ops"]["GETATTR"] == 2 and total["errors"] == 1


def test_adopt_shares_init_outcome(export) -> None:
    first, second = Codec(export), Codec(export)
    Harness(first)(init_request(minor=8, flags=0))
    assert first.negotiated is not None
    second.adopt(first.negotiated)
    # Protocol 7.8: the old 24-byte fuse_write_in and the 96-byte attr reply.
    h = Harness(second)
    result, _ = h(request(abi.WRITE, struct.pack("<QQII", 0, 0, 3, 0), b"abc"))
    assert result == 8 and export.read(0, 3) == b"abc"
    assert h(request(abi.GETATTR, abi.GETATTR_IN.pack(0, 0)))[0] == 96


# -- property-based: nothing raises, errors are errors ------------------------------------
KNOWN_OPCODES = sorted(abi.OPCODE_NAMES) + [0, 7, 53, 63, 64, 4096, 0xFFFFFFFF]


def _check(h: Harness, result: int | None, out: memoryview) -> None:
    assert result is None or isinstance(result, int)
    if result is not None:
        assert -512 < result <= len(out)
    assert h.codec.exceptions == 0, h.codec.last_exception


@pytest.fixture(scope="module")
def fuzz_export():
    exp = Export(parse_backing(f"memory:{SIZE}"))
    yield exp
    exp.close()


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=400))
def test_random_bytes_never_raise(fuzz_export, raw: bytes) -> None:
    h = Harness(Codec(fuzz_export))
    result, out = h(raw)
    _check(h, result, out)
    if len(raw) < abi.IN_HEADER.size:
        assert result == -errno.EIO


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    opcode=st.sampled_from(KNOWN_OPCODES),
    op=st.one_of(
        st.binary(max_size=140),
        st.builds(
            lambda vals: b"".join(struct.pack("<Q", v) for v in vals),
            st.lists(
                st.one_of(
                    st.integers(0, (1 << 64) - 1),
                    st.sampled_from([0, 1, 4096, SIZE - 1, SIZE, 1 << 63, (1 << 64) - 1]),
                ),
                max_size=12,
            ),
        ),
    ),
    payload=st.binary(max_size=300),
    want_uring=st.booleans(),
)
def test_structured_requests_never_raise(fuzz_export, opcode, op, payload, want_uring) -> None:
    h = Harness(Codec(fuzz_export, want_uring=want_uring))
    req = request(opcode & 0xFFFFFFFF, op, payload)
    result, out = h(req)
    _check(h, result, out)
    if opcode not in abi.OPCODE_NAMES or opcode in (abi.MKDIR, abi.READDIR, abi.CREATE):
        assert result == -errno.ENOSYS
    # The uring layout too: op_in is the 128-byte area, payload its own buffer.
    codec = Codec(fuzz_export, want_uring=want_uring)
    area = bytearray(128)
    area[: min(len(op), 128)] = op[:128]
    out2 = memoryview(bytearray(SIZE))
    result = codec.handle(memoryview(req)[:40], memoryview(area), memoryview(payload), out2)
    assert result is None or -512 < result <= len(out2)
    assert codec.exceptions == 0, codec.last_exception
