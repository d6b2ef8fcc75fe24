"""Ring mechanics for the uring transport: machine checks, entry buffers, one queue's ring.

Everything here is independent of the FUSE codec. The C side (transports/ring/ring.c)
owns the io_uring and writes SQEs and reply headers; this module allocates the buffers
the kernel copies requests into, and keeps the Python views of them that the codec
reads from and writes into (made once, so the per-request path allocates nothing).
"""

from __future__ import annotations

import errno
import os
import resource
import threading
from dataclasses import dataclass

from transports._uring_cffi import ffi, lib
from transports.fuse import abi
from transports.sysinfo import (  # noqa: F401  (re-exported for the transport)
    enable_uring,
    io_uring_disabled,
    parse_cpu_list,
    possible_cpus,
)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# One page per header: >= the 288-byte fuse_uring_req_header, and page aligned, which
# kernel-side pinning (newer kernels) requires and which keeps headers off shared lines.
HEADER_BUFFER = max(PAGE_SIZE, abi.URING_REQ_HEADER_SIZE)
MIN_PAYLOAD = abi.MIN_READ_BUFFER  # the kernel's floor for the payload buffer

IO_URING_GROUP = "/proc/sys/kernel/io_uring_group"
CAP_IPC_LOCK = 14
CAP_SYS_ADMIN = 21

PINNING_USERSPACE = (
    "user-space mlock (kernel 6.18 has no kernel-side long-term pinning of FUSE ring buffers)"
)
PINNING_NONE = "none (buffers=mapped: ordinary pageable allocations)"


def _status_field(name: str) -> str | None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return None


def has_capability(bit: int) -> bool:
    raw = _status_field("CapEff")
    return bool(raw) and bool(int(raw, 16) >> bit & 1)


def locked_bytes() -> int:
    """VmLck of this process: memory mlocked (whole process; the mm is shared by threads)."""
    raw = _status_field("VmLck")  # "1234 kB"
    return int(raw.split()[0]) * 1024 if raw else 0


