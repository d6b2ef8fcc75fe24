"""FUSE-over-io_uring: one ring and one thread per possible CPU, `depth` entries each.

FUSE_INIT still arrives through read(/dev/fuse); the reply asks for FUSE_OVER_IO_URING.
Then every queue registers its entries (REGISTER SQEs carrying a header and a payload
buffer). Once every queue has one, the kernel hands each request to the queue of the
CPU the caller runs on: a completion means the entry holds a request; the reply is
written into the same buffers and COMMIT_AND_FETCH returns it and waits for the next
request in one SQE. /dev/fuse stays served by one thread for what the ring never
carries (requests before the ring is ready, interrupts, forgets); the two paths are
counted apart.

Per request the queue thread makes two cffi calls and one codec call: the C helper
writes the out header and the SQE, submits, waits (GIL released) and returns the next
(entry, payload buffer, payload size); the codec reads and writes the preallocated
buffer views.

Payload buffers (`buffers=`): mapped and mlock give every entry its own (the 6.14
protocol; mlock populates and locks them from user space). Protocol 7.46 (Linux 7.3)
adds pools: pool = ADD_QUEUE and one ADD_BUFPOOL per queue, entries registered without
payload, each request's data at pool + offset in a slot the kernel picks; pinned = the
same pool registered with the ring's io_uring (the kernel pins it long-term) and named
by every command. zerocopy=on (with a pool) adds zero-copy queues: the codec answers
OPEN with FOPEN_IO_URING_ZERO_COPY, the kernel lends the client's pages of a READ or
WRITE to the entry's slot of the ring's buffer table, and the export moves the data
between its backing and those pages (READ_FIXED / WRITE_FIXED, submitted by the C
helper on the same ring) without the data passing through the pool. Modes the kernel
cannot serve are refused before the export is mounted, never replaced by another.

Scheduling: the kernel queues a request on the queue of the CPU its caller runs on, so
with affinity=on the serving thread is always on the client's CPU. With sched=normal the
scheduler often wakes the client on the other, idle CPU (ours is busy finishing the
reply), its next request lands on the other queue, and every request pays a migration
and cold caches (measured at QD1 on 2 CPUs: 38k instead of 97k IOPS, 14.3 instead of
6.1 us of server CPU per request). The randread-4k-qd1 scenario keeps its client on one
CPU for that reason; randread-4k-qd1-floating shows the other case.
sched=idle (SCHED_IDLE, as libfuse's disabled experiment) makes the queue's CPU count
as idle so the client stays; the cost is that queue threads only run when nothing else
in their scheduling group wants their CPU. Hence its guard (idle_guard=on,
transports/sched/guard.c): a queue thread found starved goes SCHED_BATCH for a
while. sched=auto, the default, is the guarded idle where the guard may act (moving a
thread off SCHED_IDLE takes CAP_SYS_NICE or RLIMIT_NICE), else batch.

Teardown: any unmount aborts the connection; idle entries then complete with
-ENOTCONN, and the entry being served fails its commit. A queue thread ends when all its
entries are dead; the /dev/fuse thread ends with ENODEV. If the connection outlives a
stop() (a client still holds the file open after the lazy unmount), serve() aborts it
through fusectl after a grace period, and wakes the rings through their eventfds.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from transports.base import (
    Option,
    Transport,
    TransportUnavailable,
    flag,
    name_os_thread,
    on_off,
    positive_int,
)
from transports.builtin.uring.queue import (
    BUFFER_MODES,
    CAP_IPC_LOCK,
    CAP_SYS_ADMIN,
    HEADER_BUFFER,
    IO_URING_GROUP,
    PINNING,
    POOL_MODES,
    Arena,
    Ring,
    enable_uring,
    has_capability,
    io_uring_disabled,
    locked_bytes,
    memlock_check,
    payload_size,
    pinned_bytes,
    possible_cpus,
)
from transports.datapath import (
    DATAPATH_OPTION,
    DEFAULT_DATAPATH,
    NativeDataPath,
    NativeImage,
    native_totals,
)
from transports.export.image import Export
from transports.fuse import abi, devloop, mounting
from transports.fuse.codec import Codec, merge_counters
from transports.fuse.init_probe import KernelOffer, kernel_offer
from transports.fuse.mounting import MountError
from transports.placement import Placement
from transports.sched.policy import ThreadPolicy
from transports.statistics import BufferTotals, QueueStatistics, UringStatistics

MAX_WRITE = devloop.MAX_WRITE
# Entry completions that mean the connection is going away, not a bug.
_TEARDOWN = (-errno.ENOTCONN, -errno.ECONNABORTED, -errno.ECANCELED, -errno.ENODEV)
_SETUP_TIMEOUT = 10.0  # seconds for INIT and for every queue to register
_STOP_GRACE = 5.0  # after stop(): how long open files may keep the connection alive
_JOIN_TIMEOUT = 5.0


class UringError(RuntimeError):
    """The ring failed in a way that is not a normal unmount."""


class _Queue:
    """One ring queue: its CPU, buffers, codec, thread and what it counted."""

    def __init__(
        self, qid: int, cpu: int, arena: Arena, codec: Codec, wake_fd: int,
        native: NativeDataPath | None = None,
    ):
        self.qid = qid
        self.cpu = cpu
        self.arena = arena
        self.codec = codec
        self.native = native  # datapath=native: READ/WRITE answered in the ring's C
        self.wake_fd = wake_fd
        self.ring: Ring | None = None
        self.thread: threading.Thread | None = None
        self.registered = threading.Event()
        self.failure: BaseException | None = None
        self.affinity: list[int] | None = None
        self.affinity_error: str | None = None
        self.policy: str | None = None
        self.tid = 0
        self.entry_errors: dict[str, int] = {}
        self.no_reply = 0  # requests the codec answered with "no reply": refused with EIO
        self.ring_counters: dict = {}
        self.ring_settings: dict = {}
        self.registration: dict | None = None  # pinned: the pool as fdinfo shows it
        self.dead_entries = 0

    def stats(self) -> QueueStatistics:
        ring = self.ring
        if ring is not None:
            # Racy reads of plain counters, fine for a snapshot.
            self.ring_counters = ring.counters() or self.ring_counters
            self.ring_settings = ring.settings() or self.ring_settings
        codec = self.counters()
        return {
            "qid": self.qid,
            "cpu": self.cpu,
            "affinity": self.affinity,
            "affinity_error": self.affinity_error,
            "sched": self.policy,
            "requests": codec["requests"],
            "errors": codec["errors"],
            "ops": codec["ops"],
            "ring": dict(self.ring_settings, **self.ring_counters),
            "registration": self.registration,
            "entry_errors": dict(self.entry_errors),
            "dead_entries": self.dead_entries,
            "no_reply": self.no_reply,
            "failure": repr(self.failure) if self.failure else None,
            "native": self.native.counters() if self.native else None,
        }

    def counters(self) -> dict[str, Any]:
        """What the ring carried, as Codec.counters(): the codec's and the native path's."""
        if self.native is None:
            return self.codec.counters()
        return merge_counters([self.codec.counters(), self.native.codec_counters()])


# Where uring's own design puts its threads (recorded as the placement's `design`).
AFFINITY_DESIGN = "each queue thread on its queue's CPU (affinity=on)"

class UringTransport(Transport):
    name: ClassVar[str] = "uring"
    description: ClassVar[str] = (
        "FUSE-over-io_uring via liburing (cffi): one ring and thread per possible CPU"
    )
    options: ClassVar[dict[str, Option]] = {
        "depth": Option(positive_int, 8, "ring entries per queue"),
        "buffers": Option(
            str, "mapped", "mapped: per-entry, ordinary memory; mlock: per-entry, populated "
            "and mlocked; pool: one pool per queue (7.46); pinned: the pool registered with "
            "io_uring, pinned by the kernel (7.46)",
            choices=BUFFER_MODES,
        ),
        "zerocopy": Option(
            on_off, False, "on: zero-copy READ/WRITE via the client's lent pages (7.46, "
            "buffers=pool|pinned, CAP_SYS_ADMIN)",
        ),
        "datapath": DATAPATH_OPTION,
        "affinity": Option(on_off, True, "each queue thread's CPU affinity is its queue's CPU "
                           "(on|off; within cpus= when that excludes it)", formerly="pin"),
    }
    places_own_threads: ClassVar[bool] = True
    statistics_class = UringStatistics

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        self._depth = int(settings.get("depth", 8))
        self._buffers = str(settings.get("buffers", "mapped"))
        self._zero_copy = flag(settings, "zerocopy", False)
        self._affinity = flag(settings, "affinity", True)
        self._sched = ThreadPolicy(settings)  # resolved by check_available()
        self._placement = Placement(settings)
        self._datapath = str(settings.get("datapath", DEFAULT_DATAPATH))
        self._native_image: NativeImage | None = None
        self._queues: list[_Queue] = []
        self._devfuse_codec: Codec | None = None
        self._devfuse_thread: threading.Thread | None = None
        self._devfuse_failure: BaseException | None = None
        self._mountpoint: str | None = None
        self._conn_minor: int | None = None
        self._stopping = False
        self._stop_time: float | None = None
        # stop() may run in a signal handler on the thread that holds the lock.
        self._lock = threading.RLock()
        self._payload = 0
        self._memlock: dict | None = None
        self._locked_bytes = 0
        self._pinned_bytes = 0
        self._offer: KernelOffer | None = None
        self._enable_uring: str | None = None
        self._ready_via_ring: bool | None = None
        self._aborted_via_fusectl = False
        self._connection_end: str | None = None
        self._forced_wake = False
        self._teardown: dict[str, Any] = {}

    # -- availability ---------------------------------------------------------------------
    def own_placement(self) -> str | None:
        return AFFINITY_DESIGN if self._affinity else None

    def check_available(self) -> None:
        if not os.path.exists("/dev/fuse"):
            raise TransportUnavailable("/dev/fuse is missing: load the module with `modprobe fuse`")
        state = enable_uring()
        self._enable_uring = state
        if state is None:
            raise TransportUnavailable(
                "the fuse module has no enable_uring parameter: FUSE-over-io_uring needs "
                "Linux 6.14+ built with CONFIG_FUSE_IO_URING"
            )
        if state != "Y":
            raise TransportUnavailable(
                "enable_uring is N: run `echo Y > /sys/module/fuse/parameters/enable_uring` "
                "as root"
            )
        disabled = io_uring_disabled()
        if disabled == 2:
            raise TransportUnavailable(
                "io_uring is disabled (kernel.io_uring_disabled=2): run "
                "`sysctl kernel.io_uring_disabled=0` as root"
            )
        if disabled == 1 and not has_capability(CAP_SYS_ADMIN):
            group = _read_int(IO_URING_GROUP)
            if group is None or group not in os.getgroups():
                raise TransportUnavailable(
                    "io_uring is restricted (kernel.io_uring_disabled=1) and this user is "
                    "not in kernel.io_uring_group: run `sysctl kernel.io_uring_disabled=0` "
                    "as root, or run as root"
                )
        if os.geteuid() != 0 and not os.access("/dev/fuse", os.R_OK | os.W_OK):
            raise TransportUnavailable("/dev/fuse is not readable and writable by this user")
        if self._buffers not in BUFFER_MODES:
            raise TransportUnavailable(
                f"buffers={self._buffers} is not one of {', '.join(BUFFER_MODES)}"
            )
        if self._zero_copy and self._buffers not in POOL_MODES:
            raise TransportUnavailable(
                f"zerocopy=on needs a pool: use buffers=pool or buffers=pinned, not "
                f"buffers={self._buffers}"
            )
        if self._zero_copy and not has_capability(CAP_SYS_ADMIN):
            raise TransportUnavailable(
                "zerocopy=on needs CAP_SYS_ADMIN (the kernel refuses zero-copy queues to "
                "other servers with EPERM): run the server as root, or use zerocopy=off"
            )
        if self._buffers in POOL_MODES or self._zero_copy:
            self._require_bufpool()
        self._sched.resolve()

    def _mode_words(self) -> str:
        return f"buffers={self._buffers}" + (",zerocopy=on" if self._zero_copy else "")

    def _require_bufpool(self) -> None:
        """Refuse pool modes before mounting when the kernel does not offer pools."""
        try:
            offer = kernel_offer()
        except (MountError, OSError, TimeoutError, RuntimeError) as e:
            raise TransportUnavailable(
                f"{self._mode_words()} needs FUSE_HAS_IO_URING_BUFPOOL, and whether this "
                f"kernel (Linux {os.uname().release}) offers it could not be read from a "
                f"throwaway mount: {e}"
            ) from e
        self._offer = offer
        if not offer.bufpool:
            raise TransportUnavailable(
                f"{self._mode_words()} needs FUSE-over-io_uring buffer pools (protocol 7.46, "
                f"Linux 7.3+), and this kernel ({offer.describe()}) does not offer "
                f"FUSE_HAS_IO_URING_BUFPOOL in FUSE_INIT (read from a throwaway mount "
                f"before mounting the export): run it in a 7.3 guest with "
                f"`ringside guest --kernel 7.3 -- ...`, or use buffers=mlock (user-space "
                f"locking) or buffers=mapped here"
            )

    # -- life cycle -----------------------------------------------------------------------
    def serve(self, export: Export, mountpoint: str, on_ready: Callable[[], None]) -> None:
        self.check_available()
        mountpoint = os.path.abspath(mountpoint)
        cpus = possible_cpus()
        init_codec = Codec(
            export, want_uring=True, max_write=MAX_WRITE, uring_zero_copy=self._zero_copy
        )
        self._devfuse_codec = init_codec
        self._payload = payload_size(init_codec.max_write, init_codec.max_pages)
        mlock = self._buffers == "mlock"
        if mlock:
            needed = len(cpus) * self._depth * (HEADER_BUFFER + self._payload)
            self._check_memlock(needed, len(cpus), HEADER_BUFFER + self._payload, "mlock")
        elif self._buffers == "pinned":
            # io_uring charges the registered pools (one slot per entry) to RLIMIT_MEMLOCK.
            needed = len(cpus) * self._depth * self._payload
            self._check_memlock(needed, len(cpus), self._payload, "pinned")
        else:
            needed = 0
        arenas: list[Arena] = []
        wake_fds: list[int] = []
        fd = -1
        try:
            try:
                for _ in cpus:
                    arenas.append(Arena(self._depth, self._payload, self._buffers))
            except OSError as e:
                if mlock and e.errno in (errno.ENOMEM, errno.EPERM, errno.EAGAIN):
                    raise TransportUnavailable(
                        f"buffers=mlock: mlock of {needed} bytes failed ({e.strerror}); "
                        f"{self._memlock_fix(needed)}"
                    ) from e
                raise
            self._locked_bytes = locked_bytes()
            for _ in cpus:
                wake_fds.append(os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
            fd = mounting.mount_devfuse(mountpoint, max_read=MAX_WRITE)
            with self._lock:
                self._mountpoint = mountpoint
                entry = mounting.find_mount(mountpoint)
                self._conn_minor = entry.minor if entry is not None else None
            try:
                self._run(export, fd, mountpoint, cpus, arenas, wake_fds, on_ready)
            finally:
                self._shutdown()
        finally:
            self._unmount_ours()
            if self._native_image is not None:
                self._native_image.close()
            if fd >= 0:
                os.close(fd)
            for wfd in wake_fds:
                os.close(wfd)
            if all(q.thread is None or not q.thread.is_alive() for q in self._queues):
                for arena in arenas:
                    arena.close()
            # else: a ring thread we could not join might still touch its buffers: leak them.
        failures = [q.failure for q in self._queues if q.failure is not None]
        if self._devfuse_failure is not None:
            failures.append(self._devfuse_failure)
        if failures:
            raise UringError(f"uring transport failed: {failures[0]!r}") from failures[0]

    def stop(self) -> None:
        if not self._stopping:
            self._stop_time = time.monotonic()
        self._stopping = True
        self._unmount_ours()

    def connection_end(self) -> str | None:
        # Our own fusectl abort (stop() with a client holding the file) is no connection
        # ending under us.
        return None if self._aborted_via_fusectl else self._connection_end

    def statistics(self) -> UringStatistics:
        per_queue = [q.stats() for q in self._queues]
        ring_counts = [q.counters() for q in self._queues]
        natives = [q.native for q in self._queues if q.native is not None]
        dev = self._devfuse_codec.counters() if self._devfuse_codec else None
        ring_total = merge_counters(ring_counts)
        dev_total = merge_counters([dev] if dev else [])
        total = merge_counters(ring_counts + ([dev] if dev else []))
        negotiated = self._devfuse_codec.negotiated if self._devfuse_codec else None
        settings = {
            "depth": self._depth,
            "buffers": self._buffers,
            "zerocopy": "on" if self._zero_copy else "off",
            "affinity": "on" if self._affinity else "off",
            **self._sched.settings(),
            "datapath": self._datapath,
            "queues": len(self._queues),
            "threads": len(self._queues) + 1,
            "header_buffer": HEADER_BUFFER,
            "payload_buffer": self._payload,
            "max_write": MAX_WRITE,
            "negotiated": negotiated.as_dict() if negotiated else None,
        }
        return UringStatistics.of_codecs(
            self.name,
            dict(self.settings),
            settings,
            total,
            device=dev_total,
            ring=ring_total,
            per_queue=per_queue,
            locked_bytes=self._locked_bytes,
            pinned_bytes=self._pinned_bytes,
            memlock=self._memlock,
            pinning=PINNING[self._buffers],
            buffers=_buffer_totals(per_queue),
            kernel_offer=self._offer.as_dict() if self._offer else None,
            enable_uring=self._enable_uring,
            first_request_via_ring=self._ready_via_ring,
            teardown=dict(self._teardown),
            native=native_totals(natives) if natives else None,
            sched_guard=self._sched.guard_counters(),
        )

    # -- setup ----------------------------------------------------------------------------
    def _check_memlock(self, needed: int, queues: int, per_entry: int, mode: str) -> None:
        check = memlock_check(needed)
        self._memlock = check.as_dict()
        if not check.fits:
            what = (
                "locked memory" if mode == "mlock"
                else "memory pinned by io_uring (charged to RLIMIT_MEMLOCK)"
            )
            raise TransportUnavailable(
                f"buffers={mode} needs {needed} bytes of {what} ({queues} queues x "
                f"{self._depth} entries x {per_entry} bytes) but "
                f"RLIMIT_MEMLOCK is {check.limit} bytes ({check.limit // 1024} KiB, "
                f"{check.already_locked} bytes already locked); {self._memlock_fix(needed)}"
            )

    def _memlock_fix(self, needed: int) -> str:
        kib = -(-needed // 1024)
        return (
            f"raise the limit with `ulimit -l {kib}` (KiB) or `ulimit -l unlimited`, or run "
            "with CAP_IPC_LOCK (root has it), or lower depth, or use buffers=mapped"
        )

    def _run(
        self,
        export: Export,
        fd: int,
        mountpoint: str,
        cpus: list[int],
        arenas: list[Arena],
        wake_fds: list[int],
        on_ready: Callable[[], None],
    ) -> None:
        codec = self._devfuse_codec
        assert codec is not None
        if self._stopping or not devloop.answer_init(fd, codec, _SETUP_TIMEOUT):
            return
        neg = codec.negotiated
        assert neg is not None
        if not neg.uring:
            state = enable_uring()
            cause = (
                f"enable_uring is {state}: run `echo Y > "
                "/sys/module/fuse/parameters/enable_uring` as root"
                if state != "Y"
                else f"the kernel (FUSE protocol 7.{neg.kernel_minor}) did not offer "
                "FUSE_OVER_IO_URING in FUSE_INIT"
            )
            raise TransportUnavailable(f"FUSE-over-io_uring was not negotiated: {cause}")
        if (self._buffers in POOL_MODES or self._zero_copy) and not neg.uring_bufpool_offered:
            # The probe said yes; the export's own connection says no: still no fallback.
            raise TransportUnavailable(
                f"{self._mode_words()}: the kernel (FUSE protocol 7.{neg.kernel_minor}) did "
                "not offer FUSE_HAS_IO_URING_BUFPOOL in this mount's FUSE_INIT"
            )
        required = payload_size(neg.max_write, neg.max_pages)
        if required > self._payload:
            raise UringError(f"negotiated payload {required} exceeds buffers of {self._payload}")

        self._devfuse_thread = threading.Thread(
            target=self._devfuse_worker, args=(fd, codec), name="uring-devfuse", daemon=True
        )
        self._devfuse_thread.start()
        if self._datapath == "native":
            self._native_image = NativeImage(export)
        for qid, cpu in enumerate(cpus):
            qcodec = Codec(
                export, want_uring=True, max_write=MAX_WRITE, uring_zero_copy=self._zero_copy
            )
            qcodec.adopt(neg)
            native = NativeDataPath(self._native_image) if self._native_image else None
            self._queues.append(_Queue(qid, cpu, arenas[qid], qcodec, wake_fds[qid], native))
        for q in self._queues:
            q.thread = threading.Thread(
                target=self._queue_worker, args=(q, fd), name=f"uring-q{q.qid}", daemon=True
            )
            q.thread.start()
        deadline = time.monotonic() + _SETUP_TIMEOUT
        for q in self._queues:
            if not q.registered.wait(max(0.0, deadline - time.monotonic())):
                raise UringError(f"queue {q.qid} did not register within {_SETUP_TIMEOUT}s")
            if q.failure is not None:
                raise UringError(f"queue {q.qid} failed to start: {q.failure}") from q.failure
        if self._buffers == "pinned" and not has_capability(CAP_IPC_LOCK):
            # io_uring charged every registered pool to this process (VmPin).
            self._pinned_bytes = pinned_bytes()
        self._sched.start_guard([(q.tid, q.policy or "") for q in self._queues])
        if self._stopping or not self._answering(mountpoint):
            return
        on_ready()
        self._wait_threads()

    def _answering(self, mountpoint: str) -> bool:
        # statfs always reaches the server; from this thread it lands on this CPU's queue.
        before = sum(q.codec.requests for q in self._queues)
        try:
            os.statvfs(mountpoint)
        except OSError:
            return False
        self._ready_via_ring = sum(q.codec.requests for q in self._queues) > before
        return not self._stopping

    # -- workers --------------------------------------------------------------------------
    def _queue_worker(self, q: _Queue, fd: int) -> None:
        name_os_thread()
        try:
            if self._affinity:
                try:
                    os.sched_setaffinity(0, self._placement.allowed({q.cpu}))
                except OSError as e:
                    # A possible but offline CPU: its queue still needs entries for the
                    # ring to become ready, it just never gets requests.
                    q.affinity_error = e.strerror
            q.affinity = sorted(os.sched_getaffinity(0))
            # idle: the scheduler treats a CPU running only SCHED_IDLE tasks as idle, so
            # the client our reply wakes stays on this CPU instead of being moved to the
            # other one (and its next request to the other queue) on every request.
            # batch: a woken SCHED_BATCH task never preempts the running one, so a client
            # on the queue's CPU keeps submitting until it blocks, and the queue thread
            # then answers the whole batch.
            q.policy = self._sched.apply()
            q.tid = threading.get_native_id()
            q.ring = Ring(q.qid, q.arena, fd, q.wake_fd, zero_copy=self._zero_copy)
            if q.native is not None:
                q.ring.q.native = q.native.struct
            q.ring_settings = q.ring.settings()
            if self._buffers == "pinned":
                q.registration = q.ring.registration()
                if not q.registration["pool_registered"]:
                    raise UringError(
                        f"queue {q.qid}: the ring's fdinfo does not list the pool "
                        f"({q.registration['pool_address']}, {q.arena.pool_size} bytes) "
                        f"among its UserBufs: {q.registration['user_bufs']}"
                    )
            q.ring.register()
            q.registered.set()
            self._ring_loop(q, q.ring)
        except BaseException as e:  # report, and take the mount down so serve() returns
            q.failure = e
            q.registered.set()
            self._unmount_ours()
        finally:
            ring = q.ring
            if ring is not None:
                q.ring_counters = ring.counters()
                q.ring = None
                ring.close()

    def _ring_loop(self, q: _Queue, ring: Ring) -> None:
        from transports.native import lib

        idx_bits = lib.RS_IDX_BITS
        idx_mask = (1 << idx_bits) - 1
        buf_mask = (1 << lib.RS_BUF_BITS) - 1
        size_shift = lib.RS_SIZE_SHIFT
        lent_bit = lib.RS_ZERO_COPY
        entry_error, woken = lib.RS_ENTRY_ERROR, lib.RS_WOKEN
        rq = ring.q
        reply_next = lib.rs_reply_next
        handle = q.codec.handle
        handle_lent = q.codec.handle_lent
        lent = ring.lent
        arena = q.arena
        in_headers = [h[: abi.IN_HEADER.size] for h in arena.headers]
        op_ins = [h[abi.URING_REQ_OP_IN_OFFSET : abi.URING_REQ_ENT_IN_OUT_OFFSET]
                  for h in arena.headers]
        payloads = arena.payloads
        empty = payloads[0][:0]
        depth = arena.depth
        eio = -errno.EIO
        v = lib.rs_next(rq)
        while True:
            if v >= 0:
                idx = v & idx_mask
                out = payloads[v >> idx_bits & buf_mask]
                if v & lent_bit and lent is not None:
                    # The data stays in the client's pages: the export moves it.
                    lent.entry = idx
                    v = reply_next(rq, idx, handle_lent(in_headers[idx], op_ins[idx], lent, out))
                    continue
                n = v >> size_shift
                result = handle(in_headers[idx], op_ins[idx], out[:n] if n else empty, out)
                if result is None:
                    # Replies cannot be skipped on the ring: the entry only comes back
                    # with its commit. The kernel sends no-reply ops via /dev/fuse.
                    q.no_reply += 1
                    result = eio
                v = reply_next(rq, idx, result)
                continue
            if v == entry_error:
                res = rq.last_res
                name = errno.errorcode.get(-res, str(res))
                q.entry_errors[name] = q.entry_errors.get(name, 0) + 1
                q.dead_entries += 1
                if res not in _TEARDOWN and not self._stopping:
                    print(
                        f"ringside: uring queue {q.qid} entry {rq.last_idx} failed: {name}",
                        file=sys.stderr,
                    )
                if q.dead_entries >= depth:
                    return
                v = lib.rs_next(rq)
                continue
            if v == woken:
                return
            res = rq.last_res
            raise UringError(f"queue {q.qid}: waiting for completions failed: {res}")

    def _devfuse_worker(self, fd: int, codec: Codec) -> None:
        name_os_thread()
        try:
            devloop.serve_requests(fd, codec)
            with self._lock:
                if not self._stopping:
                    self._connection_end = mounting.connection_end(
                        self._mountpoint, self._conn_minor
                    )
        except BaseException as e:
            self._devfuse_failure = e
            self._unmount_ours()

    # -- teardown -------------------------------------------------------------------------
    def _threads(self) -> list[threading.Thread]:
        threads = [q.thread for q in self._queues if q.thread is not None]
        if self._devfuse_thread is not None:
            threads.append(self._devfuse_thread)
        return threads

    def _wait_threads(self) -> None:
        """Serve until every thread ended: the connection went away."""
        while True:
            alive = [t for t in self._threads() if t.is_alive()]
            if not alive:
                return
            alive[0].join(0.5)  # a timeout keeps the main thread responsive to signals
            if self._stop_time is not None and time.monotonic() - self._stop_time > _STOP_GRACE:
                # stop() unmounted lazily, but open files keep the connection alive.
                self._abort_connection()
                return

    def _shutdown(self) -> bool:
        """Unmount, make every thread end, join them; True when all were joined."""
        self._sched.stop_guard()
        self._unmount_ours()
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for t in self._threads():
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads()):
            self._abort_connection()
            deadline = time.monotonic() + _JOIN_TIMEOUT
            for t in self._threads():
                t.join(max(0.0, deadline - time.monotonic()))
        if any(q.thread is not None and q.thread.is_alive() for q in self._queues):
            # Last resort: leave the rings' loops through their wake-up polls.
            self._forced_wake = True
            for q in self._queues:
                try:
                    os.eventfd_write(q.wake_fd, 1)
                except OSError:
                    pass
            deadline = time.monotonic() + _JOIN_TIMEOUT
            for t in self._threads():
                t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads() if t.is_alive()]
        self._teardown = {
            "aborted_via_fusectl": self._aborted_via_fusectl,
            "forced_wake": self._forced_wake,
            "threads_not_joined": stuck,
        }
        if stuck:
            print(f"ringside: uring threads did not end: {', '.join(stuck)}", file=sys.stderr)
        return not stuck

    def _abort_connection(self) -> None:
        """Abort our FUSE connection through fusectl (mounted for that if it is not)."""
        minor = self._conn_minor
        if minor is None:
            return
        with mounting.fusectl() as connections:
            if connections is None:
                return
            try:
                with open(os.path.join(connections, str(minor), "abort"), "w") as f:
                    f.write("1")
                self._aborted_via_fusectl = True
            except OSError:
                pass

    def _unmount_ours(self) -> None:
        with self._lock:
            path, minor = self._mountpoint, self._conn_minor
        mounting.unmount_connection(path, minor)


def _buffer_totals(per_queue: list[QueueStatistics]) -> BufferTotals:
    """The queues' buffer counters summed (slots_hwm: the largest of any queue), and the
    share of data-carrying READ/WRITE the kernel lent (zero-copy)."""
    from transports.builtin.uring.queue import BUFFER_COUNTERS

    total: dict[str, Any] = dict.fromkeys(BUFFER_COUNTERS, 0)
    for q in per_queue:
        ring = q.get("ring") or {}
        for name in BUFFER_COUNTERS:
            if name == "slots_hwm":
                total[name] = max(total[name], int(ring.get(name, 0)))
            else:
                total[name] += int(ring.get(name, 0))
    data = total["zc_requests"] + total["copied_requests"]
    total["zero_copy_share"] = total["zc_requests"] / data if data else None
    return total


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
