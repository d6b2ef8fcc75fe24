"""Where serving threads run: their scheduling policy (`sched=`, shared by uring and
devfuse), sched=idle's starvation guard (guard.c: a C thread that moves a starved
SCHED_IDLE thread to SCHED_BATCH for a while) and devfuse's client following (follow.c:
a /dev/fuse reader binds itself to the CPU of a client that waits for each reply)."""

from __future__ import annotations

import os
import resource
from typing import Any

from transports.base import TransportUnavailable, flag
from transports.placement import IDLE_GUARD_OPTION, POLICIES, POLICY_NAMES, SCHED_OPTION
from transports.statistics import FollowTotals, GuardCounters
from transports.sysinfo import has_capability

__all__ = ["IDLE_GUARD_OPTION", "POLICIES", "POLICY_NAMES", "SCHED_OPTION"]
CAP_SYS_NICE = 23
PERIOD_NS = 10_000_000  # longer than a tick at HZ >= 100: a running thread's CPU time moves
HOLD_MIN_NS = 100_000_000
HOLD_MAX_NS = 10_000_000_000


def guard_unavailable() -> str | None:
    """Why the guard could not work in this process, or None: it reads each thread's
    /proc schedstat (CONFIG_SCHED_INFO), and moving a thread off SCHED_IDLE, which the
    kernel treats as nice 20, takes CAP_SYS_NICE or an RLIMIT_NICE allowing the nice
    value."""
    if not os.path.exists("/proc/thread-self/schedstat"):
        return "this kernel has no per-thread /proc schedstat (CONFIG_SCHED_INFO)"
    if has_capability(CAP_SYS_NICE):
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    if soft == resource.RLIM_INFINITY or soft >= 20 - os.getpriority(os.PRIO_PROCESS, 0):
        return None
    return ("this process has no CAP_SYS_NICE and RLIMIT_NICE does not allow nice 0 "
            "(`ulimit -e` is below 20), so it may not move a thread off SCHED_IDLE")


def guard_fix(why: str) -> str:
    """What makes the guard work, for the cause guard_unavailable() gave."""
    if "schedstat" in why:
        return "boot a kernel with CONFIG_SCHED_INFO"
    return ("raise the limit with `ulimit -e 20` (or a nice line in "
            "/etc/security/limits.conf), or run as root")


def resolve_sched(requested: str, idle_guard: bool) -> str:
    """The policy `sched=requested` means here: auto is idle where the guard can work,
    else batch; an explicit guarded idle the guard cannot protect is refused."""
    unguarded = guard_unavailable() if idle_guard else "idle_guard=off"
    if requested == "auto":
        return "batch" if unguarded else "idle"
    if requested == "idle" and idle_guard and unguarded:
        raise TransportUnavailable(
            f"sched=idle's guard could not work: {unguarded}: {guard_fix(unguarded)}, or "
            "use sched=batch "
            "(or idle_guard=off, which starves under CPU load)"
        )
    return requested


class ThreadPolicy:
    """A transport's `sched=` and `idle_guard=`: the policy its serving threads take, and
    the guard that watches them under SCHED_IDLE."""

    def __init__(self, settings: dict[str, Any]):
        self.requested = str(settings.get("sched", "auto"))
        self.idle_guard = flag(settings, "idle_guard", True)
        self.policy = self.requested  # resolve() makes it the effective one
        self._guard: SchedGuard | None = None

    def resolve(self) -> str:
        """Decide the effective policy (before any thread takes it); refuse what cannot be
        served (TransportUnavailable)."""
        self.policy = resolve_sched(self.requested, self.idle_guard)
        return self.policy

    def apply(self) -> str:
        """Give the calling thread the policy; returns the one it runs under now."""
        return apply_policy(self.policy)

    def start_guard(self, threads: list[tuple[int, str]]) -> None:
        """Guard those of the (tid, policy) threads that run SCHED_IDLE, if guarded."""
        tids = [tid for tid, policy in threads if policy == "idle"]
        if self.policy == "idle" and self.idle_guard and tids:
            self._guard = SchedGuard(tids)
            self._guard.start()

    def stop_guard(self) -> None:
        if self._guard is not None:
            self._guard.stop()

    def settings(self) -> dict[str, str]:
        guarded = self.policy == "idle" and self.idle_guard
        return {"sched": self.policy, "idle_guard": "on" if guarded else "off"}

    def guard_counters(self) -> GuardCounters | None:
        """What the guard did; None when no guard ran."""
        return self._guard.counters() if self._guard is not None else None


