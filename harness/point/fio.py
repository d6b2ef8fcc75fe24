"""Running fio: job files from scenario points, JSON output, and a parsed summary.

fio runs with `--output-format=json+` (json+ keeps the latency histogram bins) and
`group_reporting`, so each direction has one set of numbers even with numjobs > 1.
"""

from __future__ import annotations

import functools
import json
import mmap
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

from harness.scenarios import ScenarioPoint, size_bytes

DIRECTIONS = ("read", "write", "trim")
# Completion-latency percentiles reported in the summary: fio's key -> our name.
PERCENTILES = {
    "50.000000": "p50",
    "90.000000": "p90",
    "99.000000": "p99",
    "99.900000": "p99.9",
    "99.990000": "p99.99",
}
LATENCIES = ("clat_ns", "lat_ns")  # completion latency, and total (submission + completion)


class FioError(RuntimeError):
    """fio is missing, failed, or wrote output that cannot be read."""


class FioStopped(FioError):
    """fio was stopped because the run cannot go on; the message says why."""


def fio_path() -> str:
    path = shutil.which("fio")
    if path is None:
        raise FioError("fio is not installed: install it with `apt-get install fio`")
    return path


def fio_version() -> str:
    return _version_of(fio_path())


@functools.cache
def _version_of(path: str) -> str:
    # Once per process: a campaign asks before each of its runs.
    proc = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.strip()


def job_file(point: ScenarioPoint, filename: str, export_size: int) -> str:
    """The fio job file for one point against `filename`.

    The size is capped at the export size: a fixed-size export cannot grow, and fio
    would try to extend a file smaller than the size it was given.
    """
    options = dict(point.fio)
    wanted = size_bytes(options.get("size", export_size))
    options["size"] = min(wanted, export_size)
    lines = [
        f"# Ringside scenario point {point.label}",
        "[global]",
        f"filename={filename}",
        "group_reporting=1",
        # Jobs as threads of one fio process: killing fio (an aborted run) ends every
        # job; forked jobs start their own sessions and would outlive it.
        "thread=1",
        # Total latency as well as completion latency: with libaio on FUSE much of an
        # I/O's time is spent in submission, which clat leaves out.
        "clat_percentiles=1",
        "lat_percentiles=1",
        "",
        f"[{point.slug}]",
    ]
    lines += [f"{key}={value}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def run_fio(
    jobfile: str,
    output: str,
    timeout: float,
    preexec_fn: Callable[[], None] | None = None,
    watch: Callable[[], str | None] | None = None,
    watch_interval: float = 0.5,
) -> tuple[dict[str, Any], str]:
    """Run fio on `jobfile`; return its parsed JSON and anything it printed besides.

    `watch` is called every `watch_interval` s while fio runs; when it returns a reason,
    fio is killed and FioStopped raised with that reason. fio is never left running.
    """
    cmd = [fio_path(), "--output-format=json+", f"--output={output}", jobfile]
    deadline = time.monotonic() + timeout
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )
    try:
        while True:
            left = deadline - time.monotonic()
            try:
                stdout, stderr = proc.communicate(
                    timeout=max(0.0, min(left, watch_interval) if watch else left)
                )
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise FioError(
                        f"fio did not finish within {timeout:.0f} s: {' '.join(cmd)}"
                    ) from None
                reason = watch() if watch else None
                if reason:
                    raise FioStopped(reason) from None
    finally:
        if proc.returncode is None:  # stopped, timed out or interrupted: fio goes too
            proc.kill()
            proc.communicate()
    text = ""
    if os.path.exists(output):
        with open(output) as f:
            text = f.read()
    messages = (stderr + stdout).strip()
    if proc.returncode != 0:
        raise FioError(
            f"fio failed with exit code {proc.returncode}: {' '.join(cmd)}\n"
            + (messages or text.strip())[-4000:]
        )
    return parse_output(text), messages


def parse_output(text: str) -> dict[str, Any]:
    # fio may write warnings ("fio: ...") to the output file before the JSON document.
    start = text.find("{")
    if start < 0:
        raise FioError("fio wrote no JSON output")
    try:
        return json.loads(text[start:])
    except json.JSONDecodeError as e:
        raise FioError(f"fio's JSON output cannot be parsed: {e}") from None


