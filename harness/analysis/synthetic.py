"""Synthetic campaigns shaped like real ones, for tests and demonstrations.

Each run is a dict as harness.point.runner writes it (summary, server window, derived per-I/O
figures, host, git, and a fio json+ document with latency bins under fio_raw), with a
known throughput factor per transport so a comparison's answer is known in advance.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy

from harness.results import write_result
from harness.scenarios import ScenarioPoint
from transports.base import TransportUnavailable, transport_class
from transports.options import SpecError
from transports.placement import PLACEMENT_OPTIONS
from transports.spec import Spec

FIO_PERCENTILES = (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99)
SUMMARY_PERCENTILES = {50: "p50", 90: "p90", 99: "p99", 99.9: "p99.9"}


# Synthetic points are real scenario points, so labels match what the runner writes.
Point = ScenarioPoint


def default_points() -> list[Point]:
    base = {"rw": "randread", "bs": "4k", "ioengine": "psync", "direct": 1, "runtime": 2,
            "time_based": 1, "iodepth": 1, "numjobs": 1}
    points = [Point("randread-4k-qd1", base)]
    for numjobs in (1, 2):
        for iodepth in (1, 4, 16):
            sweep = {"iodepth": iodepth, "numjobs": numjobs}
            points.append(Point("randread-4k-sweep", {**base, "ioengine": "libaio", **sweep},
                                sweep))
    points.append(Point("seqread-1m", {**base, "rw": "read", "bs": "1m", "ioengine": "libaio",
                                       "iodepth": 8}))
    points.append(Point("randrw-4k", {**base, "rw": "randrw", "ioengine": "libaio",
                                      "iodepth": 4}))
    return points


def recorded_settings(spec: Spec) -> dict[str, Any]:
    """What a result records as its settings: every option of the transport (placement
    included) with its default, then the spec's own as written. A result lacking one
    would read as from before the option existed (harness/results/upgrade.py)."""
    try:
        cls = transport_class(spec.name)
    except (SpecError, TransportUnavailable):
        return spec.options()
    options = {**cls.options, **PLACEMENT_OPTIONS}
    return {**{key: option.default for key, option in options.items()}, **spec.options()}


def fio_bin(ns: int) -> int:
    """fio's log-linear histogram: 64 buckets per power of two (6 significant bits)."""
    if ns < 128:
        return int(ns)
    shift = int(ns).bit_length() - 7
    return (int(ns) >> shift) << shift


