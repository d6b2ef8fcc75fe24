"""Moving bytes over /dev/fuse: answering FUSE_INIT and the read -> codec -> write loop.

Shared by the `devfuse` transport (its workers run `serve_requests`) and the `uring`
transport (INIT, and the requests the ring never carries, still arrive here). Reads
block in the kernel with the GIL released; the kernel hands each request to exactly one
reader, so several threads may share the fd. ENODEV means the connection is gone.
"""

from __future__ import annotations

import errno
import io
import os
import time
from collections.abc import Callable
from typing import Any

from transports.fuse import abi
from transports.fuse.codec import Codec

MAX_WRITE = 1 << 20
IN_BUFFER = MAX_WRITE + 4096  # header + write_in + the largest write, rounded up a page
OUT_BUFFER = abi.OUT_HEADER.size + MAX_WRITE + 4096
GONE = (errno.ENODEV, errno.ECONNABORTED)  # connection aborted or unmounted
RETRY = (errno.EINTR, errno.EAGAIN, errno.ENOENT)  # ENOENT: the request was interrupted


class InitRefused(RuntimeError):
    """The codec could not accept the kernel's FUSE_INIT (e.g. a protocol it cannot speak)."""


class InitTimeout(RuntimeError):
    """No FUSE_INIT arrived in time."""


def send(fd: int, data: memoryview) -> bool:
    """Write one reply; False when the connection is gone."""
    try:
        os.write(fd, data)
    except OSError as e:
        if e.errno in GONE:
            return False
        if e.errno not in RETRY:  # the request was interrupted: nobody waits for it
            raise
    return True


def answer_init(fd: int, codec: Codec, timeout: float | None = None) -> bool:
    """Read and answer requests until FUSE_INIT is answered (True) or the connection goes."""
    inbuf = memoryview(bytearray(IN_BUFFER))
    outbuf = memoryview(bytearray(OUT_BUFFER))
    header = abi.OUT_HEADER.size
    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
        try:
            n = os.readv(fd, [inbuf])
        except OSError as e:
            if e.errno in RETRY:
                continue
            if e.errno in GONE:
                return False
            raise
        hdr, op_in, payload = codec.split(inbuf, n)
        result = codec.handle(hdr, op_in, payload, outbuf[header:])
        if result is None:
            continue
        length = max(result, 0)
        codec.pack_out_header(outbuf, codec.last_unique, min(result, 0), length)
        if not send(fd, outbuf[: header + length]):
            return False
        if codec.last_opcode == abi.INIT:
            if codec.negotiated is None:
                raise InitRefused(f"the kernel's FUSE_INIT was refused ({result})")
            return True
    raise InitTimeout(f"no FUSE_INIT within {timeout} s")


def _following(readinto: Callable[[memoryview], int], follower: Any
               ) -> Callable[[memoryview], int]:
    """readinto that shows each request's pid (struct fuse_in_header.pid) to `follower`."""
    from transports.native import lib

    follow, struct, pid_at = lib.rs_follow, follower.struct, abi.IN_HEADER_PID_OFFSET

    def read(buf: memoryview) -> int:
        n = readinto(buf)
        follow(struct, int.from_bytes(buf[pid_at : pid_at + 4], "little"))
        return n

    return read


def serve_requests(fd: int, codec: Codec, native: Any = None, follower: Any = None) -> None:
    """Answer requests read from `fd` until the connection is gone. The hot loop.

    `native` (a transports.datapath.NativeDataPath) reads the requests instead and
    answers READ and WRITE itself; the loop gets only what it leaves. `follower` (a
    transports.sched.policy.Follower) is shown every request read.
    """
    inmv = memoryview(bytearray(IN_BUFFER))
    outmv = memoryview(bytearray(OUT_BUFFER))
    header_size = abi.OUT_HEADER.size
    out = outmv[header_size:]
    # FileIO.readinto is read(2) into our buffer with the GIL released, and cheaper per
    # call than os.readv; closefd=False leaves the fd to its owner.
    readinto = io.FileIO(fd, "rb", closefd=False).readinto
    if native is not None:
        readinto = native.dev_reader(fd, inmv, outmv, follower)
    elif follower is not None:
        readinto = _following(readinto, follower)
    write = os.write
    split = codec.split
    handle = codec.handle
    pack_header = abi.OUT_HEADER.pack_into
    reply, reply_len = outmv[:header_size], header_size
    while True:
        try:
            n = readinto(inmv)
        except OSError as e:
            if e.errno in RETRY:
                continue
            if e.errno in GONE:
                return
            raise
        hdr, op_in, payload = split(inmv, n)
        result = handle(hdr, op_in, payload, out)
        if result is None:
            continue
        if result < 0:
            pack_header(outmv, 0, header_size, result, codec.last_unique)
            length = header_size
        else:
            length = header_size + result
            pack_header(outmv, 0, length, 0, codec.last_unique)
        if length != reply_len:  # fixed-size workloads reuse one view
            reply, reply_len = outmv[:length], length
        try:
            write(fd, reply)
        except OSError as e:
            if e.errno in GONE:
                return
            if e.errno not in RETRY:
                raise
