"""Ring mechanics for the uring transport: machine checks, entry buffers, one queue's ring.

Everything here is independent of the FUSE codec. The C side (transports/builtin/uring/ring.c)
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

from transports import native
from transports.fuse import abi
from transports.sysinfo import (  # noqa: F401  (re-exported for the transport)
    enable_uring,
    has_capability,
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

# How each buffers= mode keeps its payload buffers, for result files.
PINNING = {
    "mapped": "none (per-entry buffers: ordinary pageable allocations)",
    "mlock": "user space: per-entry buffers populated and mlocked (no kernel-side pin)",
    "pool": "none (one pool per queue, pageable; the kernel imports it per request)",
    "pinned": "kernel: the pool registered with io_uring (long-term pin, FOLL_LONGTERM)",
}
BUFFER_MODES = tuple(PINNING)
POOL_MODES = ("pool", "pinned")


def _status_field(name: str) -> str | None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return None


def locked_bytes() -> int:
    """VmLck of this process: memory mlocked (whole process; the mm is shared by threads)."""
    raw = _status_field("VmLck")  # "1234 kB"
    return int(raw.split()[0]) * 1024 if raw else 0


def pinned_bytes() -> int:
    """VmPin of this process: pages pinned long-term and charged to RLIMIT_MEMLOCK.

    io_uring charges registered buffers here only for a task without CAP_IPC_LOCK.
    """
    raw = _status_field("VmPin")
    return int(raw.split()[0]) * 1024 if raw else 0


def registered_buffers(ring_fd: int) -> list[tuple[int, int, int]] | None:
    """(table index, address, length) of each buffer registered with an io_uring.

    Read from the `UserBufs:` section of /proc/self/fdinfo/<ring fd> (io_uring/fdinfo.c
    prints `index: 0xADDR/LEN` per slot, `<none>` for empty ones); None when the kernel
    printed no such section.
    """
    try:
        with open(f"/proc/self/fdinfo/{ring_fd}") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found: list[tuple[int, int, int]] | None = None
    for line in lines:
        if line.startswith("UserBufs:"):
            found = []
            continue
        if found is None:
            continue
        index, sep, rest = line.strip().partition(": ")
        if not sep or not index.isdigit():
            break  # the next section
        if rest.startswith("0x") and "/" in rest:
            addr, _, length = rest.partition("/")
            found.append((int(index), int(addr, 16), int(length)))
    return found


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
    """One queue's buffers: `depth` header pages and the payload buffers.

    mapped: per-entry payload buffers in an ordinary page-aligned heap allocation.
    mlock: the same, in an anonymous mmap populated up front and mlocked, so the kernel's
    copies never fault or wait on reclaim.
    pool, pinned: `slots` payload slots of `payload` bytes in one populated anonymous
    mapping (the queue's pool; pinned registers it with io_uring), headers apart.
    `payloads[i]` is payload buffer i: entry i's own, or pool slot i.
    """

    def __init__(self, depth: int, payload: int, mode: str = "mapped", slots: int = 0):
        if mode not in BUFFER_MODES:
            raise ValueError(f"unknown buffer mode {mode!r}")
        self.depth = depth
        self.payload = payload
        self.mode = mode
        self.pooled = mode in POOL_MODES
        self.slots = (slots or depth) if self.pooled else depth
        headers = depth * HEADER_BUFFER
        self.pool_size = self.slots * payload if self.pooled else 0
        self.size = headers + (self.pool_size if self.pooled else depth * payload)
        self._pool_ptr = native.ffi.NULL
        if mode == "mlock":
            err = native.ffi.new("int *")
            self._ptr = native.lib.rs_alloc_locked(self.size, err)
            if self._ptr == native.ffi.NULL:
                raise OSError(-err[0], f"locking {self.size} bytes: {os.strerror(-err[0])}")
        else:
            self._ptr = native.lib.rs_alloc_mapped(headers if self.pooled else self.size)
            if self._ptr == native.ffi.NULL:
                raise OSError(errno.ENOMEM, f"allocating {self.size} bytes")
        if self.pooled:
            err = native.ffi.new("int *")
            self._pool_ptr = native.lib.rs_alloc_pages(self.pool_size, err)
            if self._pool_ptr == native.ffi.NULL:
                native.lib.rs_free_mapped(self._ptr)
                raise OSError(-err[0], f"mapping a pool of {self.pool_size} bytes")
        base = native.ffi.cast("char *", self._ptr)
        self.header_ptrs = [base + i * HEADER_BUFFER for i in range(depth)]
        self._whole = memoryview(native.ffi.buffer(base, headers if self.pooled else self.size))
        self.headers = [
            self._whole[i * HEADER_BUFFER : (i + 1) * HEADER_BUFFER] for i in range(depth)
        ]
        if self.pooled:
            self.pool_ptr = native.ffi.cast("char *", self._pool_ptr)
            self.pool_address = int(native.ffi.cast("uintptr_t", self._pool_ptr))
            self._payload_area = memoryview(native.ffi.buffer(self.pool_ptr, self.pool_size))
            self.payload_ptrs = [native.ffi.NULL] * depth  # entries bring no payload buffer
            start = 0
        else:
            self.pool_ptr = native.ffi.NULL
            self.pool_address = 0
            self._payload_area = self._whole
            first_payload = base + headers
            self.payload_ptrs = [first_payload + i * payload for i in range(depth)]
            start = headers
        self.payloads = [
            self._payload_area[start + i * payload : start + (i + 1) * payload]
            for i in range(self.slots)
        ]

    def close(self) -> None:
        """Free the memory; only once no ring and no thread can touch it any more."""
        if self._ptr is None:
            return
        for view in (*self.headers, *self.payloads, self._whole, self._payload_area):
            view.release()
        self.headers, self.payloads = [], []
        if self.mode == "mlock":
            native.lib.rs_free_locked(self._ptr, self.size)
        else:
            native.lib.rs_free_mapped(self._ptr)
        if self._pool_ptr != native.ffi.NULL:
            native.lib.rs_free_pages(self._pool_ptr, self.pool_size)
            self._pool_ptr = native.ffi.NULL
        self._ptr = None


class LentPages:
    """The client pages the kernel lent to one ring entry (zero-copy), as the export sees
    them: memory it cannot address, only fill from its backing or drain into it.

    The kernel registered them in the ring's buffer table; READ_FIXED / WRITE_FIXED on
    that slot move the data (the C helper submits and waits). One per queue, pointed at
    the entry being served: nothing is allocated per request.
    """

    def __init__(self, q: object):
        self._q = q
        self._fixed_io = native.lib.rs_fixed_io
        self.entry = 0

    def fill_from(self, fd: int, offset: int, length: int) -> int:
        """Read `length` bytes of `fd` at `offset` into the pages (a READ's reply)."""
        n = self._fixed_io(self._q, self.entry, fd, offset, length, 0)
        if n < 0:
            raise OSError(-n, f"READ_FIXED into lent pages: {os.strerror(-n)}")
        return n

    def drain_to(self, fd: int, offset: int, length: int) -> int:
        """Write `length` bytes of the pages to `fd` at `offset` (a WRITE's data)."""
        n = self._fixed_io(self._q, self.entry, fd, offset, length, 1)
        if n < 0:
            raise OSError(-n, f"WRITE_FIXED from lent pages: {os.strerror(-n)}")
        return n


class Ring:
    """One queue's io_uring (SQE128) on the FUSE connection, with its entries registered.

    Create, use and destroy it on the queue's own thread: the kernel copies requests
    into the buffers in the context of the task that submitted the SQEs, and io_uring
    cancels a task's commands when that task exits.
    """

    def __init__(
        self, qid: int, arena: Arena, fuse_fd: int, wake_fd: int = -1, zero_copy: bool = False
    ):
        self.qid = qid
        self.arena = arena
        # Guards close() against statistics() reading the counters from another thread.
        self._lock = threading.Lock()
        err = native.ffi.new("int *")
        q = native.lib.rs_queue_create(arena.depth, qid, fuse_fd, 1, wake_fd, err)
        if q == native.ffi.NULL:
            raise OSError(-err[0], f"io_uring setup for queue {qid}: {os.strerror(-err[0])}")
        self.q = q
        for i in range(arena.depth):
            rc = native.lib.rs_queue_set_entry(
                q, i, arena.header_ptrs[i], HEADER_BUFFER, arena.payload_ptrs[i], arena.payload
            )
            if rc < 0:
                self.close()
                raise OSError(-rc, f"queue {qid} entry {i}: {os.strerror(-rc)}")
        if arena.pooled:
            registered = arena.mode == "pinned"
            rc = native.lib.rs_queue_add_pool(
                q, arena.pool_ptr, arena.payload, arena.slots, int(registered), int(zero_copy)
            )
            if rc < 0:
                step = ("registering the pool with io_uring", "ADD_QUEUE", "ADD_BUFPOOL")[
                    min(q.last_idx, 2)
                ]
                self.close()
                raise OSError(-rc, f"queue {qid}: {step} failed: {os.strerror(-rc)}")
        self.lent = LentPages(q) if zero_copy else None

    def register(self) -> int:
        """Submit REGISTER for every entry (plus the wake-up poll); returns SQEs submitted.

        Raises OSError when the kernel refused any entry (it answers those during the
        submit, e.g. EINVAL for a payload buffer below the negotiated size).
        """
        q = self.q
        n = native.lib.rs_queue_register_all(q)
        if n < 0:
            raise OSError(-n, f"registering queue {self.qid}: {os.strerror(-n)}")
        failed = native.lib.rs_take_register_errors(q)
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
                **buffer_counters(q),
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
                "buffer_mode": ("per-entry", "pool", "registered pool")[q.buf_mode],
                "zero_copy_queue": bool(q.zero_copy),
                "pool_slots": int(q.slots),
                "slot_size": int(q.slot_size),
            }

    def registration(self) -> dict:
        """What the kernel shows registered in this ring's buffer table (fdinfo)."""
        with self._lock:
            if self.q is None:
                return {}
            ring_fd = native.lib.rs_queue_ring_fd(self.q)
        bufs = registered_buffers(ring_fd)
        arena = self.arena
        pool = next((b for b in bufs or () if b[1] == arena.pool_address), None)
        return {
            "ring_fd": ring_fd,
            "user_bufs": None if bufs is None else [[i, hex(a), n] for i, a, n in bufs],
            "pool_address": hex(arena.pool_address),
            "pool_bytes": arena.pool_size,
            "pool_registered": pool is not None and pool[2] >= arena.pool_size,
        }

    def close(self) -> None:
        with self._lock:
            q, self.q = self.q, None
            if q is not None:
                native.lib.rs_queue_destroy(q)


# The per-queue buffer counters (ring.c counts them per request); their totals are
# transports/statistics.py's BufferTotals.
BUFFER_COUNTERS = (
    "zc_requests", "zc_bytes", "copied_requests", "copied_bytes", "fixed_ios",
    "slots_in_use", "slots_hwm",
)


def buffer_counters(q: object) -> dict[str, int]:
    """Data-carrying READ/WRITE zero-copied vs copied (requests, bytes), READ_FIXED /
    WRITE_FIXED issued, pool slots held now and at most at once."""
    return {name: int(getattr(q, name)) for name in BUFFER_COUNTERS}
