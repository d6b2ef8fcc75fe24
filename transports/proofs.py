"""The proofs a result must pass: that a run used what its transport claims.

A transport's statistics class (transports/statistics.py) lists the proofs that apply to
its run in `checks()`; the runner runs them on the statistics it read back from the
server, with a `ProofContext` of what it measured itself, and refuses the result when one
fails. Each proof returns the record a result keeps under `checks`: `name`, `ok`,
`reason` and its figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transports.statistics import (
        DevfuseStatistics,
        LibfuseStatistics,
        QsdStatistics,
        TransportStatistics,
        UringStatistics,
    )

DATA_OPS = ("READ", "WRITE")  # the requests that carry data
RING_MIN_SHARE = 0.99  # of READ/WRITE carried by the ring (of fio's I/Os, for a peer)
ZERO_COPY_MIN_SHARE = 0.99  # of data-carrying READ/WRITE lent by the kernel, for zerocopy
NATIVE_MIN_SHARE = 0.99  # of READ/WRITE answered by the compiled helper, for datapath=native


@dataclass(frozen=True)
class ProofContext:
    """What the runner measured beside the transport's own counters: the serving
    processes over the fio window (metrics.delta: `ring_completions`, ...) and the I/Os
    fio issued."""

    window: dict[str, Any] = field(default_factory=dict)
    fio_ios: int = 0
    fio_bytes: int = 0  # the data fio read and wrote


def run_proofs(stats: TransportStatistics, context: ProofContext) -> list[dict[str, Any]]:
    """Every proof the statistics declare, in their order, passed or not."""
    return [proof(stats, context) for proof in stats.checks()]


def ring_share(stats: TransportStatistics, context: ProofContext) -> dict[str, Any]:
    """A transport with a ring must have carried >= 99% of the data requests on it; one
    that counted nothing on its ring carried nothing (a silent fallback to /dev/fuse)."""
    ring = stats.data_requests(DATA_OPS, ring=True) or 0
    total = stats.data_requests(DATA_OPS) or 0
    basis = "+".join(DATA_OPS)
    share = ring / total if total else 0.0
    ok = total > 0 and share >= RING_MIN_SHARE
    reason = (
        f"the ring carried {ring} of {total} {basis} requests ({share:.2%}); "
        f"at least {RING_MIN_SHARE:.0%} is required for a ring result"
    )
    return {
        "name": "ring_share",
        "ok": ok,
        "share": share,
        "ring": ring,
        "total": total,
        "basis": basis,
        "reason": reason,
    }


def mlock(stats: UringStatistics, context: ProofContext) -> dict[str, Any]:
    """buffers=mlock: the ring buffers locked (VmLck >= what they need)."""
    locked = int(stats.locked_bytes or 0)
    needed = int((stats.memlock or {}).get("needed_bytes") or 0)
    ok = needed > 0 and locked >= needed
    reason = (
        f"the server had {locked} bytes locked (VmLck) for {needed} bytes of ring buffers"
        + ("" if ok else "; an mlock result needs every buffer locked")
    )
    return {"name": "mlock", "ok": ok, "locked_bytes": locked, "needed_bytes": needed,
            "pinning": stats.pinning, "reason": reason}


def pinned(stats: UringStatistics, context: ProofContext) -> dict[str, Any]:
    """buffers=pinned: the kernel's pin, every queue's pool listed whole among the ring's
    registered buffers (fdinfo UserBufs) and, for a server without CAP_IPC_LOCK, charged
    to it (VmPin >= the pools)."""
    queues = stats.per_queue or []
    registered = [bool((q.get("registration") or {}).get("pool_registered")) for q in queues]
    memlock = stats.memlock or {}
    needed = int(memlock.get("needed_bytes") or 0)
    charged = not memlock.get("cap_ipc_lock", False)
    pinned = int(stats.pinned_bytes or 0)
    ok = bool(queues) and all(registered) and needed > 0 and (not charged or pinned >= needed)
    reason = (
        f"{sum(registered)} of {len(queues)} queues show their pool registered in the ring's "
        f"fdinfo (UserBufs)"
        + (f"; VmPin {pinned} bytes for {needed} bytes of pools" if charged
           else "; CAP_IPC_LOCK: nothing charged to VmPin")
        + ("" if ok else "; a pinned result needs every pool registered (and charged)")
    )
    return {"name": "pinned", "ok": ok, "queues_registered": sum(registered),
            "queues": len(queues), "pinned_bytes": pinned, "needed_bytes": needed,
            "charged": charged, "pinning": stats.pinning, "reason": reason}


def zerocopy(stats: UringStatistics, context: ProofContext) -> dict[str, Any]:
    """zerocopy=on: >= 99% of data-carrying READ/WRITE arrived with lent pages."""
    buffers = stats.buffers or {}
    zc, copied = int(buffers.get("zc_requests", 0)), int(buffers.get("copied_requests", 0))
    total = zc + copied
    share = zc / total if total else 0.0
    ok = total > 0 and share >= ZERO_COPY_MIN_SHARE
    reason = (
        f"{zc} of {total} data-carrying READ/WRITE requests arrived zero-copied "
        f"({share:.2%}); at least {ZERO_COPY_MIN_SHARE:.0%} is required for a zerocopy result"
    )
    return {"name": "zerocopy", "ok": ok, "share": share, "zero_copied": zc,
            "copied": copied, "zc_bytes": int(buffers.get("zc_bytes", 0)),
            "copied_bytes": int(buffers.get("copied_bytes", 0)), "reason": reason}


def native(stats: UringStatistics | DevfuseStatistics, context: ProofContext) -> dict[str, Any]:
    """datapath=native: the compiled helper answered >= 99% of READ/WRITE."""
    served = int((stats.native or {}).get("served", 0))
    total = stats.data_requests(DATA_OPS) or 0
    share = served / total if total else 0.0
    ok = total > 0 and share >= NATIVE_MIN_SHARE
    reason = (
        f"the native data path answered {served} of {total} READ+WRITE requests "
        f"({share:.2%}); at least {NATIVE_MIN_SHARE:.0%} is required for a native result"
    )
    return {"name": "native", "ok": ok, "share": share, "served": served, "total": total,
            "reason": reason}


def peer_ring(stats: LibfuseStatistics, context: ProofContext) -> dict[str, Any]:
    """A peer that counts no requests but says whether it serves through io_uring.

    Its rings' completions over the fio window (read from the kernel's fdinfo of every
    measured process) count the requests they carried: for an io_uring peer they must
    cover >= 99% of fio's I/Os (each O_DIRECT I/O is at least one request); a legacy
    peer must have carried none.
    """
    carried = int(context.window.get("ring_completions") or 0)
    ios = context.fio_ios
    if stats.ring_expected:
        ok = ios > 0 and carried >= RING_MIN_SHARE * ios
        reason = (f"the server's io_uring rings posted {carried} completions for {ios} fio "
                  f"I/Os; at least {RING_MIN_SHARE:.0%} of the I/Os must be carried by a ring")
    else:
        ok = carried == 0
        reason = f"the legacy server's io_uring rings posted {carried} completions (expected 0)"
    return {"name": "peer_ring", "ok": ok, "ring_completions": carried, "fio_ios": ios,
            "reason": reason}


QSD_DEVFUSE_MAX_SHARE = 0.25  # of fio's data through the main loop's read/write calls


def qsd_path(stats: QsdStatistics, context: ProofContext) -> dict[str, Any]:
    """qemu-storage-daemon's FUSE export: the requests took the path the setting names.

    Legacy (/dev/fuse): the daemon's main loop reads each request from /dev/fuse and
    writes its reply there, so every byte of data fio moved crosses its read and write
    calls (a WRITE's data in the request, a READ's in the reply): their bytes over the fio
    window must reach >= 99% of fio's. io_uring: each request arrives as a ring completion,
    its data in the ring entry's buffer, so the rings must post completions for >= 99% of
    fio's I/Os while the main loop's read and write calls move at most a quarter of fio's
    data (what they still move is the event loop's eventfd traffic, 8 bytes a call: about
    1% of 4 KiB I/O here). Ring completions alone prove neither: QEMU >= 10.2's event loop
    polls its file descriptors through an io_uring too, and counting write calls does not
    do either (the main loop writes eventfds several times per request).
    """
    ios, data = context.fio_ios, context.fio_bytes
    carried = int(context.window.get("ring_completions") or 0)
    thread = next((t for t in context.window.get("threads") or []
                   if t.get("tid") == stats.serving_tid), None)
    moved = None
    if thread is not None and thread.get("rchar") is not None and thread.get("wchar") is not None:
        moved = int(thread["rchar"]) + int(thread["wchar"])
    share = moved / data if moved is not None and data else None
    record: dict[str, Any] = {"name": "qsd_path", "io_uring": bool(stats.io_uring),
                              "ring_completions": carried, "fio_ios": ios,
                              "main_loop_bytes": moved, "fio_bytes": data,
                              "main_loop_share": share}
    if moved is None:
        return {**record, "ok": False, "reason": (
            f"the daemon's main thread ({stats.serving_tid}) was not measured, or its "
            "read/write bytes were not readable (/proc/PID/task/TID/io): the path its "
            "requests took is unproven")}
    said = (f"its main loop's read and write calls moved {moved} bytes for {data} bytes of "
            f"fio data ({share:.1%})" if share is not None else
            f"its main loop's read and write calls moved {moved} bytes, fio moved no data")
    if stats.io_uring:
        ok = ios > 0 and carried >= RING_MIN_SHARE * ios and share is not None and \
            share <= QSD_DEVFUSE_MAX_SHARE
        reason = (f"the daemon's io_uring rings posted {carried} completions for {ios} fio "
                  f"I/Os (at least {RING_MIN_SHARE:.0%} needed) and {said}; at most "
                  f"{QSD_DEVFUSE_MAX_SHARE:.0%} may cross /dev/fuse")
    else:
        ok = ios > 0 and share is not None and share >= RING_MIN_SHARE
        reason = (f"{said[0].upper()}{said[1:]}; at least {RING_MIN_SHARE:.0%} must, each "
                  f"request and reply crossing /dev/fuse; its io_uring rings posted {carried} "
                  "completions (the event loop's polls)")
    return {**record, "ok": ok, "reason": reason}
