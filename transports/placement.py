"""Where a server's threads run: the placement keys every transport spec accepts.

`sched=auto|batch|normal|idle` (with `idle_guard=on|off`) is the scheduling policy and
`cpus=LIST` the CPU affinity of every thread of the server's process tree, whoever wrote
the server, so that a comparison compares servers and not where their threads ran.
Ringside's uring and devfuse place their own threads as they start them
(`Transport.places_own_threads`); for every other server (pyfuse3, the peers) a
`ThreadPlacer` thread in the serving process places each thread of the server's process
tree the moment it sees it, threads started after the mount included (libfuse starts its
ring threads then), keeps each thread's CPUs within the list, and hands SCHED_IDLE
threads to the starvation guard (transports/sched/guard.c) as ours are.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from transports.options import Option, on_off
from transports.sysinfo import (
    cpu_list_text,
    parse_cpu_list,
    read_text,
    thread_ids,
    with_descendants,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from transports.sched.policy import SchedGuard

POLICIES = {"normal": os.SCHED_OTHER, "batch": os.SCHED_BATCH, "idle": os.SCHED_IDLE}
POLICY_NAMES = {policy: name for name, policy in POLICIES.items()}
# /proc/TID/stat field 41, as results record a thread's policy.
# Threads Ringside itself runs in a server's process (the placer in pyfuse3's, the guard
# in any): not the server's, so never placed, and left out of a run's placement.
PLACER_THREAD = "rs-placer"
RINGSIDE_THREADS = (PLACER_THREAD, "sched-guard")
STAT_POLICY_NAMES = {0: "normal", 1: "fifo", 2: "rr", 3: "batch", 5: "idle", 6: "deadline"}


def _cpus(raw: str) -> str:
    """A CPU list this machine has, written the kernel's way (`0-1`); empty: all CPUs."""
    if not raw.strip():
        return ""
    cpus = parse_cpu_list(raw)
    have = os.sched_getaffinity(0) | set(_online())
    missing = sorted(set(cpus) - have)
    if missing:
        raise ValueError(f"this machine has no CPU {cpu_list_text(missing)} "
                         f"(online: {cpu_list_text(sorted(have))})")
    return cpu_list_text(cpus)


def _online() -> list[int]:
    raw = read_text("/sys/devices/system/cpu/online")
    return parse_cpu_list(raw) if raw else list(range(os.cpu_count() or 1))


SCHED_OPTION = Option(
    str, "auto", "scheduling policy of every server thread: normal (SCHED_OTHER), batch "
    "(SCHED_BATCH: a woken server thread does not preempt the client), idle (SCHED_IDLE: "
    "a client woken by a reply stays on its CPU) or auto (idle where its guard may act: "
    "root, CAP_SYS_NICE or RLIMIT_NICE; else batch)",
    choices=("auto", *POLICIES), absent="normal",
)
IDLE_GUARD_OPTION = Option(
    on_off, True, "with sched=idle: move a starved server thread to SCHED_BATCH for a "
    "while (off: plain SCHED_IDLE, which starves under CPU load in its group)",
    absent="off",
)
CPUS_OPTION = Option(
    _cpus, "", "CPUs every server thread may run on, e.g. 1 or 0-1 (default: all); a "
    "thread the server pins itself stays pinned within them",
)
PLACEMENT_OPTIONS = {"sched": SCHED_OPTION, "idle_guard": IDLE_GUARD_OPTION,
                     "cpus": CPUS_OPTION}


class Placement:
    """A spec's placement: requested, then resolved to what threads get here."""

    def __init__(self, settings: dict[str, Any]):
        from transports.sched.policy import ThreadPolicy

        self.policy = ThreadPolicy(settings)
        raw = settings.get("cpus") or ""
        self.cpus: set[int] | None = set(parse_cpu_list(raw)) if raw else None

    def resolve(self) -> str:
        """The effective policy; refuses what cannot be served (TransportUnavailable)."""
        return self.policy.resolve()

    def apply_to_process(self) -> None:
        """Bound this process's CPUs: every thread started from now on inherits them."""
        if self.cpus is not None:
            os.sched_setaffinity(0, self.cpus)

    def allowed(self, wanted: set[int]) -> set[int]:
        """A thread's CPUs within the placement: its own affinity where it lies inside the
        list (a server's own design), the whole list otherwise."""
        if self.cpus is None:
            return wanted
        inside = wanted & self.cpus
        return inside or set(self.cpus)

    def describe(self) -> dict[str, Any]:
        """What was asked (`requested`: sched=auto stays auto) and what it meant here."""
        return {
            "requested": self.policy.requested,
            **self.policy.settings(),  # the effective `sched` and `idle_guard`
            "cpus": cpu_list_text(sorted(self.cpus)) if self.cpus else "all",
        }


