"""Statistics for comparing transports over repetitions.

A transport's throughput over repetitions is summarised by its geometric mean, and two
transports are compared by the ratio of their geometric means with a 95% confidence
interval from Welch's t-interval on the log values. Log values make the interval a ratio
interval (symmetric in speed-up and slow-down) and Welch's form does not assume the two
transports vary alike. The Student t quantile is computed here rather than pulling in
scipy for one function.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
METHOD = (
    "ratio = geometric mean over repetitions / the baseline's; 95% CI by Welch's "
    "t-interval on log values; 'not significant' when the CI contains 1.0; "
    "p50/p99: fio's total I/O latency (submission + completion) where recorded"
)


def _t_pdf(x: float, df: float) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def t_cdf(x: float, df: float) -> float:
    """Student t CDF by Simpson's rule on the density, which is smooth enough that
    400 steps are accurate to about 1e-9 over the range a 95% interval uses."""
    if x < 0:
        return 1.0 - t_cdf(-x, df)
    n = 400
    h = x / n
    total = _t_pdf(0.0, df) + _t_pdf(x, df)
    for i in range(1, n):
        total += (4 if i % 2 else 2) * _t_pdf(i * h, df)
    return 0.5 + total * h / 3


@functools.lru_cache(maxsize=1024)
def t_quantile(p: float, df: float) -> float:
    """The p quantile (p > 0.5) of Student's t with `df` (possibly fractional) degrees."""
    if not 0.5 < p < 1 or not df > 0:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df > 0, got p={p}, df={df}")
    df = min(df, 1e7)  # beyond this the t is the normal to many digits
    # Newton's method from the normal quantile; the CDF is increasing and concave for
    # x > 0, so the iterates approach the root monotonically.
    x = statistics.NormalDist().inv_cdf(p)
    for _ in range(50):
        step = (t_cdf(x, df) - p) / _t_pdf(x, df)
        x -= step
        if abs(step) < 1e-10 * max(1.0, x):
            break
    return x


def _clean(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def _log_moments(values: Sequence[float]) -> tuple[float, float, int]:
    logs = [math.log(v) for v in values]
    n = len(logs)
    mean = sum(logs) / n
    var = sum((x - mean) ** 2 for x in logs) / (n - 1) if n > 1 else math.nan
    return mean, var, n


def geomean(values: Iterable[float]) -> float:
    vals = _clean(values)
    if not vals or min(vals) <= 0:
        return math.nan
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


@dataclass(frozen=True)
class Interval:
    """A geometric mean over repetitions and its 95% CI (nan bounds with one value)."""

    center: float
    low: float
    high: float
    n: int


def interval(values: Iterable[float]) -> Interval:
    vals = _clean(values)
    if not vals or min(vals) <= 0:
        return Interval(math.nan, math.nan, math.nan, len(vals))
    mean, var, n = _log_moments(vals)
    if n < 2:
        return Interval(math.exp(mean), math.nan, math.nan, n)
    half = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * math.sqrt(var / n)
    return Interval(math.exp(mean), math.exp(mean - half), math.exp(mean + half), n)


@dataclass(frozen=True)
class Ratio:
    """`value` = candidate / baseline with its 95% CI; `low`/`high` are nan when the
    repetitions are too few (fewer than two on a side) to estimate the spread."""

    value: float
    low: float
    high: float
    n: int
    n_baseline: int
    df: float

    @property
    def has_ci(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def significant(self) -> bool:
        return self.has_ci and not (self.low <= 1.0 <= self.high)

    def verdict(self, higher_is_better: bool = True) -> str:
        """pyperf's wording: '1.31x faster', '1.12x slower', 'not significant'."""
        if math.isnan(self.value):
            return "no data"
        if not self.has_ci:
            return f"{self.value:.2f}x (no CI)"  # one run on a side: no spread to judge
        if not self.significant:
            return "not significant"
        better = (self.value > 1) == higher_is_better
        factor = self.value if self.value > 1 else 1 / self.value
        return f"{factor:.2f}x {'faster' if better else 'slower'}"


def _welch(parts: Sequence[tuple[float, int]]) -> tuple[float, float]:
    """(variance, Welch-Satterthwaite df) of a sum of independent sample means,
    each given as (its variance, its sample size)."""
    var = sum(v for v, _ in parts)
    denom = sum(v * v / (n - 1) for v, n in parts)
    if var == 0 or denom == 0:
        # No spread at all: the df cannot be estimated; pooled df keeps the interval finite.
        return var, float(sum(n - 1 for _, n in parts))
    return var, var * var / denom


def ratio(candidate: Iterable[float], baseline: Iterable[float]) -> Ratio:
    """Ratio of geometric means, candidate over baseline, with Welch's log-scale 95% CI."""
    a, b = _clean(candidate), _clean(baseline)
    if not a or not b or min(a + b) <= 0:
        return Ratio(math.nan, math.nan, math.nan, len(a), len(b), math.nan)
    ma, va, na = _log_moments(a)
    mb, vb, nb = _log_moments(b)
    diff = ma - mb
    if na < 2 or nb < 2:
        return Ratio(math.exp(diff), math.nan, math.nan, na, nb, math.nan)
    var, df = _welch([(va / na, na), (vb / nb, nb)])
    half = t_quantile(0.5 + CONFIDENCE / 2, df) * math.sqrt(var)
    return Ratio(math.exp(diff), math.exp(diff - half), math.exp(diff + half), na, nb, df)


def geomean_ratio(pairs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> Ratio:
    """The geometric mean of several ratios (one per scenario point), with a 95% CI.

    Its log is the mean of the per-point log differences; their variances add (divided
    by k squared) and the df is Welch-Satterthwaite's over every sample involved.
    """
    diffs: list[float] = []
    parts: list[tuple[float, int]] = []
    ci = True
    for candidate, baseline in pairs:
        a, b = _clean(candidate), _clean(baseline)
        if not a or not b or min(a + b) <= 0:
            continue
        ma, va, na = _log_moments(a)
        mb, vb, nb = _log_moments(b)
        diffs.append(ma - mb)
        if na < 2 or nb < 2:
            ci = False
        else:
            parts += [(va / na, na), (vb / nb, nb)]
    k = len(diffs)
    if k == 0:
        return Ratio(math.nan, math.nan, math.nan, 0, 0, math.nan)
    center = sum(diffs) / k
    if not ci:
        return Ratio(math.exp(center), math.nan, math.nan, k, k, math.nan)
    var, df = _welch([(v / (k * k), n) for v, n in parts])
    half = t_quantile(0.5 + CONFIDENCE / 2, df) * math.sqrt(var)
    return Ratio(math.exp(center), math.exp(center - half), math.exp(center + half), k, k, df)
