"""What the machine tells about a run: the server's threads, the system, the host.

The server's numbers come from /proc/PID/task/TID (per thread, because /proc/PID/status
counts the main thread only), snapshotted right before and right after fio while the
server is alive, so they cover the workload and not start-up or shutdown. They cover
every process the named server pids started (a peer run through /bin/sh serves from a
child); context switches of processes that ended inside the window are lost with them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness import REPO_DIR
from harness.point import proctree
from transports.placement import STAT_POLICY_NAMES
from transports.sysinfo import read_text, thread_ids

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ThreadStat:
    tid: int
    name: str
    voluntary: int
    nonvoluntary: int
    utime_s: float
    stime_s: float
    migrations: int | None = None  # se.nr_migrations, where the kernel exposes sched stats
    pid: int = 0  # the process the thread belongs to
    policy: str = "unknown"  # scheduling policy (normal, batch, idle, fifo, rr)
    cpus: str = "unknown"  # the CPUs it may run on, as the kernel lists them
    # read and write system calls and the bytes they moved (/proc/PID/task/TID/io; None
    # where it cannot be read): a peer's traffic on /dev/fuse shows here (transports/proofs.py)
    syscr: int | None = None
    syscw: int | None = None
    rchar: int | None = None
    wchar: int | None = None


@dataclass(frozen=True)
class ProcessSnapshot:
    pid: int
    monotonic: float
    threads: dict[int, ThreadStat]
    # Process-wide CPU (dead threads and reaped children included), by pid; empty for a
    # snapshot of one process's threads only.
    processes: dict[int, proctree.ProcStat] = field(default_factory=dict)
    rings: dict[int, int] = field(default_factory=dict)  # io_uring inode -> CQ tail


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def thread_stat(pid: int, tid: int) -> ThreadStat:
    base = f"/proc/{pid}/task/{tid}"
    name = _read(f"{base}/comm").rstrip("\n")
    status = _read(f"{base}/status")
    vol = int(re.search(r"^voluntary_ctxt_switches:\s*(\d+)", status, re.M).group(1))
    nonvol = int(re.search(r"^nonvoluntary_ctxt_switches:\s*(\d+)", status, re.M).group(1))
    stat = _read(f"{base}/stat")
    # The name in field 2 may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    policy, cpus = _placement(fields, status)
    return ThreadStat(
        tid, name, vol, nonvol, utime / CLOCK_TICKS, stime / CLOCK_TICKS, _migrations(base), pid,
        policy, cpus, *_io_counts(base),
    )


_IO_KEYS = ("syscr", "syscw", "rchar", "wchar")


def _io_counts(base: str) -> tuple[int | None, ...]:
    """A thread's read/write system calls and their bytes so far (None: not readable)."""
    try:
        io = _read(f"{base}/io")
    except OSError:
        return (None,) * len(_IO_KEYS)
    found = dict(re.findall(r"^(\w+):\s*(\d+)", io, re.M))
    return tuple(int(found[k]) if k in found else None for k in _IO_KEYS)


def _grown(after: int | None, before: int | None, born: bool) -> int | None:
    if after is None or (before is None and not born):
        return None
    return after - (before or 0)


def _placement(fields: list[str], status: str) -> tuple[str, str]:
    """A thread's policy (stat(5) field 41) and allowed CPUs (Cpus_allowed_list)."""
    policy = STAT_POLICY_NAMES.get(int(fields[38]), f"policy {fields[38]}")
    m = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.M)
    return policy, m.group(1) if m else "unknown"


def thread_placement(pid: int, tid: int) -> tuple[str, str]:
    """(policy, cpus) of one thread, read now."""
    base = f"/proc/{pid}/task/{tid}"
    stat = _read(f"{base}/stat")
    return _placement(stat[stat.rindex(")") + 2 :].split(), _read(f"{base}/status"))