class ThreadPlacer:
    """Places every thread of a server's process tree, from outside, until stop().

    `roots` gives the server's process ids (empty until it has started); every thread of
    them and of their descendants gets the policy when first seen, and the guard watches
    it under SCHED_IDLE. CPUs are checked at every look, since a server may bind a thread
    after starting it. The placer's own thread and the guard's are left alone: they are
    Ringside's, not the server's.
    """

    # Threads of known processes are listed every period (cheap); the process tree,
    # which takes a walk over all of /proc, every TREE_EVERY periods. A thread started
    # between two looks inherits its creator's placement meanwhile.
    PERIOD_S = 0.04
    TREE_EVERY = 25
    GUARD_CAPACITY = 1024

    def __init__(self, placement: Placement, roots: Callable[[], list[int]]):
        self.placement = placement
        self._roots = roots
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=PLACER_THREAD, daemon=True)
        self._seen: set[int] = set()
        self._skip: set[int] = set()
        self._guard: SchedGuard | None = None
        self._lock = threading.Lock()
        self._processes: list[int] = []
        self._looks = 0
        self.counters = {"threads": 0, "policy_set": 0, "cpus_set": 0, "errors": 0}
        self.last_error: str | None = None

    def start(self) -> None:
        policy = self.placement.policy
        if policy.policy == "idle" and policy.idle_guard:
            from transports.sched.policy import SchedGuard

            self._guard = SchedGuard([], capacity=self.GUARD_CAPACITY)
            self._guard.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._guard is not None:
            self._guard.stop()

    def place_now(self) -> None:
        """One look at the tree (also what the placer's thread does every period)."""
        with self._lock:
            roots = self._roots()
            if self._looks % self.TREE_EVERY == 0 or not set(roots) <= set(self._processes):
                self._processes = with_descendants(roots) if roots else []
            self._looks += 1
            for pid, tid in ((p, t) for p in self._processes for t in thread_ids(p)):
                if tid in self._skip:
                    continue
                if tid not in self._seen:
                    if self._ringside_thread(pid, tid):
                        self._skip.add(tid)
                        continue
                    self._seen.add(tid)
                    self.counters["threads"] += 1
                    self._set_policy(tid)
                self._bound_cpus(tid)

    def _ringside_thread(self, pid: int, tid: int) -> bool:
        if pid != os.getpid():
            return False
        if tid == threading.get_native_id():
            return True
        return (read_text(f"/proc/{pid}/task/{tid}/comm") or "") in RINGSIDE_THREADS

    def _run(self) -> None:
        from transports.base import name_os_thread

        name_os_thread()
        while not self._stop.is_set():
            try:
                self.place_now()
            except OSError as e:  # a look must never end the placing
                self._error(e)
            self._stop.wait(self.PERIOD_S)

    def _error(self, e: OSError) -> None:
        self.counters["errors"] += 1
        self.last_error = str(e)

    def _set_policy(self, tid: int) -> None:
        name = self.placement.policy.policy
        try:
            os.sched_setscheduler(tid, POLICIES[name], os.sched_param(0))
        except ProcessLookupError:
            return
        except OSError as e:
            self._error(e)
            return
        self.counters["policy_set"] += 1
        if name == "idle" and self._guard is not None and not self._guard.add(tid):
            self._error(OSError(f"the guard watches {self.GUARD_CAPACITY} threads at most"))

    def _bound_cpus(self, tid: int) -> None:
        if self.placement.cpus is None:
            return
        try:
            have = os.sched_getaffinity(tid)
            wanted = self.placement.allowed(have)
            if wanted != have:
                os.sched_setaffinity(tid, wanted)
                self.counters["cpus_set"] += 1
        except ProcessLookupError:
            return
        except OSError as e:
            self._error(e)

    def statistics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"placed_by": "ringside (from outside the server)",
                               **self.counters, "last_error": self.last_error}
        if self._guard is not None:
            out["sched_guard"] = self._guard.counters()
        return out
