"""FUSE request decoding and reply encoding for transports that talk to the kernel directly.

A transport hands the codec one request, already split into the fuse_in_header, the
op's own header and the payload (where those sit differs between /dev/fuse and an
io_uring entry), plus the buffer the reply data goes to. The codec calls the export's
typed method and packs the reply data in place; the transport then writes the
fuse_out_header (`pack_out_header`) and sends header plus data.

One Codec per worker thread: the counters are plain ints and need no lock. The hot
path (READ, WRITE) builds no bytes objects: structs are precompiled, READ reads straight
into the reply buffer and WRITE hands a memoryview of the request to the export.
"""

from __future__ import annotations

import errno
import os
import struct
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from transports.export.image import Attr, Export, FdPages
from transports.fuse import abi

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_NS = 1_000_000_000
_U64 = (1 << 64) - 1
_S64_LIMIT = 1 << 63
_HEADER = abi.IN_HEADER.size
_UNPACK_OPCODE_UNIQUE = abi.IN_HEADER_OPCODE_UNIQUE.unpack_from
_U32 = struct.Struct("<I")
_LIMIT = abi.OPCODE_LIMIT
_UNPACK_OFFSET_SIZE = abi.READ_IN_HEAD.unpack_from  # same place in fuse_read_in and write_in
_PACK_WRITE_OUT = abi.WRITE_OUT.pack_into
_WRITE_OUT_SIZE = abi.WRITE_OUT.size
_INIT_VERSION_ONLY = struct.Struct("<II")

# What we ask for when the kernel offers it. No writeback cache or splice: every byte
# goes through the codec so transports are compared on the same work.
_WANTED_FLAGS = (
    abi.FUSE_ASYNC_READ
    | abi.FUSE_BIG_WRITES
    | abi.FUSE_ASYNC_DIO
    | abi.FUSE_PARALLEL_DIROPS
    | abi.FUSE_MAX_PAGES
    | abi.FUSE_INIT_EXT
    | abi.FUSE_DIRECT_IO_ALLOW_MMAP
)


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The outcome of FUSE_INIT, as replied to the kernel."""

    minor: int
    kernel_minor: int
    flags: int  # 64-bit: flags | flags2 << 32, as replied
    kernel_flags: int  # what the kernel offered, same encoding
    max_write: int
    max_pages: int
    max_readahead: int
    uring: bool  # FUSE_OVER_IO_URING agreed (asked for and offered)
    uring_offered: bool
    # 7.46: the kernel takes buffer pools, registered pools and zero-copy queues
    uring_bufpool_offered: bool = False

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flags"] = hex(self.flags)
        d["kernel_flags"] = hex(self.kernel_flags)
        return d


def pack_out_header(view: memoryview | bytearray, unique: int, error: int, data_len: int) -> None:
    """Write fuse_out_header at view[0:16]: len covers the header plus data_len bytes."""
    abi.OUT_HEADER.pack_into(view, 0, abi.OUT_HEADER.size + data_len, error, unique)


def merge_counters(counters: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum several Codec.counters() results (one per worker) into one."""
    total: dict[str, Any] = {"requests": 0, "errors": 0, "exceptions": 0, "ops": {}}
    for c in counters:
        for key in ("requests", "errors", "exceptions"):
            total[key] += c.get(key, 0)
        ops = total["ops"]
        for name, n in c.get("ops", {}).items():
            ops[name] = ops.get(name, 0) + n
    return total


def _errno_of(e: OSError) -> int:
    err = e.errno
    # The kernel rejects replies with error <= -512 (ERESTARTSYS and up) or > 0.
    if not err or not 0 < err < 512:
        return -errno.EIO
    return -err


