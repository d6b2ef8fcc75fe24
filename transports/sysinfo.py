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
