"""Warnings about a transport's repetitions at a point, in the spirit of `pyperf check`.

pyperf warns that a result "may be unstable" when the standard deviation is over 10% of
the mean, and counts outliers with Tukey's fences (1.5 IQR beyond the quartiles). Here the
values are one transport's throughput over the repetitions at one scenario point, and
every warning names the point and the transport and says what would help. Three checks:

- spread: coefficient of variation (sample standard deviation / mean) over 10%;
- outliers: runs beyond Tukey's fences that are also materially off the median;
- two groups: the runs split into two clusters far apart next to their own spread.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy

CV_LIMIT = 0.10  # pyperf's: a standard deviation over 10% of the mean
TUKEY_K = 1.5
# A run beyond the fences but within 5% of the median cannot move a ±10% answer much;
# tight runs (all within 0.1%) put the fences so close that any wobble would cross them.
OUTLIER_MATERIAL = 0.05
# Two groups: split the sorted values at the widest gap between neighbours that leaves at
# least three runs on each side; the runs are in two groups when that gap exceeds five
# pooled within-group standard deviations AND 10% of the median. On normal noise the
# first part alone flags about one set in eighty of six values (one in six hundred of
# ten, by simulation); two runs a side, or fewer than six runs, flag far more often, so
# no judgement is made on fewer. The second part keeps to gaps that matter for a ±10%
# answer. Two tight groups 10% apart are not chance but two states, e.g. client and
# server sharing a CPU in some runs and not in others.
BIMODAL_MIN_RUNS = 6
BIMODAL_MIN_GROUP = 3
BIMODAL_SPREADS = 5.0
BIMODAL_MATERIAL = 0.10

CPU_ADVICE = "bind fio (--fio-cpus) and the servers (--cpus) to CPUs"


@dataclass(frozen=True)
class StabilityWarning:
    """One kind of trouble at one point, naming every transport that shows it."""

    point: str  # the point's label, with its direction when it has several
    kind: str  # "spread", "outliers" or "two groups"
    transports: dict[str, str]  # label -> its figures
    advice: str

    @property
    def text(self) -> str:
        listed = ", ".join(f"{t} ({detail})" for t, detail in self.transports.items())
        return f"{self.point}: {HEADLINES[self.kind]} {listed}; {self.advice}"

    @property
    def key(self) -> tuple[str, str, frozenset[str]]:
        """What stays the same while more runs come in (the figures change)."""
        return self.point, self.kind, frozenset(self.transports)


HEADLINES = {
    "spread": f"throughput varies by more than {CV_LIMIT:.0%} of its mean (standard "
              "deviation / mean) on",
    "outliers": f"outlying runs (beyond {TUKEY_K} IQR from the quartiles, over "
                f"{OUTLIER_MATERIAL:.0%} off the median) on",
    "two groups": "runs fall into two groups far apart next to their own spread on",
}
ADVICE = {
    "spread": f"add runs (--reps auto), quiet the machine, or {CPU_ADVICE}",
    "outliers": "something else may have run meanwhile: rerun on a quiet machine, or add "
                "runs so one disturbance weighs less",
    "two groups": "they did not all measure the same thing (CPU placement? frequency?): "
                  f"{CPU_ADVICE} and rerun; a median of the mix means little",
}


def _format(value: float, unit: str) -> str:
    if unit == "IOPS":
        return f"{value / 1000:.1f}k IOPS" if value >= 1000 else f"{value:.0f} IOPS"
    return f"{value:.0f} {unit}"


def spread(values: Sequence[float]) -> float:
    """Coefficient of variation: sample standard deviation over the mean (nan below 2)."""
    if len(values) < 2:
        return math.nan
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean > 0 else math.nan


def outliers(values: Sequence[float]) -> list[float]:
    """Values beyond Tukey's fences and more than OUTLIER_MATERIAL off the median.

    Needs four values: with three, no value can lie beyond the fences of the quartiles
    interpolated between them."""
    if len(values) < 4:
        return []
    q1, median, q3 = numpy.percentile(values, [25, 50, 75])
    low, high = q1 - TUKEY_K * (q3 - q1), q3 + TUKEY_K * (q3 - q1)
    return [v for v in values
            if (v < low or v > high) and abs(v - median) > OUTLIER_MATERIAL * median]


def two_groups(values: Sequence[float]) -> tuple[list[float], list[float]] | None:
    """The two groups the values fall into, or None when they do not (see the rule above)."""
    if len(values) < BIMODAL_MIN_RUNS:
        return None
    v = sorted(values)
    n = len(v)
    split = max(range(BIMODAL_MIN_GROUP, n - BIMODAL_MIN_GROUP + 1),
                key=lambda i: v[i] - v[i - 1])
    lower, upper = v[:split], v[split:]
    gap = upper[0] - lower[-1]
    squares = sum((x - statistics.fmean(g)) ** 2 for g in (lower, upper) for x in g)
    pooled = math.sqrt(squares / (n - 2))
    if gap > BIMODAL_SPREADS * pooled and gap > BIMODAL_MATERIAL * statistics.median(v):
        return lower, upper
    return None


def warnings(samples: Mapping[tuple[str, str], Sequence[float]], unit: Mapping[str, str],
             ) -> list[StabilityWarning]:
    """Warnings over every (point, transport) sample of throughput values, one per point
    and kind of trouble. `unit` names each point's metric ("IOPS", "MiB/s")."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for (point, transport), raw in samples.items():
        values = [float(v) for v in raw if v is not None and not math.isnan(float(v))]
        if not values:
            continue
        u = unit.get(point, "")
        n = len(values)
        cv = spread(values)
        if cv > CV_LIMIT:
            found.setdefault((point, "spread"), {})[transport] = f"{cv:.0%} over {n} runs"
        odd = outliers(values)
        if odd:
            listed = ", ".join(_format(v, u) for v in sorted(odd))
            found.setdefault((point, "outliers"), {})[transport] = (
                f"{len(odd)} of {n}: {listed}, median {_format(statistics.median(values), u)}")
        groups = two_groups(values)
        if groups:
            lower, upper = groups
            found.setdefault((point, "two groups"), {})[transport] = (
                f"{len(lower)} near {_format(statistics.median(lower), u)}, "
                f"{len(upper)} near {_format(statistics.median(upper), u)}")
    return [StabilityWarning(point, kind, transports, ADVICE[kind])
            for (point, kind), transports in found.items()]
