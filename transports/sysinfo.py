"""Small facts read from /proc and /sys, shared by the transports, doctor and metrics."""

from __future__ import annotations

import os

ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"
IO_URING_DISABLED = "/proc/sys/kernel/io_uring_disabled"
POSSIBLE_CPUS = "/sys/devices/system/cpu/possible"


def read_text(path: str) -> str | None:
    """A small kernel file's stripped text, or None when it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def parse_cpu_list(text: str) -> list[int]:
    """`0-3,8,10-11` -> [0, 1, 2, 3, 8, 10, 11], as in sysfs and `taskset -c`."""
    cpus: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, _, hi = part.partition("-")
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"bad CPU list {text!r}: use e.g. 1 or 0-1 or 0,2") from None
    return cpus


def possible_cpus() -> list[int]:
    """The kernel makes one FUSE ring queue per possible CPU, indexed by CPU number."""
    raw = read_text(POSSIBLE_CPUS)
    return parse_cpu_list(raw) if raw else list(range(os.cpu_count() or 1))


def enable_uring() -> str | None:
    """The fuse module's enable_uring parameter ("Y"/"N"), None if it has none."""
    return read_text(ENABLE_URING)


def io_uring_disabled() -> int:
    """kernel.io_uring_disabled: 0 all may use io_uring, 1 restricted, 2 nobody."""
    raw = read_text(IO_URING_DISABLED)
    return int(raw) if raw and raw.isdigit() else 0


def has_capability(bit: int) -> bool:
    """Whether this process has capability `bit` in its effective set."""
    for line in (read_text("/proc/self/status") or "").splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split(":", 1)[1], 16) >> bit & 1)
    return False


def cpu_list_text(cpus: list[int]) -> str:
    """[0, 1, 2, 5] -> `0-2,5`: the kernel's own way of writing a CPU list."""
    parts: list[str] = []
    for cpu in sorted(set(cpus)):
        if parts and "-" not in parts[-1].split(",")[-1] and int(parts[-1]) == cpu - 1:
            parts[-1] = f"{cpu - 1}-{cpu}"
        elif parts and "-" in parts[-1] and int(parts[-1].split("-")[1]) == cpu - 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{cpu}"
        else:
            parts.append(str(cpu))
    return ",".join(parts)


def _parents() -> dict[int, int]:
    """pid -> parent pid for every process of the system."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        text = read_text(f"/proc/{name}/stat")
        if text:  # else it exited while we looked
            parents[int(name)] = int(text[text.rindex(")") + 2 :].split()[1])
    return parents


def with_descendants(roots: list[int]) -> list[int]:
    """`roots` and every live process descended from them, roots first."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found, queue = [], list(roots)
    while queue:
        pid = queue.pop(0)
        if pid in found:
            continue
        found.append(pid)
        queue.extend(sorted(children.get(pid, [])))
    return found


def thread_ids(pid: int) -> list[int]:
    """The live threads of a process (empty once it is gone)."""
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return []
