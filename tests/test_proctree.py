"""A server's CPU covers every process it starts: children, reaped children, rings."""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, fuse_usable, require, served
from harness.point import metrics, proctree

# A child of the shell that burns 0.4 s of CPU and exits.
_BURN = (f"{sys.executable} -c 'import time; e = time.process_time() + 0.4\n"
         "while time.process_time() < e: pass'")


def _wait_until_alone(pid: int, count: int) -> None:
    """Wait (the machine may be busy) until `pid` has `count` processes in its tree."""
    deadline = time.monotonic() + 30
    while len(proctree.with_descendants([pid])) != count:
        assert time.monotonic() < deadline, "the child did not start or end in time"
        time.sleep(0.02)


def test_descendants_of_a_shell_are_measured() -> None:
    # The shell forks the burning child in the background and stays its parent.
    proc = subprocess.Popen(["/bin/sh", "-c", f"{_BURN} & wait; read x"], stdin=subprocess.PIPE)
    try:
        _wait_until_alone(proc.pid, 2)
        before = metrics.snapshot_many([proc.pid])
        assert len(before.processes) == 2, "the shell and its child"
        _wait_until_alone(proc.pid, 1)
        time.sleep(0.1)  # the shell reaps it
        after = metrics.snapshot_many([proc.pid])
    finally:
        proc.kill()
        proc.wait()
    d = metrics.delta(before, after)
    assert d["cpu_s"] >= 0.3
    # The child has exited in between: the shell reaped it, its time is in the shell's
    # children counters, minus what the first snapshot had already counted.
    assert d["processes_exited"] == 1 and d["reaped_children_cpu_s"] >= 0.3


def test_children_started_and_reaped_inside_the_window_count() -> None:
    proc = subprocess.Popen(["/bin/sh", "-c", f"read x; {_BURN}; read y"],
                            stdin=subprocess.PIPE)
    try:
        time.sleep(0.05)
        before = metrics.snapshot_many([proc.pid])
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        _wait_until_alone(proc.pid, 2)
        _wait_until_alone(proc.pid, 1)
        time.sleep(0.1)  # the shell reaps it
        after = metrics.snapshot_many([proc.pid])
    finally:
        proc.kill()
        proc.wait()
    d = metrics.delta(before, after)
    assert d["processes"] == [proc.pid] and d["processes_exited"] == 0
    assert d["cpu_s"] >= 0.3 and d["reaped_children_cpu_s"] >= 0.3
    # Only the shell's own threads are alive: per-thread sums alone would say ~0.
    assert d["utime_s"] + d["stime_s"] < 0.1


def test_ring_growth_wraps_at_32_bits() -> None:
    assert proctree.ring_growth({}, {7: 5}) == 5
    assert proctree.ring_growth({7: (1 << 32) - 2}, {7: 3}) == 5
    assert proctree.ring_growth({7: 9, 8: 4}, {7: 9}) == 0  # a ring gone in between


@pytest.mark.mount
def test_ring_completions_count_the_requests_a_uring_server_received(mountfile) -> None:
    with served("uring", mountfile, "memory:16M") as server:
        pid = int(server.ready_line.rsplit("server pids ", 1)[1].split(")")[0].split(",")[0])
        before = proctree.ring_completions(pid)
        assert before, "the uring server holds its rings as io_uring fds"
        fd = os.open(mountfile, os.O_RDONLY | os.O_DIRECT)
        try:
            buf = mmap.mmap(-1, 4096)
            for i in range(100):
                os.preadv(fd, [buf], i * 4096)
        finally:
            os.close(fd)
        grown = proctree.ring_growth(before, proctree.ring_completions(pid))
        assert 100 <= grown < 150


@pytest.mark.mount
def test_external_peer_through_a_shell_reports_its_childs_cpu(tmp_path: Path) -> None:
    require(fuse_usable())
    # `& wait` keeps /bin/sh as the parent: the serving process is its child, not itself.
    command = (f"external:{sys.executable} -m harness serve {{mountpoint}} -t devfuse "
               "--backing file:{image} & wait")
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", "randread-4k-qd1", "-t", command,
         "--backing", "memory:32M", "--runtime", "1", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(Path(proc.stdout.split()[-1]).read_text())
    window = data["server"]["window"]
    shell = data["server"]["measured_pids"][0]
    assert len(window["processes"]) >= 2 and window["processes"][0] == shell
    ios = data["summary"]["total_ios"]
    assert ios > 0
    # Our devfuse server spends well over a microsecond of CPU per request.
    assert window["cpu_s"] * 1e6 / ios > 1.0
    assert data["derived"]["server_cpu_us_per_io"] > 1.0
    assert sum(t["pid"] != shell for t in window["threads"]) >= 1
