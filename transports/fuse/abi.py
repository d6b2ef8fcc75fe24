"""The kernel's FUSE ABI (protocol 7.42 and 7.46's ring additions), as Ringside uses it.

Every struct layout is declared once, in transports/fuse/fuse_abi.h (Debian 12 ships
protocol 7.38, which lacks the io_uring structs and flags2 users such as
FUSE_OVER_IO_URING, so the project states the layout itself, with the kernel's names and
explicit padding): the C includes that header and reads requests through the structs'
members; this module parses it with cffi in ABI mode (no compiler, no compiled module)
and builds from it, once at import, the struct.Struct objects the codec packs and
unpacks with, and the sizes, offsets and constants below. tests/test_abi_kernel.py checks
the header against the kernel's own (Debian's 7.38 on every host, a 7.46 one for the ring).

The opcodes and flag values are stated here: the header carries only those the C uses.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from cffi import FFI

KERNEL_VERSION = 7
KERNEL_MINOR_VERSION = 42  # the protocol we reply with (7.43-7.46 change nothing we use
# but the ring, whose 7.46 additions the kernel offers by INIT flag, not by minor)
ROOT_ID = 1
MIN_READ_BUFFER = 8192  # /dev/fuse reads need a buffer at least this large

# -- opcodes ------------------------------------------------------------------------------
LOOKUP = 1
FORGET = 2
GETATTR = 3
SETATTR = 4
READLINK = 5
SYMLINK = 6
MKNOD = 8
MKDIR = 9
UNLINK = 10
RMDIR = 11
RENAME = 12
LINK = 13
OPEN = 14
READ = 15
WRITE = 16
STATFS = 17
RELEASE = 18
FSYNC = 20
SETXATTR = 21
GETXATTR = 22
LISTXATTR = 23
REMOVEXATTR = 24
FLUSH = 25
INIT = 26
OPENDIR = 27
READDIR = 28
RELEASEDIR = 29
FSYNCDIR = 30
GETLK = 31
SETLK = 32
SETLKW = 33
ACCESS = 34
CREATE = 35
INTERRUPT = 36
BMAP = 37
DESTROY = 38
IOCTL = 39
POLL = 40
NOTIFY_REPLY = 41
BATCH_FORGET = 42
FALLOCATE = 43
READDIRPLUS = 44
RENAME2 = 45
LSEEK = 46
COPY_FILE_RANGE = 47
SETUPMAPPING = 48
REMOVEMAPPING = 49
SYNCFS = 50
TMPFILE = 51
STATX = 52
OPCODE_LIMIT = 64  # opcodes at or above this are unknown to us (CUSE_INIT = 4096, ...)

OPCODE_NAMES: dict[int, str] = {
    value: name
    for name, value in list(globals().items())
    if name.isupper()
    and isinstance(value, int)
    and 0 < value < OPCODE_LIMIT
    and name not in ("KERNEL_VERSION", "KERNEL_MINOR_VERSION", "ROOT_ID")
}

# -- init flags (64 bits; bits 32..63 travel in flags2 when FUSE_INIT_EXT is set) ----------
FUSE_ASYNC_READ = 1 << 0
FUSE_POSIX_LOCKS = 1 << 1
FUSE_ATOMIC_O_TRUNC = 1 << 3
FUSE_EXPORT_SUPPORT = 1 << 4
FUSE_BIG_WRITES = 1 << 5
FUSE_DONT_MASK = 1 << 6
FUSE_SPLICE_WRITE = 1 << 7
FUSE_SPLICE_MOVE = 1 << 8
FUSE_SPLICE_READ = 1 << 9
FUSE_FLOCK_LOCKS = 1 << 10
FUSE_AUTO_INVAL_DATA = 1 << 12
FUSE_ASYNC_DIO = 1 << 15
FUSE_WRITEBACK_CACHE = 1 << 16
FUSE_NO_OPEN_SUPPORT = 1 << 17
FUSE_PARALLEL_DIROPS = 1 << 18
FUSE_HANDLE_KILLPRIV = 1 << 19
FUSE_POSIX_ACL = 1 << 20
FUSE_ABORT_ERROR = 1 << 21
FUSE_MAX_PAGES = 1 << 22
FUSE_EXPLICIT_INVAL_DATA = 1 << 25
FUSE_HANDLE_KILLPRIV_V2 = 1 << 28
FUSE_INIT_EXT = 1 << 30
FUSE_SECURITY_CTX = 1 << 32
FUSE_DIRECT_IO_ALLOW_MMAP = 1 << 36
FUSE_PASSTHROUGH = 1 << 37
FUSE_NO_EXPORT_SUPPORT = 1 << 38
FUSE_HAS_RESEND = 1 << 39
FUSE_ALLOW_IDMAP = 1 << 40
# FUSE_OVER_IO_URING (1 << 41, bit 9 of flags2) and FUSE_HAS_IO_URING_BUFPOOL (1 << 43,
# 7.46): from fuse_abi.h, below.

# -- open reply flags (fuse_open_out.open_flags) -----------------------------------------
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_NONSEEKABLE = 1 << 2
FOPEN_NOFLUSH = 1 << 5
FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6  # protocol 7.38+
# FOPEN_IO_URING_ZERO_COPY (1 << 8, 7.46): from fuse_abi.h, below.

# -- fuse_setattr_in.valid ----------------------------------------------------------------
FATTR_MODE = 1 << 0
FATTR_UID = 1 << 1
FATTR_GID = 1 << 2
FATTR_SIZE = 1 << 3
FATTR_ATIME = 1 << 4
FATTR_MTIME = 1 << 5
FATTR_FH = 1 << 6
FATTR_ATIME_NOW = 1 << 7
FATTR_MTIME_NOW = 1 << 8
FATTR_LOCKOWNER = 1 << 9
FATTR_CTIME = 1 << 10
FATTR_KILL_SUIDGID = 1 << 11

FUSE_FSYNC_FDATASYNC = 1 << 0
FUSE_UNIQUE_RESEND = 1 << 63

# -- the declaration: fuse_abi.h ----------------------------------------------------------
HEADER = Path(__file__).resolve().parent / "fuse_abi.h"


@functools.cache
def declarations() -> FFI:
    """fuse_abi.h parsed by cffi in ABI mode: sizes, offsets and constants, no compiler."""
    ffi = FFI()
    ffi.cdef(HEADER.read_text())
    return ffi


_STRUCT_CODES = {
    "uint64_t": "Q", "int64_t": "q", "uint32_t": "I", "int32_t": "i", "uint16_t": "H",
    "int16_t": "h", "uint8_t": "B", "int8_t": "b",
}
# The kernel's names for fields that carry nothing: pad bytes in struct formats.
_PADDING = re.compile(r"padding|dummy|unused\d*|spare")


def is_padding(field: str) -> bool:
    """Whether a field of fuse_abi.h (named as the kernel names it) carries nothing."""
    return _PADDING.fullmatch(field) is not None


def _leaves(ctype: Any, base: int = 0) -> Iterator[tuple[str, Any, int]]:
    """(name, type, offset) of every field, a nested struct's fields in its place."""
    for name, field in ctype.fields:
        if field.type.kind == "struct":
            yield from _leaves(field.type, base + field.offset)
        else:
            yield name, field.type, base + field.offset


