"""When a scenario point's answer is decided: every ratio to the baseline known within ±W.

`ringside campaign --reps auto` gives more rounds to the points not decided yet, and
`compare` names those that stayed undecided. Both judge the ratios `compare` computed
(harness.analysis.stats: ratio of geometric means with Welch's 95% CI on the logs);
nothing here computes a ratio or an interval of its own. (Only stats is imported, so
that harness.campaigns.interleaved can read the defaults without pulling in pandas.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.analysis import stats

if TYPE_CHECKING:
    from harness.analysis.compare import Comparison

DEFAULT_CI_WITHIN = 0.10  # a ratio is decided when its 95% CI lies within ±10% of it

# Why a campaign stopped giving a point rounds, as the manifest records it.
STOPPED = {
    "decided": "decided",
    "max_reps": "stopped at the --max-reps cap",
    "budget": "stopped when the time budget ran out",
    "no_results": "stopped: no results to judge",
}


def half_width(ratio: stats.Ratio | None) -> float:
    """How far the ratio's 95% CI reaches from the ratio, relative to it, on its wider
    side (the upper one, the interval being symmetric in log scale); inf without a CI."""
    if ratio is None or not ratio.has_ci or not ratio.value > 0:
        return math.inf
    return max(ratio.high / ratio.value - 1, 1 - ratio.low / ratio.value)


def within_text(width: float) -> str:
    return "no CI" if math.isinf(width) else f"±{width:.1%}"


@dataclass(frozen=True)
class PointDecision:
    point: str
    decided: bool
    widths: dict[str, float]  # transport label -> its ratio's half-width (widest direction)
    within: float
    runs: int  # the fewest measured runs any transport has at the point

    @property
    def widest(self) -> tuple[str | None, float]:
        if not self.widths:
            return None, math.inf
        label = max(self.widths, key=lambda k: self.widths[k])
        return label, self.widths[label]

    @property
    def wide(self) -> dict[str, float]:
        """The transports whose ratio is not known within ±within, widest first."""
        wide = {k: w for k, w in self.widths.items() if not w <= self.within}
        return dict(sorted(wide.items(), key=lambda kw: -kw[1]))

    def describe(self) -> str:
        label, width = self.widest
        if self.decided:
            return f"decided (widest 95% CI {within_text(width)}, {label})"
        listed = ", ".join(f"{k} {within_text(w)}" for k, w in self.wide.items())
        return f"undecided: 95% CI wider than ±{self.within:.0%} for {listed}"


def decide(comparison: Comparison, within: float = DEFAULT_CI_WITHIN,
           ) -> dict[str, PointDecision]:
    """Per point label: decided when every transport's ratio to the baseline, in every
    direction of the point, has a 95% CI within ±`within` of the ratio. A transport
    without results at a point, or without a CI (fewer than two runs on a side), leaves
    the point undecided."""
    others = [spec for spec in comparison.labels if spec != comparison.baseline]
    by_point: dict[str, list[Any]] = {}
    for row in comparison.rows:
        by_point.setdefault(row.point, []).append(row)
    decisions = {}
    for point in by_point:  # compare's order
        rows = by_point[point]
        widths = {}
        for spec in others:
            mine = [r for r in rows if r.transport == spec]
            widths[comparison.labels[spec]] = max((half_width(r.ratio) for r in mine),
                                                  default=math.inf)
        decided = bool(widths) and all(w <= within for w in widths.values())
        decisions[point] = PointDecision(point, decided, widths, within,
                                         min(r.n for r in rows))
    return decisions


def notes(comparison: Comparison, manifest: dict[str, Any]) -> list[str]:
    """For a campaign run with --reps auto: the points whose answer stayed undecided,
    judged against this comparison's baseline, with why the campaign stopped there."""
    adaptive = manifest.get("adaptive")
    if not isinstance(adaptive, dict):
        return []
    within = float(adaptive.get("ci_within") or DEFAULT_CI_WITHIN)
    recorded = adaptive.get("points") if isinstance(adaptive.get("points"), dict) else {}
    out = []
    for decision in decide(comparison, within).values():
        if decision.decided:
            continue
        record = recorded.get(decision.point) or {}
        stopped = STOPPED.get(str(record.get("stopped")), "the campaign was cut short")
        if record.get("stopped") == "decided":
            stopped = (f"the campaign decided it against {adaptive.get('baseline')}, "
                       f"not against {comparison.baseline}")
        rounds = record.get("rounds", decision.runs)
        out.append(
            f"{decision.point}: {decision.describe()} after {rounds} rounds ({stopped}): "
            "read its ratios as unsettled; more rounds (--max-reps, a larger --budget) or "
            "a quieter machine would settle them"
        )
    return out