def payload_size(max_write: int, max_pages: int) -> int:
    """The payload buffer the kernel demands: max(8192, max_write, max_pages pages)."""
    need = max(MIN_PAYLOAD, max_write, max_pages * PAGE_SIZE)
    return -(-need // PAGE_SIZE) * PAGE_SIZE


@dataclass(frozen=True)
class MemlockCheck:
    needed: int  # bytes this transport will lock
    limit: int  # RLIMIT_MEMLOCK soft limit, -1 for unlimited
    cap_ipc_lock: bool  # CAP_IPC_LOCK in the effective set: the limit does not apply
    already_locked: int

    @property
    def fits(self) -> bool:
        if self.cap_ipc_lock or self.limit < 0:
            return True
        return self.needed + self.already_locked <= self.limit

    def as_dict(self) -> dict:
        return {
            "needed_bytes": self.needed,
            "rlimit_memlock": "unlimited" if self.limit < 0 else self.limit,
            "cap_ipc_lock": self.cap_ipc_lock,
            "limit_applies": not self.cap_ipc_lock and self.limit >= 0,
        }


def memlock_check(needed: int) -> MemlockCheck:
    """RLIMIT_MEMLOCK against `needed`; mlock(2) ignores the limit with CAP_IPC_LOCK."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    limit = -1 if soft == resource.RLIM_INFINITY else soft
    return MemlockCheck(needed, limit, has_capability(CAP_IPC_LOCK), locked_bytes())


class Arena:
    """One queue's buffers: `depth` header pages, then `depth` payload buffers.

    mapped: an ordinary page-aligned heap allocation, faulted in on first use.
    pinned: an anonymous mmap populated up front and mlocked, so the kernel's copies
    never fault or wait on reclaim.
    """

    def __init__(self, depth: int, payload: int, pinned: bool):
        self.depth = depth
        self.payload = payload
        self.pinned = pinned
        self.size = depth * (HEADER_BUFFER + payload)
        if pinned:
            err = ffi.new("int *")
            self._ptr = lib.rs_alloc_pinned(self.size, err)
            if self._ptr == ffi.NULL:
                raise OSError(-err[0], f"locking {self.size} bytes: {os.strerror(-err[0])}")
        else:
            self._ptr = lib.rs_alloc_mapped(self.size)
            if self._ptr == ffi.NULL:
                raise OSError(errno.ENOMEM, f"allocating {self.size} bytes")
        base = ffi.cast("char *", self._ptr)
        self.header_ptrs = [base + i * HEADER_BUFFER for i in range(depth)]
        first_payload = base + depth * HEADER_BUFFER
        self.payload_ptrs = [first_payload + i * payload for i in range(depth)]
        self._whole = memoryview(ffi.buffer(base, self.size))
        self.headers = [
            self._whole[i * HEADER_BUFFER : (i + 1) * HEADER_BUFFER] for i in range(depth)
        ]
        start = depth * HEADER_BUFFER
        self.payloads = [
            self._whole[start + i * payload : start + (i + 1) * payload] for i in range(depth)
        ]

    def close(self) -> None:
        """Free the memory; only once no ring and no thread can touch it any more."""
        if self._ptr is None:
            return
        for view in (*self.headers, *self.payloads, self._whole):
            view.release()
        self.headers, self.payloads = [], []
        if self.pinned:
            lib.rs_free_pinned(self._ptr, self.size)
        else:
            lib.rs_free_mapped(self._ptr)
        self._ptr = None


class Ring:
    """One queue's io_uring (SQE128) on the FUSE connection, with its entries registered.

    Create, use and destroy it on the queue's own thread: the kernel copies requests
    into the buffers in the context of the task that submitted the SQEs, and io_uring
    cancels a task's commands when that task exits.
    """

    def __init__(self, qid: int, arena: Arena, fuse_fd: int, wake_fd: int = -1):
        self.qid = qid
        self.arena = arena
        # Guards close() against statistics() reading the counters from another thread.
        self._lock = threading.Lock()
        err = ffi.new("int *")
        q = lib.rs_queue_create(arena.depth, qid, fuse_fd, 1, wake_fd, err)
        if q == ffi.NULL:
            raise OSError(-err[0], f"io_uring setup for queue {qid}: {os.strerror(-err[0])}")
        self.q = q
        for i in range(arena.depth):
            rc = lib.rs_queue_set_entry(
                q, i, arena.header_ptrs[i], HEADER_BUFFER, arena.payload_ptrs[i], arena.payload
            )
            if rc < 0:
                self.close()
                raise OSError(-rc, f"queue {qid} entry {i}: {os.strerror(-rc)}")

    def register(self) -> int:
        """Submit REGISTER for every entry (plus the wake-up poll); returns SQEs submitted.

        Raises OSError when the kernel refused any entry (it answers those during the
        submit, e.g. EINVAL for a payload buffer below the negotiated size).
        """
        q = self.q
        n = lib.rs_queue_register_all(q)
        if n < 0:
            raise OSError(-n, f"registering queue {self.qid}: {os.strerror(-n)}")
        failed = lib.rs_take_register_errors(q)
        if failed:
            err = -q.last_res
            raise OSError(
                err,
                f"queue {self.qid}: the kernel refused REGISTER of {failed} of "
                f"{q.depth} entries (first: entry {q.last_idx}, {os.strerror(err)})",
            )
        return n

    def counters(self) -> dict:
        with self._lock:
            q = self.q
            if q is None:
                return {}
            return {
                "completions_with_request": int(q.requests),
                "commits": int(q.commits),
                "waits": int(q.enters),
            }

    def settings(self) -> dict:
        with self._lock:
            q = self.q
            if q is None:
                return {}
            return {
                "setup_flags": hex(q.setup_flags),
                "sq_entries": int(q.sq_entries),
                "cq_entries": int(q.cq_entries),
                "fixed_file": bool(q.fixed_file),
            }

    def close(self) -> None:
        with self._lock:
            q, self.q = self.q, None
            if q is not None:
                lib.rs_queue_destroy(q)
