"""Per scenario point, every transport against a baseline.

The result is plain data (`Comparison`); harness.analysis.tables formats it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas

from harness.analysis import decide, stability, stats, where
from harness.analysis.campaign import CampaignResults, natural_key
from harness.scenarios import FIO_OPTIONS, size_bytes

# At or above this block size a point is summarised by bandwidth rather than IOPS.
BANDWIDTH_BS = 128 * 1024
DEFAULT_BASELINES = ("pyfuse3",)

# Columns that must agree across a campaign for its numbers to compare transports only.
ENVIRONMENT = {
    "hostname": "host",
    "cpu_model": "CPU model",
    "cpu_count": "CPU count",
    # kernel: harness.analysis.where keeps kernels apart and says so
    "fuse_enable_uring": "fuse enable_uring",
    "git_commit": "git commit",
    "backing": "backing",
    "export_size": "export size",
    "cache": "cache mode",
    "read_only": "read-only",
    "fio_version": "fio version",
    "libfuse_version": "libfuse version",
    "liburing_version": "liburing version",
    "python_version": "Python version",
}


class CompareError(ValueError):
    """A comparison that cannot be made, e.g. an unknown baseline."""


@dataclass(frozen=True)
class Row:
    point: str
    direction: str
    transport: str
    label: str
    n: int
    metric: str  # "iops" or "bw_mib_s"
    value: float  # median over repetitions
    p50_us: float
    p99_us: float
    server_ctxsw_per_io: float
    client_ctxsw_per_io: float
    server_cpu_us_per_io: float
    ratio: stats.Ratio | None  # None for the baseline itself

    @property
    def is_baseline(self) -> bool:
        return self.ratio is None

    def verdict(self) -> str:
        if self.ratio is None:
            return "baseline"
        return self.ratio.verdict(higher_is_better=True)


@dataclass
class Comparison:
    campaign: str
    footer: str
    baseline: str
    labels: dict[str, str]
    rows: list[Row]
    geomean: dict[str, stats.Ratio]
    warnings: list[str] = field(default_factory=list)
    cautions: list[str] = field(default_factory=list)  # runs that may not measure much
    # pyperf-style warnings on a transport's repetitions at a point (their texts are
    # among the cautions too)
    unstable: list[stability.StabilityWarning] = field(default_factory=list)
    method: str = stats.METHOD

    def points(self) -> list[tuple[str, str]]:
        seen: dict[tuple[str, str], None] = {}
        for row in self.rows:
            seen.setdefault((row.point, row.direction), None)
        return list(seen)

    def frame(self) -> pandas.DataFrame:
        """The comparison as a DataFrame (one row per point x direction x transport)."""
        records = []
        for r in self.rows:
            ratio = r.ratio
            records.append({
                "point": r.point, "direction": r.direction, "transport": r.transport,
                "label": r.label, "n": r.n, "metric": r.metric, "median": r.value,
                "p50_us": r.p50_us, "p99_us": r.p99_us,
                "server_ctxsw_per_io": r.server_ctxsw_per_io,
                "client_ctxsw_per_io": r.client_ctxsw_per_io,
                "server_cpu_us_per_io": r.server_cpu_us_per_io,
                "ratio": ratio.value if ratio else 1.0,
                "ratio_low": ratio.low if ratio else math.nan,
                "ratio_high": ratio.high if ratio else math.nan,
                "significant": ratio.significant if ratio else False,
                "verdict": r.verdict(),
            })
        return pandas.DataFrame(records)


def short_labels(specs: list[str]) -> dict[str, str]:
    """Labels without the settings every spec of the same transport shares.

    `uring:depth=8,buffers=pinned` and `uring:depth=8,buffers=mapped` become
    `uring:buffers=pinned` and `uring:buffers=mapped`.
    """
    parsed: dict[str, tuple[str, list[str]]] = {}
    for spec in specs:
        name, _, rest = spec.partition(":")
        parsed[spec] = (name, [s for s in rest.split(",") if s])
    labels = {}
    for spec, (name, settings) in parsed.items():
        siblings = [s for n, s in parsed.values() if n == name]
        shared = set.intersection(*(set(s) for s in siblings)) if len(siblings) > 1 else set()
        kept = [s for s in settings if s not in shared]
        labels[spec] = name + (":" + ",".join(kept) if kept else "")
    if len(set(labels.values())) != len(labels):
        return {spec: spec for spec in specs}
    return labels


def choose_baseline(specs: list[str], wanted: str | None) -> str:
    """The spec matching `wanted` (a spec, a transport name, or a label), or a default."""
    if not specs:
        raise CompareError("the campaign has no transport to compare")
    if wanted is None:
        for name in DEFAULT_BASELINES:
            matches = [s for s in specs if s.partition(":")[0] == name]
            if matches:
                return matches[0]
        return specs[0]
    if wanted in specs:
        return wanted
    labels = short_labels(specs)
    matches = [s for s in specs if s.partition(":")[0] == wanted or labels[s] == wanted]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise CompareError(
            f"baseline {wanted!r} matches several transports ({', '.join(matches)}): "
            "give the full spec"
        )
    raise CompareError(f"baseline {wanted!r} is not in this campaign; it has: {', '.join(specs)}")


def throughput_metric(bs: Any) -> str:
    try:
        big = size_bytes(bs) >= BANDWIDTH_BS if bs is not None else False
    except (TypeError, ValueError):
        big = False
    return "bw_mib_s" if big else "iops"


def latency_column(group: pandas.DataFrame, name: str) -> str:
    """Total I/O latency (fio lat) where the runs recorded it, else completion latency."""
    column = f"lat_{name}_us"
    if column in group and group[column].notna().any():
        return column
    return f"clat_{name}_us"


def _median(series: pandas.Series) -> float:
    values = series.dropna()
    return float(values.median()) if len(values) else math.nan


def _column(group: pandas.DataFrame, name: str) -> pandas.Series:
    return group[name] if name in group else pandas.Series(dtype=float)


def _distinct(df: pandas.DataFrame, column: str) -> Counter[str]:
    return Counter(str(v) for v in df[column] if not _missing(v))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def environment_warnings(table: pandas.DataFrame) -> list[str]:
    """What differs between runs besides the transport (and the scenario point)."""
    warnings = where.warnings(table)
    for column, name in ENVIRONMENT.items():
        if column not in table:
            continue
        values = _distinct(table, column)
        if column == "git_commit":
            values = Counter({k[:12]: n for k, n in values.items()})
        if len(values) > 1:
            listed = ", ".join(f"{v} ({n} runs)" for v, n in values.most_common())
            warnings.append(f"{name} differs: {listed}")
    runs = table.drop_duplicates("file")
    if "git_dirty" in runs:
        dirty = int(runs["git_dirty"].fillna(False).astype(bool).sum())
        if dirty:
            warnings.append(f"{dirty} of {len(runs)} runs were made from a tree with "
                            "uncommitted changes")
    fio_columns = [c for c in FIO_OPTIONS if c in table]
    for point, group in sorted(table.groupby("point"), key=lambda pg: natural_key(pg[0])):
        for column in fio_columns:
            values = _distinct(group, column)
            if len(values) > 1:
                warnings.append(f"{point}: fio {column} differs: {', '.join(values)}")
    counts = runs.groupby(["point", "transport_label"]).size()
    for point, per in sorted(counts.groupby(level=0), key=lambda pg: natural_key(pg[0])):
        if per.nunique() > 1:
            detail = ", ".join(f"{spec} {n}" for (_, spec), n in per.items())
            warnings.append(f"{point}: uneven repetitions: {detail}")
    return warnings


def cautions(campaign: CampaignResults) -> list[str]:
    """Runs whose numbers may not say what they seem to: the server saw too few requests
    (caches answered), sched=idle's guard found serving threads starved (the run was
    partly SCHED_BATCH), or the campaign's manifest lists runs that did not complete."""
    notes = []
    t = campaign.table.drop_duplicates("file")
    runs = t.groupby(["transport_label", "point"], sort=False).size()
    if "sched_guard_boosts" in t:
        flagged = t[t["sched_guard_boosts"].fillna(0) > 0]
        for (spec, point), rows in flagged.groupby(["transport_label", "point"], sort=False):
            total = runs[(spec, point)]
            notes.append(
                f"{point} on {spec}, {len(rows)} of {total} runs: sched=idle's guard found "
                f"serving threads starved {int(rows['sched_guard_boosts'].sum())} times and "
                f"ran them SCHED_BATCH for {rows['sched_guard_boosted_ms'].sum():.0f} ms "
                "(partly a sched=batch run)"
            )
    if "coverage_warning" in t:
        flagged = t[t["coverage_warning"].notna()]
        for (spec, point), rows in flagged.groupby(["transport_label", "point"], sort=False):
            if rows["coverage_warning"].str.contains("coverage unknown").all():
                continue
            total = runs[(spec, point)]
            notes.append(f"{point} on {spec}, {len(rows)} of {total} runs: "
                         f"{rows['coverage_warning'].iloc[0]}")
        unknown = flagged[flagged["coverage_warning"].str.contains("coverage unknown")]
        for spec, rows in unknown.groupby("transport_label", sort=False):
            notes.append(f"{spec}: {rows['coverage_warning'].iloc[0]} ({len(rows)} runs)")
    planned = campaign.manifest.get("runs")
    if isinstance(planned, list):
        unfinished = [r for r in planned if isinstance(r, dict)
                      and r.get("status") not in ("done", None)]
        if unfinished:
            states = Counter(str(r.get("status")) for r in unfinished)
            first = unfinished[0]
            notes.append(
                f"{len(unfinished)} of {len(planned)} planned runs did not complete ("
                + ", ".join(f"{n} {s}" for s, n in states.items())
                + f"; see campaign.json), e.g. {first.get('point')} on "
                f"{first.get('transport')}: {str(first.get('error', ''))[:160]}"
            )
    return notes