def apply_policy(name: str) -> str:
    """Give the calling thread policy `name` (normal: left as it is); returns the policy
    it runs under now."""
    if name != "normal":
        os.sched_setscheduler(0, POLICIES[name], os.sched_param(0))
    return POLICY_NAMES.get(os.sched_getscheduler(0), "other")


class SchedGuard:
    """Watches the given threads (Linux TIDs, of this process or another) until stop();
    `add()` hands it more, up to `capacity`, while it runs."""

    def __init__(self, tids: list[int], capacity: int = 0):
        from transports.native import ffi, lib

        self._lib = lib
        capacity = max(1, len(tids), capacity)
        self._threads = ffi.new("struct rs_guard_thread[]", capacity)
        for i, tid in enumerate(tids):
            self._threads[i].tid = tid
        self._guard = ffi.new("struct rs_guard *")
        self._guard.n = len(tids)
        self._guard.capacity = capacity
        self._guard.threads = self._threads
        self._guard.period_ns = PERIOD_NS
        self._guard.hold_min_ns = HOLD_MIN_NS
        self._guard.hold_max_ns = HOLD_MAX_NS
        self._guard.fallback_policy = os.SCHED_BATCH
        self._started = False

    def start(self) -> None:
        err = self._lib.rs_guard_start(self._guard)
        if err < 0:
            raise OSError(-err, f"sched=idle's guard did not start: {os.strerror(-err)}")
        self._started = True

    def add(self, tid: int) -> bool:
        """Watch one more thread; False when the guard is full."""
        return self._lib.rs_guard_add(self._guard, tid) == 0

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._lib.rs_guard_stop(self._guard)

    def counters(self) -> GuardCounters:
        """Per thread and in total: how often a thread was found starved (boosts), moved
        back (restores) and how long it spent on the fallback policy."""
        per_thread = []
        for i in range(self._guard.n):
            t = self._threads[i]
            per_thread.append({
                "tid": t.tid,
                "boosted": bool(t.boosted),
                "boosts": t.boosts,
                "restores": t.restores,
                "boosted_ms": t.boosted_ns / 1e6,
                "last_error": os.strerror(t.last_error) if t.last_error else None,
            })
        return {
            "period_ms": PERIOD_NS / 1e6,
            "hold_ms": [HOLD_MIN_NS / 1e6, HOLD_MAX_NS / 1e6],
            "fallback": "batch",
            "checks": self._guard.checks,
            "boosts": sum(t["boosts"] for t in per_thread),
            "restores": sum(t["restores"] for t in per_thread),
            "boosted_ms": sum(t["boosted_ms"] for t in per_thread),
            "per_thread": per_thread,
        }


FOLLOW_EVERY = 32  # requests between looks: a look reads the client's /proc stat
FOLLOW_COUNTERS = ("looks", "moves", "releases", "policy_changes")


class Follower:
    """One /dev/fuse reader's client following (struct rs_follow): bound to the client's
    CPU under `policy` while it waits for each request, let go under SCHED_OTHER while
    requests queue up."""

    def __init__(self, policy: str) -> None:
        from transports.native import ffi

        self.struct = ffi.new("struct rs_follow *")
        self.struct.every = FOLLOW_EVERY
        self.struct.follow_policy = POLICIES[policy]
        self.struct.queue_policy = os.SCHED_OTHER

    def counters(self) -> dict[str, Any]:
        f = self.struct
        return {
            **{name: int(getattr(f, name)) for name in FOLLOW_COUNTERS},
            "cpu": f.cpu if f.started else None,
            "last_error": os.strerror(f.last_error) if f.last_error else None,
        }


def follow_totals(followers: list[Follower]) -> FollowTotals:
    """Several readers' following: counters summed, and each reader's."""
    per_thread = [f.counters() for f in followers]
    total: dict[str, Any] = {name: sum(c[name] for c in per_thread) for name in FOLLOW_COUNTERS}
    return {"every": FOLLOW_EVERY, **total, "per_thread": per_thread}