def struct_of(
    cname: str, fields: Sequence[str] | None = None, keep: Collection[str] = ()
) -> struct.Struct:
    """The little-endian struct.Struct of a struct of fuse_abi.h.

    Its padding fields (is_padding) become pad bytes unless named in `keep`. With
    `fields`, only those fields become values, everything before them pad bytes, and the
    struct ends with the last of them: the few fields a hot path reads.
    """
    ffi = declarations()
    leaves = list(_leaves(ffi.typeof(cname)))
    if fields is None:
        end = ffi.sizeof(cname)
        values = {name for name, _, _ in leaves if name in keep or not is_padding(name)}
    else:
        where = {name: (offset, ffi.sizeof(ctype)) for name, ctype, offset in leaves}
        if unknown := [name for name in fields if name not in where]:
            raise ValueError(f"{cname} has no field {', '.join(unknown)}")
        end = max(offset + size for offset, size in (where[name] for name in fields))
        values = set(fields)
    fmt, at = "<", 0
    for name, ctype, offset in leaves:
        if at == end:
            break
        if offset != at:
            raise ValueError(f"{cname}.{name}: implicit padding; state it in fuse_abi.h")
        size = ffi.sizeof(ctype)
        if name not in values:
            fmt += f"{size}x"
        elif ctype.kind == "primitive" and ctype.cname in _STRUCT_CODES:
            fmt += _STRUCT_CODES[ctype.cname]
        else:
            raise ValueError(f"{cname}.{name}: {ctype.cname} has no struct format")
        at += size
    if at != end:
        raise ValueError(f"{cname}: implicit tail padding; state it in fuse_abi.h")
    return struct.Struct(fmt)


_abi = declarations()
_consts = _abi.dlopen(None)  # only for the header's #defines and enums: no symbol is used

