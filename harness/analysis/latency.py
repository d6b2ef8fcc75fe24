"""Completion latency from fio's json+ output kept verbatim in each result (fio_raw).

fio's json+ output holds, per job and direction, `clat_ns.bins`: {latency_ns: count}
over its log-linear histogram, and `clat_ns.percentile`: {"99.990000": ns}. When the job
set `lat_percentiles=1`, `lat_ns` (submission + completion) has them too, and is used
instead: with libaio on FUSE much of an I/O's time is spent inside io_submit (slat),
which completion latency alone does not show.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy

# The percentiles the figures show, as fio names them.
PERCENTILES = {"p50": "50.000000", "p90": "90.000000", "p99": "99.000000",
               "p99.9": "99.900000", "p99.99": "99.990000"}


KINDS = {"lat_ns": "I/O latency", "clat_ns": "completion latency"}


def kind(raw: dict[str, Any], direction: str) -> str:
    """'lat_ns' when fio kept total-latency bins (lat_percentiles=1), else 'clat_ns'."""
    for job in raw.get("jobs") or []:
        stats = job.get(direction, {})
        if stats.get("total_ios", 0) > 0 and stats.get("lat_ns", {}).get("bins"):
            return "lat_ns"
    return "clat_ns"


def _directions(raw: dict[str, Any], direction: str) -> list[dict[str, Any]]:
    key = kind(raw, direction)
    jobs = raw.get("jobs") or []
    return [job[direction][key] for job in jobs
            if job.get(direction, {}).get("total_ios", 0) > 0 and key in job[direction]]


def bins(raw: dict[str, Any], direction: str) -> Counter[int]:
    """The histogram {latency_ns: count}, summed over the jobs of one result."""
    total: Counter[int] = Counter()
    for clat in _directions(raw, direction):
        for ns, count in (clat.get("bins") or {}).items():
            total[int(ns)] += int(count)
    return total


def cdf(histogram: Counter[int]) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(latency_ns ascending, fraction of I/Os at or below it)."""
    if not histogram:
        return numpy.array([]), numpy.array([])
    values = numpy.array(sorted(histogram), dtype=float)
    counts = numpy.array([histogram[int(v)] for v in values], dtype=float)
    return values, numpy.cumsum(counts) / counts.sum()


def percentile_from_bins(histogram: Counter[int], p: float) -> float:
    values, fractions = cdf(histogram)
    if not values.size:
        return float("nan")
    index = int(numpy.searchsorted(fractions, p / 100.0, side="left"))
    return float(values[min(index, values.size - 1)])


def percentiles(raw: dict[str, Any], direction: str) -> dict[str, float]:
    """{'p50': ns, ..., 'p99.99': ns}: fio's own figures for a single job (group
    reporting), else computed from the summed histogram."""
    clats = _directions(raw, direction)
    if len(clats) == 1 and clats[0].get("percentile"):
        pct = clats[0]["percentile"]
        if all(key in pct for key in PERCENTILES.values()):
            return {name: float(pct[key]) for name, key in PERCENTILES.items()}
    histogram = bins(raw, direction)
    return {name: percentile_from_bins(histogram, float(key)) for name, key in
            PERCENTILES.items()}