class Codec:
    """Decodes requests, calls the export, encodes replies. Not thread-safe by design."""

    pack_out_header = staticmethod(pack_out_header)

    def __init__(
        self,
        export: Export,
        *,
        want_uring: bool = False,
        max_write: int = 1 << 20,
        uring_zero_copy: bool = False,
    ):
        if max_write < 4096:
            raise ValueError("max_write must be at least 4096")
        self.export = export
        self.want_uring = want_uring
        self.max_write = max_write
        self.max_pages = max(1, max_write // PAGE_SIZE)
        self.negotiated: Negotiated | None = None
        self.last_unique = 0
        self.last_opcode = 0
        self.errors = 0
        self.exceptions = 0  # unexpected exceptions turned into EIO
        self.last_exception: str | None = None
        self._op_counts = [0] * abi.OPCODE_LIMIT
        timeout = max(0.0, float(export.options.attr_timeout))
        self._attr_valid = int(timeout)
        self._attr_valid_nsec = int(round((timeout - int(timeout)) * _NS)) % _NS
        self._op_in_size = list(abi.OP_IN_SIZE)
        # split() reuses views of the last buffer it saw, so the common request costs
        # no memoryview allocation (transports read every request into the same buffer).
        self._split_buf: memoryview | None = None
        self._split_header = memoryview(b"")
        self._split_ops: list[memoryview | None] = []
        self._split_empty = memoryview(b"")
        self._attr_out_size = abi.ATTR_OUT.size
        self._statfs_size = abi.STATFS_OUT.size
        self._direct_open_flags = abi.FOPEN_DIRECT_IO | abi.FOPEN_PARALLEL_DIRECT_WRITES
        # Every open asks for zero-copy READ/WRITE when the ring's queues offer it.
        self._zero_copy_flag = abi.FOPEN_IO_URING_ZERO_COPY if uring_zero_copy else 0
        # Bound methods looked up once: the hot path does one list index per request.
        self._read_into = export.read_into
        self._write = export.write
        self._read_to = export.read_to
        self._write_from = export.write_from
        enosys = self._enosys
        table = [enosys] * abi.OPCODE_LIMIT
        for opcode, handler in (
            (abi.INIT, self._init),
            (abi.LOOKUP, self._lookup),
            (abi.GETATTR, self._getattr),
            (abi.SETATTR, self._setattr),
            (abi.OPEN, self._open),
            (abi.READ, self._read),
            (abi.WRITE, self._write_op),
            (abi.FLUSH, self._flush),
            (abi.RELEASE, self._release),
            (abi.FSYNC, self._fsync),
            (abi.FALLOCATE, self._fallocate),
            (abi.LSEEK, self._lseek),
            (abi.STATFS, self._statfs),
            (abi.INTERRUPT, self._no_reply),
            (abi.FORGET, self._no_reply),
            (abi.BATCH_FORGET, self._no_reply),
            (abi.DESTROY, self._destroy),
        ):
            table[opcode] = handler
        self._dispatch = table

    # -- framing --------------------------------------------------------------------------
    def split(self, buf: memoryview, n: int) -> tuple[memoryview, memoryview, memoryview]:
        """Split one /dev/fuse request of n bytes into (in_header, op_in, payload).

        Never raises on short or odd input: the pieces come out short and handle()
        answers with an error.
        """
        if buf is not self._split_buf:
            self._split_buf = buf
            self._split_header = buf[:_HEADER]
            self._split_ops = [None] * abi.OPCODE_LIMIT
            self._split_empty = buf[:0]
        if n < _HEADER or n > len(buf):
            n = max(0, min(n, len(buf)))
            return buf[:n], buf[n:n], buf[n:n]
        opcode = _U32.unpack_from(buf, 4)[0]
        size = self._op_in_size[opcode] if opcode < _LIMIT else 0
        if size == 0:
            return self._split_header, buf[_HEADER:n], self._split_empty
        end = _HEADER + size
        if end > n:  # short: handle() answers EINVAL
            return self._split_header, buf[_HEADER:n], self._split_empty
        op_in = self._split_ops[opcode]
        if op_in is None:
            op_in = self._split_ops[opcode] = buf[_HEADER:end]
        if end == n:  # the common case: an op header and no payload
            return self._split_header, op_in, self._split_empty
        return self._split_header, op_in, buf[end:n]

    def handle(
        self, in_header: memoryview, op_in: memoryview, payload: memoryview, out: memoryview
    ) -> int | None:
        """Serve one request; reply data goes to out.

        Returns the reply data length, a negative errno for an error reply, or None
        when the request takes no reply. self.last_unique is the request's unique.
        """
        if len(in_header) < _HEADER:
            self.last_unique = 0
            self.last_opcode = 0
            self._op_counts[0] += 1
            self.errors += 1
            return -errno.EIO
        opcode, unique = _UNPACK_OPCODE_UNIQUE(in_header)
        self.last_unique = unique
        if opcode >= _LIMIT:
            opcode = 0
        self.last_opcode = opcode
        self._op_counts[opcode] += 1
        try:
            result = self._dispatch[opcode](op_in, payload, out)
        except Exception as e:  # never let one request take the worker down
            result = self._error_reply(e, opcode)
        if result is not None and result < 0:
            self.errors += 1
        return result

    def handle_lent(
        self, in_header: memoryview, op_in: memoryview, pages: FdPages, out: memoryview
    ) -> int:
        """Serve a READ or WRITE whose data pages the kernel lent (zero-copy): the export
        moves the data between its backing and `pages`; `out` takes the rest of the reply.

        Returns as handle() does; any other opcode is answered EIO (the kernel lends
        pages for READ and WRITE only).
        """
        opcode, unique = _UNPACK_OPCODE_UNIQUE(in_header)
        self.last_unique = unique
        self.last_opcode = opcode if opcode < _LIMIT else 0
        self._op_counts[self.last_opcode] += 1
        try:
            offset, size = _UNPACK_OFFSET_SIZE(op_in)
            if opcode == abi.READ:
                result = self._read_to(offset, size, pages)
            elif opcode == abi.WRITE:
                _PACK_WRITE_OUT(out, 0, self._write_from(offset, size, pages))
                result = _WRITE_OUT_SIZE
            else:
                result = -errno.EIO
        except Exception as e:  # never let one request take the worker down
            result = self._error_reply(e, opcode, " (lent)")
        if result < 0:
            self.errors += 1
        return result

    def _error_reply(self, e: Exception, opcode: int, how: str = "") -> int:
        """The error a request that raised `e` is answered with."""
        if isinstance(e, OSError):
            return _errno_of(e)
        if isinstance(e, (struct.error, OverflowError, ValueError)):
            return -errno.EINVAL  # a request too short for its op header, or a field out of range
        self.exceptions += 1
        self.last_exception = f"{abi.OPCODE_NAMES.get(opcode, opcode)}{how}: {e!r}"
        return -errno.EIO

    def adopt(self, negotiated: Negotiated) -> None:
        """Use the INIT outcome another codec negotiated (one INIT per connection)."""
        self.negotiated = negotiated
        self._split_buf = None  # op header sizes may change below
        minor = negotiated.minor
        self._op_in_size[abi.WRITE] = abi.WRITE_IN_COMPAT_SIZE if minor < 9 else abi.WRITE_IN.size
        self._attr_out_size = abi.ATTR_OUT_COMPAT_SIZE if minor < 9 else abi.ATTR_OUT.size
        self._statfs_size = abi.STATFS_OUT_COMPAT_SIZE if minor < 4 else abi.STATFS_OUT.size
        self._direct_open_flags = abi.FOPEN_DIRECT_IO | (
            abi.FOPEN_PARALLEL_DIRECT_WRITES if minor >= 38 else 0
        )

    @property
    def requests(self) -> int:
        """Requests handled so far (every request is counted under its opcode)."""
        return sum(self._op_counts)

    def counters(self) -> dict[str, Any]:
        ops = {abi.OPCODE_NAMES.get(op, "UNKNOWN"): n for op, n in enumerate(self._op_counts) if n}
        return {
            "requests": sum(self._op_counts),
            "errors": self.errors,
            "exceptions": self.exceptions,
            "ops": ops,
        }

    # -- ops ------------------------------------------------------------------------------
    def _init(self, op_in: memoryview, payload: memoryview, out: memoryview) -> int:
        major, minor, max_readahead, flags = abi.INIT_IN_COMPAT.unpack_from(op_in)
        if major < abi.KERNEL_VERSION:
            return -errno.EPROTO
        if major > abi.KERNEL_VERSION:
            # Protocol: answer with our version only; the kernel sends a new INIT.
            _INIT_VERSION_ONLY.pack_into(out, 0, abi.KERNEL_VERSION, abi.KERNEL_MINOR_VERSION)
            return _INIT_VERSION_ONLY.size
        flags2 = 0
        if flags & abi.FUSE_INIT_EXT and len(op_in) >= 20:
            flags2 = _U32.unpack_from(op_in, 16)[0]
        offered = flags | flags2 << 32
        wanted = _WANTED_FLAGS | (abi.FUSE_OVER_IO_URING if self.want_uring else 0)
        chosen = offered & wanted
        neg_minor = min(minor, abi.KERNEL_MINOR_VERSION)
        reply_flags2 = chosen >> 32 if chosen & abi.FUSE_INIT_EXT else 0
        abi.INIT_OUT.pack_into(
            out,
            0,
            abi.KERNEL_VERSION,
            neg_minor,
            max_readahead,
            chosen & 0xFFFFFFFF,
            0,  # max_background: kernel default
            0,  # congestion_threshold: kernel default
            self.max_write,
            1,  # time_gran: nanoseconds
            self.max_pages,
            0,  # map_alignment
            reply_flags2,
            0,  # max_stack_depth (passthrough only)
        )
        replied = (chosen & 0xFFFFFFFF) | reply_flags2 << 32
        self.adopt(
            Negotiated(
                minor=neg_minor,
                kernel_minor=minor,
                flags=replied,
                kernel_flags=offered,
                max_write=self.max_write,
                max_pages=self.max_pages,
                max_readahead=max_readahead,
                uring=bool(replied & abi.FUSE_OVER_IO_URING),
                uring_offered=bool(offered & abi.FUSE_OVER_IO_URING),
                uring_bufpool_offered=bool(offered & abi.FUSE_HAS_IO_URING_BUFPOOL),
            )
        )
        if neg_minor < 5:
            return abi.INIT_OUT_COMPAT_SIZE
        if neg_minor < 23:
            return abi.INIT_OUT_COMPAT_22_SIZE
        return abi.INIT_OUT.size

    def _pack_attr(self, out: memoryview, a: Attr) -> int:
        asec, ansec = divmod(a.atime_ns, _NS)
        msec, mnsec = divmod(a.mtime_ns, _NS)
        csec, cnsec = divmod(a.ctime_ns, _NS)
        abi.ATTR_OUT.pack_into(
            out,
            0,
            self._attr_valid,
            self._attr_valid_nsec,
            a.ino,
            a.size,
            a.blocks,
            asec & _U64,  # the kernel reads these as s64 seconds
            msec & _U64,
            csec & _U64,
            ansec,
            mnsec,
            cnsec,
            a.mode,
            a.nlink,
            a.uid,
            a.gid,
            0,  # rdev
            a.blksize,
            0,  # flags
        )
        return self._attr_out_size

    def _getattr(self, op_in: memoryview, payload: memoryview, out: memoryview) -> int:
        return self._pack_attr(out, self.export.getattr())

    def _setattr(self, op_in: memoryview, payload: memoryview, out: memoryview) -> int:
        (
            valid, _fh, size, _owner, atime, mtime, _ctime,
            atimensec, mtimensec, _ctimensec, mode, uid, gid,
        ) = abi.SETATTR_IN.unpack_from(op_in)  # fmt: skip
        changes: dict[str, int] = {}
        if valid & abi.FATTR_SIZE:
            changes["size"] = size
        if valid & abi.FATTR_MODE:
            changes["mode"] = mode
        if valid & abi.FATTR_UID:
            changes["uid"] = uid
        if valid & abi.FATTR_GID:
            changes["gid"] = gid
        if valid & abi.FATTR_ATIME:
            changes["atime_ns"] = (
                time.time_ns() if valid & abi.FATTR_ATIME_NOW else _timespec_ns(atime, atimensec)
            )
        if valid & abi.FATTR_MTIME:
            changes["mtime_ns"] = (
                time.time_ns() if valid & abi.FATTR_MTIME_NOW else _timespec_ns(mtime, mtimensec)
            )
        return self._pack_attr(out, self.export.setattr(**changes))

    def _open(self, op_in: memoryview, payload: memoryview, out: memoryview) -> int:
        flags = _U32.unpack_from(op_in)[0]
        reply = self.export.open(flags)
        open_flags = (self._direct_open_flags if reply.direct_io else 0) | self._zero_copy_flag
        if reply.keep_cache:
            open_flags |= abi.FOPEN_KEEP_CACHE
        abi.OPEN_OUT.pack_into(out, 0, 0, open_flags, 0)
        return abi.OPEN_OUT.size

    def _read(self, op_in: memoryview, payload: memoryview, out: memoryview) -> int:
        offset, size = _UNPACK_OFFSET_SIZE(op_in)
        if size > len(out):
            size = len(out)  # cannot happen with max_read <= the transport's buffer
        return self._read_into(offset, out[:size])

    def _write_op(self, op_in: memoryview, payload: memoryview, out: memoryview) -> int:
        offset, size = _UNPACK_OFFSET_SIZE(op_in)
        if size > len(payload):
            return -errno.EINVAL
        _PACK_WRITE_OUT(out, 0, self._write(offset, payload[:size]))
        return _WRITE_OUT_SIZE

    def _flush(self, op_in: memoryview, payload: memoryview, out: memoryview) -> int:
        self.export.flush()
        return 0

    def _release(self, op_in: memoryview, payload: memoryview, out: memoryview) -> int:
        self.export.release()
        return 0

    def _fsync(self, op_in: memoryview, payload: memoryview, out: memoryview) -> int:
        _fh, fsync_flags = abi.FSYNC_IN.unpack_from(op_in)
        self.export.fsync(bool(fsync_flags & abi.FUSE_FSYNC_FDATASYNC))
        return 0

    def _fallocate(self, op_in: memoryview, payload: memoryview, out: memoryview) -> int:
        _fh, offset, length, mode = abi.FALLOCATE_IN.unpack_from(op_in)
        if offset >= _S64_LIMIT or length >= _S64_LIMIT:  # loff_t is signed
            return -errno.EINVAL
        self.export.fallocate(mode, offset, length)
        return 0

    def _lseek(self, op_in: memoryview, payload: memoryview, out: memoryview) -> int:
        _fh, offset, whence = abi.LSEEK_IN.unpack_from(op_in)
        abi.LSEEK_OUT.pack_into(out, 0, self.export.lseek(offset, whence))
        return abi.LSEEK_OUT.size

    def _statfs(self, op_in: memoryview, payload: memoryview, out: memoryview) -> int:
        s = self.export.statfs()
        abi.STATFS_OUT.pack_into(
            out, 0, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize
        )
        return self._statfs_size

    def _lookup(self, op_in: memoryview, payload: memoryview, out: memoryview) -> int:
        return -errno.ENOENT  # the root is a regular file: it has no names under it

    def _destroy(self, op_in: memoryview, payload: memoryview, out: memoryview) -> int:
        return 0

    def _no_reply(self, op_in: memoryview, payload: memoryview, out: memoryview) -> None:
        # FORGET/BATCH_FORGET: one inode, nothing to forget. INTERRUPT: requests are
        # served synchronously, so the interrupted one is answered anyway.
        return None

    def _enosys(self, op_in: memoryview, payload: memoryview, out: memoryview) -> int:
        return -errno.ENOSYS


def _timespec_ns(sec: int, nsec: int) -> int:
    if sec >= _S64_LIMIT:  # the kernel sends s64 seconds in a u64 field
        sec -= 1 << 64
    return sec * _NS + nsec