def _direction(rng: numpy.random.Generator, iops: float, latency_ns: float, bs: int,
               runtime_ms: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary direction, fio raw direction) for a lognormal latency around latency_ns."""
    samples = rng.lognormal(math.log(latency_ns), 0.35, size=4000)
    tail = rng.random(samples.size) < 0.01  # a slow 1% so the tail shows on a log axis
    samples[tail] *= rng.uniform(4, 20, size=int(tail.sum()))
    binned = numpy.array([fio_bin(int(v)) for v in samples])
    values, counts = numpy.unique(binned, return_counts=True)
    total_ios = int(iops * runtime_ms / 1000)
    pct = {f"{p:.6f}": int(numpy.percentile(binned, p, method="higher"))
           for p in FIO_PERCENTILES}
    clat = {"min": int(binned.min()), "max": int(binned.max()), "mean": float(samples.mean()),
            "stddev": float(samples.std()), "N": total_ios, "percentile": pct,
            "bins": {str(v): int(c) for v, c in zip(values, counts, strict=True)}}
    raw = {"io_bytes": total_ios * bs, "bw_bytes": int(iops * bs), "iops": iops,
           "runtime": runtime_ms, "total_ios": total_ios, "clat_ns": clat}
    summary = {
        "iops": iops, "bw_bytes": int(iops * bs), "io_bytes": total_ios * bs,
        "total_ios": total_ios, "runtime_ms": runtime_ms,
        "clat_ns": {**{name: pct[f"{p:.6f}"] for p, name in SUMMARY_PERCENTILES.items()},
                    "min": clat["min"], "mean": clat["mean"], "max": clat["max"]},
    }
    return summary, raw


def _bs_bytes(bs: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20}
    return int(bs[:-1]) * units[bs[-1]] if bs[-1] in units else int(bs)


def make_run(point: Point, spec: str, factor: float, rng: numpy.random.Generator, *,
             start: datetime, campaign: str, repetition: int, warmup: bool = False,
             base_iops: float = 20000.0, noise: float = 0.03,
             host: dict[str, Any] | None = None, git_commit: str = "0123456789ab" * 3,
             ) -> dict[str, Any]:
    """One result dict; throughput is base_iops * factor * lognormal(noise)."""
    read = Spec.read(spec)
    name = read.name
    settings = recorded_settings(read)
    policy = {"auto": "idle"}.get(str(settings.get("sched", "auto")),
                                   str(settings.get("sched", "auto")))
    fio = point.fio
    bs = _bs_bytes(fio["bs"])
    concurrency = fio.get("iodepth", 1) * fio.get("numjobs", 1)
    scale = min(concurrency, 4) ** 0.5 / (bs / 4096) ** 0.6
    iops = base_iops * factor * scale * float(rng.lognormal(0.0, noise))
    runtime_ms = fio.get("runtime", 2) * 1000
    directions = ("read", "write") if fio["rw"] in ("randrw", "rw", "readwrite") else (
        "write" if "write" in fio["rw"] else "read",)
    summary_dirs, raw_dirs = {}, {}
    for d in directions:
        share = iops / len(directions)
        latency = concurrency / share * 1e9 / len(directions)
        summary_dirs[d], raw_dirs[d] = _direction(rng, share, latency, bs, runtime_ms)
    total = sum(d["total_ios"] for d in summary_dirs.values())
    csw = 1.0 / factor ** 0.5
    cpu_us = 30.0 / factor
    window = {"seconds": runtime_ms / 1000, "ctxt_switches": int(total * csw),
              "voluntary_ctxt_switches": int(total * csw * 0.9),
              "nonvoluntary_ctxt_switches": int(total * csw) - int(total * csw * 0.9),
              "cpu_s": total * cpu_us / 1e6, "utime_s": total * cpu_us * 0.8 / 1e6,
              "stime_s": total * cpu_us * 0.2 / 1e6, "threads_exited": 0,
              # One serving thread, placed as the spec asks (auto: the guarded idle).
              "threads": [{"tid": 2, "name": name, "utime_s": total * cpu_us / 1e6,
                           "stime_s": 0.0, "voluntary": int(total * csw * 0.9),
                           "nonvoluntary": int(total * csw) - int(total * csw * 0.9),
                           "policy": policy,
                           "cpus": settings.get("cpus") or "0-1"}]}
    client_ctx = int(total * 1.02)
    end = start + timedelta(milliseconds=runtime_ms + 500)
    raw_job = {"jobname": point.label, "groupid": 0, "error": 0, "usr_cpu": 3.0,
               "sys_cpu": 8.0, "ctx": client_ctx,
               **{d: raw_dirs.get(d, {"total_ios": 0, "iops": 0.0}) for d in
                  ("read", "write", "trim")}}
    return {
        "kind": "run",
        "campaign": {"id": campaign, "repetition": repetition, "warmup": warmup},
        "scenario": {"name": point.scenario, "point": point.label, "sweep": point.sweep,
                     "fio": dict(fio)},
        "transport": {"spec": spec, "name": name, "settings": settings},
        "transport_stats": {"placement": {"sched": settings.get("sched", "auto"),
                                          "cpus": settings.get("cpus") or "all",
                                          "design": None}},
        "export": {"backing": "memory:268435456", "size": 268435456, "read_only": False,
                   "growable": False, "cache": "pagecache", "fill": "none"},
        "start": start.isoformat(),
        "end": end.isoformat(),
        "summary": {"directions": summary_dirs, "total_ios": total,
                    "client": {"usr_cpu_pct": 3.0, "sys_cpu_pct": 8.0, "ctx": client_ctx,
                               "jobs": 1},
                    "fio_version": "fio-3.33"},
        "server": {"pid": 1, "exit_code": 0, "window": window},
        "system": {"ctxt_delta": 3 * total},
        "derived": {"server_ctxsw_per_io": window["ctxt_switches"] / total,
                    "server_cpu_us_per_io": window["cpu_s"] * 1e6 / total,
                    "client_ctxsw_per_io": client_ctx / total,
                    "system_ctxsw_per_io": 3.0},
        "host": host or {"hostname": "devbox", "kernel": "6.18.0", "machine": "x86_64",
                         "cpu_model": "Synthetic CPU", "cpu_count": 2,
                         "fuse_enable_uring": "Y"},
        "versions": {"python": "3.11.7", "pyfuse3": "3.5.0", "libfuse": "3.14.0",
                     "liburing": "2.3", "fio": "fio-3.33"},
        "git": {"commit": git_commit, "dirty": False},
        "fio_raw": {"fio version": "fio-3.33", "jobs": [raw_job]},
    }


DEFAULT_FACTORS = {
    "pyfuse3": 1.0,
    "devfuse": 1.3,
    "uring:buffers=mapped": 2.0,
    "uring:buffers=pinned": 2.2,
}


def write_campaign(directory: str | Path, factors: dict[str, float] | None = None, *,
                   points: list[Point] | None = None, repetitions: int = 3,
                   warmup: bool = True, noise: float = 0.03, seed: int = 1,
                   campaign: str | None = None, paired: bool = False,
                   overrides: dict[str, Any] | None = None) -> Path:
    """Write a campaign: interleaved repetitions, one flagged warmup run per transport
    and point first (its throughput deliberately off, so including it would show).

    With `paired`, every transport draws the same noise in a repetition, so each
    point's ratio of geometric means is exactly the ratio of the factors. `overrides`
    (keyword arguments of make_run) apply to every run.
    """
    directory = Path(directory)
    factors = factors or DEFAULT_FACTORS
    points = points or default_points()
    rng = numpy.random.default_rng(seed)
    campaign = campaign or directory.name
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    plan = [(0, True)] * warmup + [(r, False) for r in range(1, repetitions + 1)]
    for repetition, is_warmup in plan:
        for point in points:
            state = rng.bit_generator.state
            for spec, factor in factors.items():
                if paired:
                    rng.bit_generator.state = state
                data = make_run(point, spec, factor * (0.5 if is_warmup else 1.0), rng,
                                start=when, campaign=campaign, repetition=repetition,
                                warmup=is_warmup, noise=noise, **(overrides or {}))
                write_result(directory, data)
                when += timedelta(seconds=3)
    return directory