# -- headers ------------------------------------------------------------------------------
# fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding (kept as
# a value: callers pack all nine)
IN_HEADER = struct_of("struct fuse_in_header", keep=("padding",))
IN_HEADER_PID_OFFSET = _abi.offsetof("struct fuse_in_header", "pid")  # the requesting thread
# The fields a codec needs on every request, without building the whole tuple.
IN_HEADER_OPCODE_UNIQUE = struct_of("struct fuse_in_header", fields=("opcode", "unique"))
# fuse_out_header: len, error (negative errno or 0), unique
OUT_HEADER = struct_of("struct fuse_out_header")

# -- per-op structs -----------------------------------------------------------------------
# fuse_init_in: major, minor, max_readahead, flags, flags2
INIT_IN = struct_of("struct fuse_init_in")
# before 7.36: no flags2, 16 bytes
INIT_IN_COMPAT = struct_of("struct fuse_init_in", fields=("major", "minor", "max_readahead",
                                                          "flags"))
# fuse_init_out: major, minor, max_readahead, flags, max_background, congestion_threshold,
# max_write, time_gran, max_pages, map_alignment, flags2, max_stack_depth
INIT_OUT = struct_of("struct fuse_init_out")
INIT_OUT_COMPAT_SIZE: int = _consts.FUSE_COMPAT_INIT_OUT_SIZE  # minor < 5
INIT_OUT_COMPAT_22_SIZE: int = _consts.FUSE_COMPAT_22_INIT_OUT_SIZE  # minor < 23

# fuse_attr: ino, size, blocks, atime, mtime, ctime, atimensec, mtimensec, ctimensec,
# mode, nlink, uid, gid, rdev, blksize, flags
ATTR = struct_of("struct fuse_attr")
# fuse_attr_out: attr_valid, attr_valid_nsec, then fuse_attr inline
ATTR_OUT = struct_of("struct fuse_attr_out")
ATTR_OUT_COMPAT_SIZE: int = _consts.FUSE_COMPAT_ATTR_OUT_SIZE  # minor < 9: no blksize/flags

# fuse_getattr_in: getattr_flags, fh
GETATTR_IN = struct_of("struct fuse_getattr_in")
# fuse_setattr_in: valid, fh, size, lock_owner, atime, mtime, ctime, atimensec, mtimensec,
# ctimensec, mode, uid, gid
SETATTR_IN = struct_of("struct fuse_setattr_in")
# fuse_open_in: flags, open_flags
OPEN_IN = struct_of("struct fuse_open_in")
# fuse_open_out: fh, open_flags, backing_id
OPEN_OUT = struct_of("struct fuse_open_out")
# fuse_read_in: fh, offset, size, read_flags, lock_owner, flags
READ_IN = struct_of("struct fuse_read_in")
READ_IN_HEAD = struct_of("struct fuse_read_in", fields=("offset", "size"))  # all a READ needs
# fuse_write_in: fh, offset, size, write_flags, lock_owner, flags
WRITE_IN = struct_of("struct fuse_write_in")
WRITE_IN_HEAD = struct_of("struct fuse_write_in", fields=("offset", "size"))
WRITE_IN_COMPAT_SIZE: int = _consts.FUSE_COMPAT_WRITE_IN_SIZE  # minor < 9
# fuse_write_out: size
WRITE_OUT = struct_of("struct fuse_write_out")
# fuse_flush_in: fh, unused (kept as a value: callers pack it), lock_owner
FLUSH_IN = struct_of("struct fuse_flush_in", keep=("unused",))
# fuse_release_in: fh, flags, release_flags, lock_owner
RELEASE_IN = struct_of("struct fuse_release_in")
# fuse_fsync_in: fh, fsync_flags
FSYNC_IN = struct_of("struct fuse_fsync_in")
# fuse_fallocate_in: fh, offset, length, mode
FALLOCATE_IN = struct_of("struct fuse_fallocate_in")
# fuse_lseek_in: fh, offset, whence
LSEEK_IN = struct_of("struct fuse_lseek_in")
# fuse_lseek_out: offset
LSEEK_OUT = struct_of("struct fuse_lseek_out")
# fuse_kstatfs (== fuse_statfs_out): blocks, bfree, bavail, files, ffree, bsize, namelen,
# frsize
STATFS_OUT = struct_of("struct fuse_kstatfs")
STATFS_OUT_COMPAT_SIZE: int = _consts.FUSE_COMPAT_STATFS_SIZE  # minor < 4
# fuse_interrupt_in: unique
INTERRUPT_IN = struct_of("struct fuse_interrupt_in")
# fuse_forget_in: nlookup
FORGET_IN = struct_of("struct fuse_forget_in")
# fuse_forget_one: nodeid, nlookup
FORGET_ONE = struct_of("struct fuse_forget_one")
# fuse_batch_forget_in: count; followed by count fuse_forget_one
BATCH_FORGET_IN = struct_of("struct fuse_batch_forget_in")