def _latency(block: dict[str, Any]) -> dict[str, Any]:
    pct = block.get("percentile", {})
    latency = {ours: pct.get(theirs) for theirs, ours in PERCENTILES.items()}
    latency.update(min=block.get("min"), mean=block.get("mean"), max=block.get("max"))
    return latency


def _direction(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "iops": stats["iops"],
        "bw_bytes": stats["bw_bytes"],
        "io_bytes": stats["io_bytes"],
        "total_ios": stats["total_ios"],
        "runtime_ms": stats["runtime"],
        **{kind: _latency(stats.get(kind, {})) for kind in LATENCIES},
    }


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """Per direction (only those that did I/O): IOPS, bandwidth and completion latency;
    plus fio's own CPU use and context switches and the total I/O count."""
    jobs = raw.get("jobs") or []
    if not jobs:
        raise FioError("fio's JSON output has no jobs")
    for job in jobs:
        if job.get("error"):
            raise FioError(f"fio job {job.get('jobname')} reported error {job['error']}")
    directions: dict[str, Any] = {}
    for name in DIRECTIONS:
        # group_reporting leaves one entry per group; the runner writes a single group.
        stats = [job[name] for job in jobs if job.get(name, {}).get("total_ios", 0) > 0]
        if stats:
            directions[name] = _direction(stats[0]) if len(stats) == 1 else _merge(stats)
    total_ios = sum(d["total_ios"] for d in directions.values())
    return {
        "directions": directions,
        "total_ios": total_ios,
        "client": {
            "usr_cpu_pct": sum(job["usr_cpu"] for job in jobs),
            "sys_cpu_pct": sum(job["sys_cpu"] for job in jobs),
            "ctx": sum(job["ctx"] for job in jobs),
            "jobs": len(jobs),
        },
        "fio_version": raw.get("fio version"),
    }


def _merge(stats: list[dict[str, Any]]) -> dict[str, Any]:
    # Several groups: sum the rates; latency percentiles cannot be merged, keep the worst.
    parts = [_direction(s) for s in stats]
    merged = {
        key: sum(p[key] for p in parts) for key in ("iops", "bw_bytes", "io_bytes", "total_ios")
    }
    merged["runtime_ms"] = max(p["runtime_ms"] for p in parts)
    for kind in LATENCIES:
        merged[kind] = {key: max((p[kind][key] or 0) for p in parts) for key in parts[0][kind]}
    return merged


# -- O_DIRECT on a backing without FUSE -----------------------------------------------------
_PROBE_BYTES = 4096


def o_direct_refusal(path: str) -> str | None:
    """None when `path` takes an O_DIRECT read (an open and one aligned 4 KiB read, as
    fio's first I/O would be), else why not. FUSE exports always do (the export opens
    with direct_io); a backing put on the mountpoint itself may not (ramfs refuses it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError as e:
        return f"open(O_DIRECT) of {path} fails: {e.strerror}"
    buf = mmap.mmap(-1, _PROBE_BYTES)  # page-aligned, as O_DIRECT wants
    try:
        os.preadv(fd, [buf], 0)
    except OSError as e:
        return f"an O_DIRECT read of {path} fails: {e.strerror}"
    finally:
        buf.close()
        os.close(fd)
    return None


def plan_o_direct(options: dict[str, Any], refusal: str | None) -> tuple[dict[str, Any],
                                                                          dict[str, Any]]:
    """The fio options to run with on a backing that may refuse O_DIRECT, and the record
    of what was asked and done. The rule is the scenarios': direct=1 wherever the backing
    takes it; where it does not, direct=0, said in `note` (never silently)."""
    asked = bool(int(options.get("direct", 0)))
    record: dict[str, Any] = {"asked": asked, "accepted": refusal is None,
                              "used": asked and refusal is None, "refusal": refusal,
                              "note": None}
    if asked and refusal is not None:
        record["note"] = (f"fio ran with direct=0, not the scenario's direct=1: the backing "
                          f"refuses O_DIRECT ({refusal})")
        return {**options, "direct": 0}, record
    return options, record
