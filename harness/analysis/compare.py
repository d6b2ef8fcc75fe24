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
from harness.analysis.campaign_results import CampaignResults, natural_key
from harness.results import NO_SERVER
from harness.scenarios import FIO_OPTIONS, size_bytes
from transports.spec import Spec, short_labels

__all__ = ["short_labels"]  # read by tables and plots from here

# At or above this block size a point is summarised by bandwidth rather than IOPS.
BANDWIDTH_BS = 128 * 1024
DEFAULT_BASELINES = ("pyfuse3",)
# The transport without FUSE: fio on the backing itself, the ceiling every row is shown as a
# share of; never a default baseline (its ratios would all read "slower").
CEILING_TRANSPORT = "direct"

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
    of_ceiling: float | None = None  # value / the ceiling's (direct's); None: no ceiling

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
    # transport -> where its serving threads ran, when that differs between the rows
    # compared (tables then show it); empty when every row ran alike.
    placement: dict[str, str] = field(default_factory=dict)
    ceiling: str | None = None  # the label of the campaign's `direct` transport, if any

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
                **({"of_ceiling": r.of_ceiling} if self.ceiling else {}),
            })
        return pandas.DataFrame(records)


def choose_baseline(specs: list[str], wanted: str | None, avoid: tuple[str, ...] = ()) -> str:
    """The spec matching `wanted` (a spec, a transport name, or a label), or a default,
    which is none of `avoid` (the ceiling) unless nothing else is there."""
    if not specs:
        raise CompareError("the campaign has no transport to compare")
    if wanted is None:
        candidates = [s for s in specs if s not in avoid] or specs
        for name in DEFAULT_BASELINES:
            matches = [s for s in candidates if Spec.read(s).name == name]
            if matches:
                return matches[0]
        return candidates[0]
    if wanted in specs:
        return wanted
    labels = short_labels(specs)
    matches = [s for s in specs if Spec.read(s).name == wanted or labels[s] == wanted]
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
    partly SCHED_BATCH), a backing without FUSE refused O_DIRECT (fio ran direct=0), or
    the campaign's manifest lists runs that did not complete."""
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
    notes += placement_cautions(t)
    if "o_direct_fallback" in t:
        flagged = t[t["o_direct_fallback"].notna()]
        for (spec, point), rows in flagged.groupby(["transport_label", "point"], sort=False):
            notes.append(f"{point} on {spec}, {len(rows)} of {runs[(spec, point)]} runs: "
                         f"{rows['o_direct_fallback'].iloc[0]}")
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


def placements(table: pandas.DataFrame) -> dict[str, str]:
    """Each transport's placement over the campaign: its serving threads' policies and
    CPUs in each point where they were not the same ("unknown" for old results)."""
    if "placement" not in table:
        return {label: "unknown" for label in table["transport_label"].unique()}
    out = {}
    for label, group in table.groupby("transport_label", sort=False):
        per_point = {p: "/".join(sorted(set(g["placement"].astype(str))))
                     for p, g in group.groupby("point", sort=False)}
        kinds = set(per_point.values())
        out[label] = kinds.pop() if len(kinds) == 1 else "; ".join(
            f"{p}: {v}" for p, v in sorted(per_point.items(), key=lambda pv: natural_key(pv[0])))
    return out


def placement_cautions(table: pandas.DataFrame) -> list[str]:
    """The placement of rows that differ in it, per point, and any placement that is
    the server's own design: a figure that comes from where threads run is not a
    transport's figure."""
    if table.empty:
        return []
    notes = []
    column = table["placement"] if "placement" in table else None
    for point, group in sorted(table.groupby("point"), key=lambda pg: natural_key(pg[0])):
        seen = {label: ("unknown" if column is None else
                        "/".join(sorted(set(g["placement"].astype(str)))))
                for label, g in group.groupby("transport_label", sort=False)}
        seen = {label: v for label, v in seen.items() if v != NO_SERVER}
        unknown = [label for label, v in seen.items() if "unknown" in v]
        if len(set(seen.values())) > 1 or (unknown and len(seen) > 1):
            listed = "; ".join(f"{label}: {v}" for label, v in seen.items())
            notes.append(f"{point}: placement differs between the rows compared ({listed})"
                         + (": unknown placement (a result from before Ringside recorded "
                            "it) is never taken as equal" if unknown else ""))
    if "placement_design" in table:
        design = table.dropna(subset=["placement_design"])
        for label, g in design.groupby("transport_label", sort=False):
            notes.append(f"placement by {label}'s own design: "
                         f"{'; '.join(sorted(set(g['placement_design'])))}")
    return notes


def ceilings(table: pandas.DataFrame, specs: list[str]) -> tuple[str, ...]:
    """The labels of the campaign's runs without FUSE (transport `direct`), in order."""
    if "transport" not in table:
        return ()
    found = set(table.loc[table["transport"] == CEILING_TRANSPORT, "transport_label"])
    return tuple(s for s in specs if s in found)


def compare(campaign: CampaignResults, baseline: str | None = None) -> Comparison:
    """Every transport against `baseline` at every (point, direction) of the campaign,
    and, when it has a `direct` run, as a share of that ceiling."""
    table = campaign.table
    specs = campaign.transports()
    tops = ceilings(table, specs)
    ceiling = tops[0] if tops else None
    base = choose_baseline(specs, baseline, avoid=tops)
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
        top = _median(here.loc[here["transport_label"] == ceiling, metric]) if ceiling \
            else math.nan
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
                of_ceiling=_median(group[metric]) / top if top > 0 else None,
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
        placement=_differing(placements(table.drop_duplicates("file"))),
        ceiling=ceiling,
    )
    comparison.cautions += decide.notes(comparison, campaign.manifest)
    return comparison


def _differing(placement: dict[str, str]) -> dict[str, str]:
    servers = {label: v for label, v in placement.items() if v != NO_SERVER}
    return placement if len(set(servers.values())) > 1 or "unknown" in servers.values() \
        else {}

