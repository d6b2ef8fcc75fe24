"""The processes a server started, and the io_uring rings they hold, read from /proc.

A peer is a program of someone else's: started through /bin/sh, it may fork its real
server as a child, or several. Its CPU time is that of the whole tree, so the runner
measures every descendant of the pids a transport names, not only the first one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from transports import sysinfo

_RING_LINK = "anon_inode:[io_uring]"


@dataclass(frozen=True)
class ProcStat:
    """Process-wide figures of /proc/PID/stat (all threads, dead ones included)."""

    pid: int
    ppid: int
    cpu_s: float  # utime + stime of the process
    children_cpu_s: float  # cutime + cstime: children it has reaped, whole lives


def proc_stat(pid: int, clock_ticks: int) -> ProcStat:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The name in field 2 may hold spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    ppid = int(fields[1])  # field 4 of stat(5)
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])  # fields 14-17
    return ProcStat(pid, ppid, (utime + stime) / clock_ticks, (cutime + cstime) / clock_ticks)


with_descendants = sysinfo.with_descendants


_CQ_TAIL = re.compile(r"^CqTail:\s*(\d+)", re.M)
_INO = re.compile(r"^ino:\s*(\d+)", re.M)


def ring_completions(pid: int) -> dict[int, int]:
    """Completions posted so far on each io_uring the process holds (inode -> CqTail).

    The kernel's CQ tail counts every completion the ring ever posted (modulo 2^32).
    A FUSE-over-io_uring server receives each request as one completion, so the growth
    of the tails over a window counts the requests the rings carried. Rings are keyed
    by inode, so one shared between processes counts once.
    """
    rings = {}
    base = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(base)
    except OSError:
        return rings
    for fd in fds:
        try:
            if os.readlink(f"{base}/{fd}") != _RING_LINK:
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = f.read()
        except OSError:
            continue  # closed while we looked
        tail, ino = _CQ_TAIL.search(info), _INO.search(info)
        if tail and ino:
            rings[int(ino.group(1))] = int(tail.group(1))
    return rings


def ring_growth(before: dict[int, int], after: dict[int, int]) -> int:
    """Completions posted between two readings, over rings alive at the second one."""
    return sum((tail - before.get(ino, 0)) % (1 << 32) for ino, tail in after.items())