class PlacementSampler:
    """Samples the policy and CPUs of every thread of the serving processes during the
    fio window, so a result says where its threads ran then (the starvation guard, or a
    server of its own accord, may change a thread's policy for a while)."""

    PERIOD_S = 0.25

    def __init__(self, pids: list[int]):
        self._pids = pids
        self.samples: dict[int, Counter[tuple[str, str]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="placement-sampler",
                                        daemon=True)

    def __enter__(self) -> PlacementSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        for pid in proctree.with_descendants(self._pids):
            for tid in thread_ids(pid):
                try:
                    seen = thread_placement(pid, tid)
                except (OSError, ValueError):
                    continue  # the thread exited while we read it
                self.samples.setdefault(tid, Counter())[seen] += 1

    def _run(self) -> None:
        while not self._stop.wait(self.PERIOD_S):
            self.sample()


def _migrations(base: str) -> int | None:
    # /proc/.../sched exists with CONFIG_SCHED_DEBUG only: absent means "not measurable".
    try:
        m = re.search(r"^se\.nr_migrations\s*:\s*(\d+)", _read(f"{base}/sched"), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def snapshot(pid: int) -> ProcessSnapshot:
    """Every live thread of `pid`; raises ProcessLookupError when the process is gone."""
    now = time.monotonic()
    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    threads = {}
    for tid in tids:
        try:
            threads[tid] = thread_stat(pid, tid)
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread exited while we were reading
    return ProcessSnapshot(pid, now, threads)


def snapshot_many(pids: list[int]) -> ProcessSnapshot:
    """The threads of several serving processes and of every process they started, as one.

    Thread ids are system-wide, so the threads of all processes share one dict. A peer
    run through /bin/sh serves from a child of the shell: its descendants count too.
    """
    snaps, processes, rings = [], {}, {}
    for pid in proctree.with_descendants(pids):
        try:
            snaps.append(snapshot(pid))
            processes[pid] = proctree.proc_stat(pid, CLOCK_TICKS)
        except (ProcessLookupError, FileNotFoundError):
            if pid in pids:
                raise ProcessLookupError(pid) from None
            continue  # a descendant that exited while we looked
        rings.update(proctree.ring_completions(pid))
    threads = {tid: t for snap in snaps for tid, t in snap.threads.items()}
    return ProcessSnapshot(pids[0], snaps[0].monotonic, threads, processes, rings)


def _process_cpu(before: ProcessSnapshot, after: ProcessSnapshot) -> dict[str, Any]:
    """CPU of the process tree between two snapshots, from process-wide counters.

    A process's own counters keep the time of its dead threads; its children's
    counters add the whole life of every child it reaped. A child that was already
    alive at `before` and reaped in between had its time before the window counted in
    `before`: that part is taken off again.
    """
    cpu = children = 0.0
    for pid, a in after.processes.items():
        b = before.processes.get(pid)
        cpu += a.cpu_s - (b.cpu_s if b else 0.0)
        children += a.children_cpu_s - (b.children_cpu_s if b else 0.0)
    exited = [p for p in before.processes if p not in after.processes]
    children -= sum(before.processes[p].cpu_s + before.processes[p].children_cpu_s
                    for p in exited)
    return {
        "processes": sorted(after.processes),
        "processes_exited": len(exited),
        "process_cpu_s": round(cpu, 6),
        "reaped_children_cpu_s": round(max(children, 0.0), 6),
    }


def delta(before: ProcessSnapshot, after: ProcessSnapshot,
          samples: dict[int, Counter[tuple[str, str]]] | None = None) -> dict[str, Any]:
    """Per-thread and summed differences; a thread born in between counts from zero.

    A thread that exited in between is lost (its counts leave /proc with it); their
    number is reported as `threads_exited` so such a window can be recognised. Each
    thread's policy and CPUs are those most often sampled in the window (`samples`), or
    else seen at its end; `policies` lists every policy sampled when there was more than one.
    """
    threads = []
    for tid, a in after.threads.items():
        b = before.threads.get(tid)
        seen = (samples or {}).get(tid) or Counter({(a.policy, a.cpus): 1})
        (policy, cpus), _ = seen.most_common(1)[0]
        policies = Counter()
        for (p, _c), n in seen.items():
            policies[p] += n
        threads.append(
            {
                "tid": tid,
                "name": a.name,
                "voluntary": a.voluntary - (b.voluntary if b else 0),
                "nonvoluntary": a.nonvoluntary - (b.nonvoluntary if b else 0),
                "utime_s": round(a.utime_s - (b.utime_s if b else 0.0), 6),
                "stime_s": round(a.stime_s - (b.stime_s if b else 0.0), 6),
                "migrations": None
                if a.migrations is None
                else a.migrations - ((b.migrations or 0) if b else 0),
                **{k: _grown(getattr(a, k), getattr(b, k) if b else None, b is None)
                   for k in _IO_KEYS},
                "new": b is None,
                "pid": a.pid,
                "policy": policy,
                "cpus": cpus,
                **({"policies": dict(policies)} if len(policies) > 1 else {}),
            }
        )
    tree = _process_cpu(before, after) if after.processes else None
    vol = sum(t["voluntary"] for t in threads)
    nonvol = sum(t["nonvoluntary"] for t in threads)
    utime = sum(t["utime_s"] for t in threads)
    stime = sum(t["stime_s"] for t in threads)
    cpu = utime + stime
    if tree is not None:
        # Process-wide counters also hold threads and children that ended in the window
        # (so cpu_s may exceed utime_s + stime_s, which sum the live threads only).
        cpu = tree["process_cpu_s"] + tree["reaped_children_cpu_s"]
    return {
        "seconds": round(after.monotonic - before.monotonic, 6),
        "voluntary_ctxt_switches": vol,
        "nonvoluntary_ctxt_switches": nonvol,
        "ctxt_switches": vol + nonvol,
        "utime_s": round(utime, 6),
        "stime_s": round(stime, 6),
        "cpu_s": round(cpu, 6),
        "cpu_migrations": None
        if any(t["migrations"] is None for t in threads)
        else sum(t["migrations"] for t in threads),
        "threads_exited": len(set(before.threads) - set(after.threads)),
        **(tree or {}),
        "ring_completions": proctree.ring_growth(before.rings, after.rings)
        if after.rings
        else None,
        "threads": threads,
    }


def system_ctxt() -> int:
    """Context switches since boot on all CPUs (/proc/stat `ctxt`)."""
    for line in _read("/proc/stat").splitlines():
        if line.startswith("ctxt "):
            return int(line.split()[1])
    raise RuntimeError("/proc/stat has no ctxt line")


def rusage_dict(ru: Any) -> dict[str, Any]:
    """A reaped child's whole-life rusage (all its threads, dead ones included)."""
    return {
        "utime_s": ru.ru_utime,
        "stime_s": ru.ru_stime,
        "voluntary_ctxt_switches": ru.ru_nvcsw,
        "nonvoluntary_ctxt_switches": ru.ru_nivcsw,
        "maxrss_kib": ru.ru_maxrss,
    }


def per_io(server: dict[str, Any], client: dict[str, Any], system: int, ios: int) -> dict:
    """The figures that compare transports independently of how long a run lasted."""
    if ios <= 0:
        return {}
    return {
        "server_ctxsw_per_io": server["ctxt_switches"] / ios,
        "server_cpu_us_per_io": server["cpu_s"] * 1e6 / ios,
        "client_ctxsw_per_io": client["ctx"] / ios,
        "system_ctxsw_per_io": system / ios,
    }


# -- host and versions -----------------------------------------------------------------
def _command(args: list[str], cwd: str | None = None) -> str | None:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, cwd=cwd, check=False)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def cpu_model() -> str | None:
    try:
        for line in _read("/proc/cpuinfo").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _params(directory: str) -> dict[str, str | None]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return {}
    return {name: read_text(os.path.join(directory, name)) for name in names}


def _meminfo_kib(field: str) -> int | None:
    try:
        m = re.search(rf"^{field}:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def host() -> dict[str, Any]:
    """Everything about the machine that can change a result besides the transport."""
    import resource

    uname = os.uname()
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    governors = sorted(
        {
            g
            for cpu in range(os.cpu_count() or 0)
            if (g := read_text(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"))
        }
    )
    fuse_params = _params("/sys/module/fuse/parameters")
    return {
        "hostname": uname.nodename,
        "kernel": uname.release,
        "kernel_version": uname.version,
        "kernel_cmdline": read_text("/proc/cmdline"),
        "machine": uname.machine,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_possible": read_text("/sys/devices/system/cpu/possible"),
        "cpu_governor": ",".join(governors) or None,
        "mem_total_kib": _meminfo_kib("MemTotal"),
        "fuse_enable_uring": fuse_params.get("enable_uring"),
        "fuse_parameters": fuse_params,
        "io_uring_sysctls": {
            name: read_text(f"/proc/sys/kernel/{name}")
            for name in ("io_uring_disabled", "io_uring_group")
        },
        "rlimit_memlock": {
            "soft": None if soft == resource.RLIM_INFINITY else soft,
            "hard": None if hard == resource.RLIM_INFINITY else hard,
        },
    }


def libfuse_version() -> str | None:
    """The libfuse3 that pyfuse3 links at run time, else the development package's."""
    name = ctypes.util.find_library("fuse3")
    if name:
        try:
            lib = ctypes.CDLL(name)
            lib.fuse_pkgversion.restype = ctypes.c_char_p
            return lib.fuse_pkgversion().decode()
        except (OSError, AttributeError):
            pass
    return _command(["pkg-config", "--modversion", "fuse3"])


def liburing_version() -> str | None:
    return _command(["pkg-config", "--modversion", "liburing"]) or _command(
        ["dpkg-query", "-W", "-f=${Version}", "liburing2"]
    )


def pyfuse3_version() -> str | None:
    try:
        import pyfuse3
    except ImportError:
        return None
    return getattr(pyfuse3, "__version__", None)


def versions(fio: str | None = None) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "pyfuse3": pyfuse3_version(),
        "libfuse": libfuse_version(),
        "liburing": liburing_version(),
        "fio": fio,
        "qemu_storage_daemon": (_command(["qemu-storage-daemon", "--version"]) or "").split(
            "\n"
        )[0]
        or None,
    }


def git() -> dict[str, Any]:
    cwd = str(REPO_DIR)
    commit = _command(["git", "rev-parse", "HEAD"], cwd=cwd)
    status = _command(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}