def compare(campaign: CampaignResults, baseline: str | None = None) -> Comparison:
    """Every transport against `baseline` at every (point, direction) of the campaign."""
    table = campaign.table
    specs = campaign.transports()
    base = choose_baseline(specs, baseline)
    labels = short_labels(specs)
    order = [base] + [s for s in specs if s != base]
    rows: list[Row] = []
    pairs: dict[str, list[tuple[list[float], list[float]]]] = {s: [] for s in order if s != base}
    samples: dict[tuple[str, str], list[float]] = {}
    units: dict[str, str] = {}
    directions = Counter(point for point, _ in campaign.points())
    for point, direction in campaign.points():
        shown = point if directions[point] == 1 else f"{point} ({direction})"
        here = table[(table["point"] == point) & (table["direction"] == direction)]
        metric = throughput_metric(here["bs"].iloc[0] if "bs" in here else None)
        base_values = here.loc[here["transport_label"] == base, metric].dropna().tolist()
        for spec in order:
            group = here[here["transport_label"] == spec]
            if group.empty:
                continue
            values = group[metric].dropna().tolist()
            samples[(shown, labels[spec])] = values
            units[shown] = "IOPS" if metric == "iops" else "MiB/s"
            r = None
            if spec != base:
                r = stats.ratio(values, base_values)
                if base_values:
                    pairs[spec].append((values, base_values))
            rows.append(Row(
                point=point, direction=direction, transport=spec, label=labels[spec],
                n=len(values), metric=metric, value=_median(group[metric]),
                p50_us=_median(_column(group, latency_column(group, "p50"))),
                p99_us=_median(_column(group, latency_column(group, "p99"))),
                server_ctxsw_per_io=_median(_column(group, "server_ctxsw_per_io")),
                client_ctxsw_per_io=_median(_column(group, "client_ctxsw_per_io")),
                server_cpu_us_per_io=_median(_column(group, "server_cpu_us_per_io")),
                ratio=r,
            ))
    geo = {spec: stats.geomean_ratio(p) for spec, p in pairs.items() if p}
    unstable = stability.warnings(samples, units)
    comparison = Comparison(
        campaign=campaign.id,
        footer=campaign.footer(),
        baseline=base,
        labels=labels,
        rows=rows,
        geomean=geo,
        warnings=environment_warnings(table),
        cautions=cautions(campaign) + [w.text for w in unstable],
        unstable=unstable,
    )
    comparison.cautions += decide.notes(comparison, campaign.manifest)
    return comparison