# Size of the op header the kernel puts between fuse_in_header and the payload, per
# opcode, on /dev/fuse (protocol >= 7.9). Opcodes without a fixed header keep 0 here:
# for them the codec sees everything after the in_header as op_in.
OP_IN_SIZE = [0] * OPCODE_LIMIT
for _op, _st in (
    (FORGET, FORGET_IN),
    (GETATTR, GETATTR_IN),
    (SETATTR, SETATTR_IN),
    (OPEN, OPEN_IN),
    (READ, READ_IN),
    (WRITE, WRITE_IN),
    (RELEASE, RELEASE_IN),
    (FSYNC, FSYNC_IN),
    (FLUSH, FLUSH_IN),
    (INIT, INIT_IN),
    (INTERRUPT, INTERRUPT_IN),
    (BATCH_FORGET, BATCH_FORGET_IN),
    (FALLOCATE, FALLOCATE_IN),
    (LSEEK, LSEEK_IN),
):
    OP_IN_SIZE[_op] = _st.size
del _op, _st


# -- FUSE-over-io_uring (7.42, 7.46) -------------------------------------------------------
FUSE_OVER_IO_URING: int = _consts.FUSE_OVER_IO_URING
FUSE_HAS_IO_URING_BUFPOOL: int = _consts.FUSE_HAS_IO_URING_BUFPOOL
FOPEN_IO_URING_ZERO_COPY: int = _consts.FOPEN_IO_URING_ZERO_COPY
FUSE_URING_ENT_ZERO_COPY: int = _consts.FUSE_URING_ENT_ZERO_COPY
FUSE_URING_ZERO_COPY: int = _consts.FUSE_URING_ZERO_COPY
URING_CMD_REGISTER: int = _consts.FUSE_IO_URING_CMD_REGISTER
URING_CMD_COMMIT_AND_FETCH: int = _consts.FUSE_IO_URING_CMD_COMMIT_AND_FETCH
URING_CMD_ADD_QUEUE: int = _consts.FUSE_IO_URING_CMD_ADD_QUEUE
URING_CMD_ADD_BUFPOOL: int = _consts.FUSE_IO_URING_CMD_ADD_BUFPOOL
# fuse_uring_ent_in_out: flags, commit_id, payload_sz, offset (7.46; padding before), reserved
URING_ENT_IN_OUT = struct_of("struct fuse_uring_ent_in_out")
URING_ENT_OFFSET_OFFSET = _abi.offsetof("struct fuse_uring_ent_in_out", "offset")
# fuse_uring_req_header = in_out[128], op_in[128], fuse_uring_ent_in_out
URING_REQ_OP_IN_OFFSET = _abi.offsetof("struct fuse_uring_req_header", "op_in")
URING_REQ_ENT_IN_OUT_OFFSET = _abi.offsetof("struct fuse_uring_req_header", "ring_ent_in_out")
URING_REQ_HEADER_SIZE = _abi.sizeof("struct fuse_uring_req_header")  # 288
# fuse_uring_cmd_req (in sqe->cmd): flags, commit_id, qid, padding[6], then (7.46) a union
# of bufpool {uaddr, len, reserved} and ent_zero_copy_buf_index. Only the C writes it.
URING_CMD_REQ_SIZE = _abi.sizeof("struct fuse_uring_cmd_req")  # 40
URING_CMD_REQ_QID_OFFSET = _abi.offsetof("struct fuse_uring_cmd_req", "qid")
URING_CMD_REQ_BUFPOOL_OFFSET = _abi.offsetof("struct fuse_uring_cmd_req", "bufpool")
URING_CMD_REQ_BUFPOOL_LEN_OFFSET = _abi.offsetof("struct fuse_uring_cmd_req", "bufpool", "len")
URING_CMD_REQ_BUFPOOL_RESERVED_OFFSET = _abi.offsetof(
    "struct fuse_uring_cmd_req", "bufpool", "reserved"
)
URING_CMD_REQ_ZC_INDEX_OFFSET = _abi.offsetof("struct fuse_uring_cmd_req",
                                              "ent_zero_copy_buf_index")
del _abi, _consts
