"""What the running kernel offers in FUSE_INIT, learned before the export is mounted.

FUSE_INIT's flags (e.g. FUSE_HAS_IO_URING_BUFPOOL, protocol 7.46) only reach a server
after its mount. To refuse a mode the kernel cannot serve *before* mounting the export,
the transport mounts a throwaway connection on an empty file in a private temporary
directory, reads the INIT request the kernel sends there, and unmounts it without
answering (the kernel then aborts that connection). The answer is cached per process:
the kernel does not change under a running process (enable_uring may, and it is part of
the key, since the kernel offers the ring flags only while it is Y).
"""

from __future__ import annotations

import os
import select
import shutil
import tempfile
from dataclasses import dataclass

from transports.fuse import abi, mounting
from transports.sysinfo import enable_uring

_TIMEOUT = 5.0
_cache: dict[str | None, KernelOffer] = {}


@dataclass(frozen=True)
class KernelOffer:
    release: str  # uname -r
    major: int
    minor: int  # the FUSE protocol minor the kernel speaks
    flags: int  # 64-bit: flags | flags2 << 32, as offered in FUSE_INIT

    @property
    def uring(self) -> bool:
        return bool(self.flags & abi.FUSE_OVER_IO_URING)

    @property
    def bufpool(self) -> bool:
        return bool(self.flags & abi.FUSE_HAS_IO_URING_BUFPOOL)

    def describe(self) -> str:
        return f"Linux {self.release}, FUSE protocol {self.major}.{self.minor}"

    def as_dict(self) -> dict:
        return {
            "release": self.release,
            "protocol": f"{self.major}.{self.minor}",
            "flags": hex(self.flags),
            "how": "FUSE_INIT read from a throwaway mount before mounting the export",
        }


def kernel_offer() -> KernelOffer:
    """Mount a throwaway FUSE connection and read its FUSE_INIT (cached).

    Raises mounting.MountError when this process cannot mount FUSE at all (the transport
    could not mount either), TimeoutError when no INIT arrives.
    """
    key = enable_uring()
    if key in _cache:
        return _cache[key]
    offer = _probe()
    _cache[key] = offer
    return offer


def _probe() -> KernelOffer:
    tmpdir = tempfile.mkdtemp(prefix="ringside-init-probe-")
    target = os.path.join(tmpdir, "probe")
    fd = -1
    try:
        with open(target, "wb"):
            pass
        fd = mounting.mount_devfuse(target, max_read=abi.MIN_READ_BUFFER, subtype="ringside-probe")
        try:
            ready, _, _ = select.select([fd], [], [], _TIMEOUT)
            if not ready:
                raise TimeoutError(f"no FUSE_INIT within {_TIMEOUT} s on a throwaway mount")
            data = os.read(fd, 1 << 16)
        finally:
            mounting.unmount(target, lazy=True)
    finally:
        if fd >= 0:
            os.close(fd)
        shutil.rmtree(tmpdir, ignore_errors=True)
    opcode = abi.IN_HEADER.unpack_from(data)[1]
    if opcode != abi.INIT:
        raise RuntimeError(f"the throwaway mount's first request was opcode {opcode}, not INIT")
    op_in = memoryview(data)[abi.IN_HEADER.size :]
    major, minor, _readahead, flags = abi.INIT_IN_COMPAT.unpack_from(op_in)
    flags2 = 0
    if flags & abi.FUSE_INIT_EXT and len(op_in) >= abi.INIT_IN.size:
        flags2 = abi.INIT_IN.unpack_from(op_in)[4]
    return KernelOffer(os.uname().release, major, minor, flags | flags2 << 32)
