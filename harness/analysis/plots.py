"""Figures from a campaign, looked up by name (like flent's plots).

Each plot is a function from a PlotContext to a matplotlib Figure, registered in PLOTS
with a title and a description. Figures are built with matplotlib.figure.Figure (no
pyplot state, no GUI backend) and saved as PNG and SVG. Every figure has units on its
axes, a legend naming the transports, and a footer with host, kernel and campaign.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy
import pandas
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter

from harness.analysis import latency, stats
from harness.analysis.campaign_results import CampaignResults, natural_key
from harness.analysis.compare import Comparison, compare, throughput_metric
from transports.spec import Spec, same_setting, setting_text, terse

FORMATS = ("png", "svg")
UNITS = {"iops": "IOPS", "bw_mib_s": "bandwidth (MiB/s)"}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
PANEL_W, PANEL_H = 4.4, 3.3
TOP_IN, BOTTOM_IN = 0.55, 0.45  # room for title + legend, and for the footer


class NotApplicable(Exception):
    """This campaign has nothing for this plot (e.g. no sweep); the message says why."""


@dataclass
class PlotContext:
    campaign: CampaignResults
    comparison: Comparison
    colors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, campaign: CampaignResults, baseline: str | None = None) -> PlotContext:
        comparison = compare(campaign, baseline)
        order = transport_order(comparison)
        colors = {spec: PALETTE[i % len(PALETTE)] for i, spec in enumerate(order)}
        return cls(campaign, comparison, colors)

    @property
    def table(self) -> pandas.DataFrame:
        return self.campaign.table

    @property
    def order(self) -> list[str]:
        return list(self.colors)

    def label(self, spec: str) -> str:
        return terse(self.comparison.labels.get(spec, spec))

    def latency_kind(self) -> str:
        """'I/O latency' when the results keep total-latency bins, else 'completion
        latency' (named after the first run; a campaign is run with one fio setup)."""
        first = self.table.iloc[0]
        raw = self.campaign.raw(first["file"]).get("fio_raw", {})
        return latency.KINDS[latency.kind(raw, first["direction"])]

    def groups(self) -> list[tuple[str, str, pandas.DataFrame]]:
        """(point, direction, rows) for every point of the comparison, in order."""
        t = self.table
        return [(p, d, t[(t["point"] == p) & (t["direction"] == d)])
                for p, d in self.comparison.points()]


def transport_order(comparison: Comparison) -> list[str]:
    specs = list(dict.fromkeys(r.transport for r in comparison.rows))
    return [comparison.baseline] + [s for s in specs if s != comparison.baseline]


@dataclass(frozen=True)
class Plot:
    name: str
    title: str
    description: str
    draw: Callable[[PlotContext], Figure]


PLOTS: dict[str, Plot] = {}


def plot(name: str, title: str, description: str) -> Callable:
    def register(func: Callable[[PlotContext], Figure]) -> Callable[[PlotContext], Figure]:
        PLOTS[name] = Plot(name, title, description, func)
        return func

    return register


# -- layout ------------------------------------------------------------------------------
def panels(n: int, ncols: int = 3, width: float = PANEL_W,
           height: float = PANEL_H) -> tuple[Figure, list[Any]]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows + TOP_IN + BOTTOM_IN), dpi=100)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    return fig, axes


def finish(fig: Figure, ctx: PlotContext, title: str, note: str = "",
           handles: list[Any] | None = None) -> Figure:
    """Title, one legend for the whole figure, the footer, and a layout that fits them."""
    w, h = fig.get_size_inches()
    fig.suptitle(title, y=1 - 0.12 / h, fontsize=13, fontweight="bold")
    if handles is None:
        handles = [Patch(facecolor=ctx.colors[s], label=ctx.label(s)) for s in ctx.order]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 8),
               bbox_to_anchor=(0.5, 1 - 0.42 / h), frameon=False, fontsize=9)
    footer = ctx.campaign.footer()
    if ctx.comparison.placement:
        footer += " · placement differs between transports (see the comparison table)"
    fig.text(0.01, 0.12 / h, footer, fontsize=8, color="#444444", ha="left")
    if note:
        fig.text(0.99, 0.12 / h, note, fontsize=8, color="#444444", ha="right")
    fig.tight_layout(rect=(0, BOTTOM_IN / h, 1, 1 - TOP_IN / h), h_pad=1.6, w_pad=1.2)
    return fig


def _title(ax: Any, point: str, direction: str) -> None:
    ax.set_title(f"{point}\n{direction}", fontsize=9)


def _spec_rows(rows: pandas.DataFrame, spec: str) -> pandas.DataFrame:
    return rows[rows["transport_label"] == spec]


def _present(ctx: PlotContext, rows: pandas.DataFrame) -> list[str]:
    specs = set(rows["transport_label"])
    return [s for s in ctx.order if s in specs]


def bars_with_runs(ax: Any, ctx: PlotContext, rows: pandas.DataFrame, column: str,
                   ci: bool = True) -> None:
    """One bar per transport at its geometric mean, a 95% CI whisker, a dot per run."""
    specs = _present(ctx, rows)
    for i, spec in enumerate(specs):
        values = _spec_rows(rows, spec)[column].dropna().to_numpy(dtype=float)
        if not values.size:
            continue
        iv = stats.interval(values) if values.min() > 0 else None
        center = iv.center if iv else float(numpy.median(values))
        ax.bar(i, center, color=ctx.colors[spec], width=0.7, alpha=0.85)
        if ci and iv and not math.isnan(iv.low):
            ax.errorbar(i, center, yerr=[[center - iv.low], [iv.high - center]], fmt="none",
                        ecolor="black", capsize=4, linewidth=1.2)
        jitter = numpy.linspace(-0.15, 0.15, values.size) if values.size > 1 else [0.0]
        ax.scatter(i + numpy.asarray(jitter), values, s=9, color="black", zorder=3,
                   alpha=0.6, linewidths=0)
    ax.set_xticks(range(len(specs)), [ctx.label(s) for s in specs], rotation=25,
                  ha="right", fontsize=8)
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.grid(axis="y", alpha=0.3)


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise NotApplicable(reason)


BAR_NOTE = "bars: geometric mean over repetitions; whiskers: 95% CI; dots: single runs"


# -- the plots ---------------------------------------------------------------------------
@plot("throughput", "Throughput per transport",
      "IOPS (or MiB/s for large blocks) per transport at every scenario point, with 95% CI")
def throughput(ctx: PlotContext) -> Figure:
    groups = ctx.groups()
    fig, axes = panels(len(groups))
    for ax, (point, direction, rows) in zip(axes, groups, strict=True):
        metric = throughput_metric(rows["bs"].iloc[0] if "bs" in rows else None)
        bars_with_runs(ax, ctx, rows, metric)
        ax.set_ylabel(UNITS[metric])
        _title(ax, point, direction)
    return finish(fig, ctx, "Throughput (higher is better)", BAR_NOTE)


@plot("ratios", "Throughput ratio to the baseline",
      "Every transport's throughput over the baseline's, per point, with its 95% CI")
def ratios(ctx: PlotContext) -> Figure:
    c = ctx.comparison
    points = c.points()
    others = [s for s in ctx.order if s != c.baseline]
    _require(bool(others), "only one transport in the campaign")
    fig = Figure(figsize=(9, 0.42 * len(points) * max(1, len(others)) ** 0.5 + 1.2
                          + TOP_IN + BOTTOM_IN), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    step = 0.8 / max(1, len(others))
    for j, spec in enumerate(others):
        for i, (point, direction) in enumerate(points):
            row = next((r for r in c.rows if (r.point, r.direction, r.transport) ==
                        (point, direction, spec)), None)
            if row is None or row.ratio is None or math.isnan(row.ratio.value):
                continue
            y = i - 0.4 + step * (j + 0.5)
            r = row.ratio
            if r.has_ci:
                ax.errorbar(r.value, y, xerr=[[r.value - r.low], [r.high - r.value]],
                            fmt="o", color=ctx.colors[spec], capsize=3, markersize=5,
                            markerfacecolor=ctx.colors[spec] if r.significant else "white")
            else:
                ax.plot(r.value, y, "o", color=ctx.colors[spec], markerfacecolor="white")
    ratio_axis(ax)
    ax.set_yticks(range(len(points)), [f"{p} {d}" for p, d in points], fontsize=8)
    ax.set_ylim(len(points) - 0.5, -0.5)
    ax.set_xlabel(f"throughput / {ctx.label(c.baseline)}'s (log scale; >1 is faster)")
    handles = [Patch(facecolor=ctx.colors[s], label=ctx.label(s)) for s in others]
    return finish(fig, ctx, f"Throughput relative to {ctx.label(c.baseline)}",
                  "95% CI (Welch, log scale); hollow: not significant", handles)


RATIO_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 20, 50, 100)


def ratio_axis(ax: Any) -> None:
    """A log x axis of ratios with a few readable ticks (0.5x, 0.7x, 1x, 1.5x, 2x)."""
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    lo, hi = ax.get_xlim()
    lo, hi = min(lo, 0.9), max(hi, 1.1)
    ticks = [t for t in RATIO_TICKS if lo <= t <= hi]
    if len(ticks) > 9:
        ticks = [t for t in ticks if t in (0.01, 0.1, 0.5, 1, 2, 10, 100)]
    ax.set_xlim(lo, hi)
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(axis="x", which="major", alpha=0.3)


def _thousands(value: float, _pos: Any = None) -> str:
    """Axis numbers: 0, 500, 50k, 250k, 1.5M (no needless trailing zeros)."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


@plot("latency_percentiles", "Latency percentiles",
      "Latency p50, p90, p99, p99.9 and p99.99 per transport (fio's figures), log axis")
def latency_percentiles(ctx: PlotContext) -> Figure:
    groups = ctx.groups()
    names = list(latency.PERCENTILES)
    fig, axes = panels(len(groups))
    what = ctx.latency_kind()
    for ax, (point, direction, rows) in zip(axes, groups, strict=True):
        for spec in _present(ctx, rows):
            per_run = [latency.percentiles(ctx.campaign.raw(f).get("fio_raw", {}), direction)
                       for f in _spec_rows(rows, spec)["file"]]
            values = numpy.array([[run[n] for n in names] for run in per_run]) / 1000.0
            median = numpy.nanmedian(values, axis=0)
            ax.plot(range(len(names)), median, "o-", color=ctx.colors[spec], markersize=4)
            if len(per_run) > 1:
                ax.fill_between(range(len(names)), numpy.nanmin(values, axis=0),
                                numpy.nanmax(values, axis=0), color=ctx.colors[spec],
                                alpha=0.15, linewidth=0)
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_ylabel(f"{what} (µs)")
        ax.grid(which="both", alpha=0.3)
        _title(ax, point, direction)
    return finish(fig, ctx, f"{what.capitalize()} percentiles (lower is better)",
                  "lines: median over repetitions; bands: min to max over repetitions")


@plot("latency_cdf", "Latency CDF",
      "Cumulative distribution of latency from fio's json+ histogram bins")
def latency_cdf(ctx: PlotContext) -> Figure:
    groups = ctx.groups()
    fig, axes = panels(len(groups))
    drawn = False
    what = ctx.latency_kind()
    for ax, (point, direction, rows) in zip(axes, groups, strict=True):
        for spec in _present(ctx, rows):
            histogram = sum((latency.bins(ctx.campaign.raw(f).get("fio_raw", {}), direction)
                             for f in _spec_rows(rows, spec)["file"]), start=latency.Counter())
            x, y = latency.cdf(histogram)
            if x.size:
                drawn = True
                ax.step(x / 1000.0, y, where="post", color=ctx.colors[spec], linewidth=1.4)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.01)
        ax.set_xlabel(f"{what} (µs, log scale)")
        ax.set_ylabel("fraction of I/Os ≤ latency")
        ax.grid(which="both", alpha=0.3)
        _title(ax, point, direction)
    _require(drawn, "no result holds fio json+ latency bins")
    return finish(fig, ctx, f"{what.capitalize()} CDF (left is better)",
                  "all repetitions' histograms summed")


@plot("context_switches", "Context switches per I/O",
      "Client (fio) and server context switches per I/O, per transport")
def context_switches(ctx: PlotContext) -> Figure:
    groups = ctx.groups()
    fig, axes = panels(len(groups))
    for ax, (point, direction, rows) in zip(axes, groups, strict=True):
        specs = _present(ctx, rows)
        for i, spec in enumerate(specs):
            sub = _spec_rows(rows, spec)
            for offset, column, hatch in ((-0.2, "server_ctxsw_per_io", ""),
                                          (0.2, "client_ctxsw_per_io", "///")):
                values = sub[column].dropna().to_numpy(dtype=float) if column in sub else []
                if len(values) == 0:
                    continue
                ax.bar(i + offset, float(numpy.median(values)), width=0.38, hatch=hatch,
                       color=ctx.colors[spec], edgecolor="white" if hatch else None, alpha=0.85)
                ax.scatter([i + offset] * len(values), values, s=8, color="black", zorder=3,
                           alpha=0.6, linewidths=0)
        ax.set_xticks(range(len(specs)), [ctx.label(s) for s in specs], rotation=25,
                      ha="right", fontsize=8)
        ax.set_ylabel("context switches per I/O")
        ax.grid(axis="y", alpha=0.3)
        _title(ax, point, direction)
    handles = [Patch(facecolor=ctx.colors[s], label=ctx.label(s)) for s in ctx.order]
    handles += [Patch(facecolor="#999999", label="server"),
                Patch(facecolor="#999999", hatch="///", edgecolor="white", label="client")]
    return finish(fig, ctx, "Context switches per I/O (lower is better)",
                  "solid: server (all threads); hatched: client (fio); bars: median; "
                  "dots: runs", handles)


@plot("server_cpu", "Server CPU per I/O",
      "Server CPU time (user + system, all threads) per I/O, per transport")
def server_cpu(ctx: PlotContext) -> Figure:
    groups = ctx.groups()
    fig, axes = panels(len(groups))
    for ax, (point, direction, rows) in zip(axes, groups, strict=True):
        bars_with_runs(ax, ctx, rows, "server_cpu_us_per_io")
        ax.set_ylabel("server CPU (µs per I/O)")
        _title(ax, point, direction)
    return finish(fig, ctx, "Server CPU per I/O (lower is better)", BAR_NOTE)


# -- pinned against mapped ---------------------------------------------------------------
def buffer_pairs(specs: list[str],
                 settings: dict[str, dict[str, Any]] | None = None) -> list[tuple[str, str]]:
    """(mapped, other) spec pairs of one transport that differ in their buffer mode only:
    `buffers` (mlock, pool, pinned against mapped) and `zerocopy` together.

    `settings` (spec -> settings as recorded, defaults included) lets `uring` pair with
    `uring:buffers=pinned`; without it the spec text alone is read.
    """
    def parsed(text: str) -> tuple[str, dict[str, str]]:
        spec = Spec.read(text)
        # affinity=on in a spec is affinity: True once recorded: both as a spec writes them.
        recorded = {k: setting_text(v) for k, v in (settings or {}).get(text, {}).items()}
        return spec.name, {**recorded, **spec.options()}

    keyed = {}
    for spec in specs:
        name, values = parsed(spec)
        if "buffers" in values:
            mode = ("buffers", "zerocopy")
            others = frozenset((k, v) for k, v in values.items() if k not in mode)
            zerocopy = same_setting(values.get("zerocopy", "off"), True)
            kind = values["buffers"] + ("+zerocopy" if zerocopy else "")
            keyed[spec] = (name, others, kind)
    pairs = []
    for mapped, (name, others, kind) in keyed.items():
        if kind != "mapped":
            continue
        for other, (name2, others2, kind2) in keyed.items():
            if kind2 != "mapped" and (name2, others2) == (name, others):
                pairs.append((mapped, other))
    return pairs


PAIRED = (("throughput", None, True), ("p99 latency", "clat_p99_us", False),
          ("server CPU per I/O", "server_cpu_us_per_io", False))


@plot("pinned_vs_mapped", "Buffer modes against mapped buffers",
      "uring with mlock, pool, pinned (and zero-copy) buffers over the same uring with "
      "mapped buffers, per point")
def pinned_vs_mapped(ctx: PlotContext) -> Figure:
    pairs = buffer_pairs(ctx.order, ctx.campaign.transport_settings())
    _require(bool(pairs), "no pair of transports differing only in buffers= (one mapped)")
    groups = ctx.groups()
    fig, axes = panels(len(PAIRED), ncols=3, width=4.6,
                       height=max(3.0, 0.34 * len(groups) * len(pairs) + 1.2))
    labels = [f"{p} {d}" for p, d, _ in groups]
    step = 0.8 / len(pairs)
    for ax, (what, column, higher_better) in zip(axes, PAIRED, strict=True):
        for j, (mapped, pinned) in enumerate(pairs):
            for i, (_, _, rows) in enumerate(groups):
                metric = column or throughput_metric(rows["bs"].iloc[0] if "bs" in rows
                                                     else None)
                r = stats.ratio(_spec_rows(rows, pinned)[metric], _spec_rows(rows, mapped)[metric])
                if math.isnan(r.value):
                    continue
                y = i - 0.4 + step * (j + 0.5)
                color = ctx.colors[pinned]
                face = color if r.significant else "white"
                if r.has_ci:
                    ax.errorbar(r.value, y, xerr=[[r.value - r.low], [r.high - r.value]],
                                fmt="o", color=color, markerfacecolor=face, capsize=3,
                                markersize=5)
                else:
                    ax.plot(r.value, y, "o", color=color, markerfacecolor="white")
        ratio_axis(ax)
        ax.set_yticks(range(len(labels)), labels if ax is axes[0] else [""] * len(labels),
                      fontsize=8)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        better = "right" if higher_better else "left"
        ax.set_xlabel(f"{what}: mode / mapped\n(log scale; {better} is better)")
    handles = [Patch(facecolor=ctx.colors[p], label=f"{ctx.label(p)} / {ctx.label(m)}")
               for m, p in pairs]
    return finish(fig, ctx, "Buffer modes against mapped buffers (paired by scenario point)",
                  "ratio of geometric means, 95% CI (Welch, log scale); hollow: not significant",
                  handles)


# -- sweeps ------------------------------------------------------------------------------
SWEEP_AXES = ("iodepth", "numjobs")
OTHER_AXES = ("iodepth", "numjobs", "bs", "rw", "rwmixread", "ioengine", "direct")


def sweep_groups(table: pandas.DataFrame, axis: str) -> list[tuple[str, pandas.DataFrame]]:
    """(panel title, rows) for every scenario whose points vary `axis`; other varying
    axes split panels, so each panel has one line per transport over `axis` alone."""
    out = []
    if axis not in table:
        return out
    for scenario, rows in table.groupby("scenario", sort=False):
        if rows[axis].nunique() < 2:
            continue
        others = [a for a in OTHER_AXES if a != axis and a in rows and rows[a].nunique() > 1]
        keys = others + ["direction"]
        for values, sub in rows.groupby(keys, sort=True):
            values = values if isinstance(values, tuple) else (values,)
            fixed = ", ".join(f"{k}={v}" for k, v in zip(others, values, strict=False))
            title = f"{scenario}\n{fixed + ', ' if fixed else ''}{values[-1]}"
            out.append((title, sub))
    out.sort(key=lambda tr: natural_key(tr[0]))
    return out


def _sweep(ctx: PlotContext, axis: str) -> Figure:
    groups = sweep_groups(ctx.table, axis)
    _require(bool(groups), f"no scenario sweeps {axis}")
    fig, axes = panels(len(groups), ncols=2, width=5.2, height=3.6)
    for ax, (title, rows) in zip(axes, groups, strict=True):
        metric = throughput_metric(rows["bs"].iloc[0] if "bs" in rows else None)
        present = _present(ctx, rows)
        values = sorted(rows[axis].unique())
        span = max(1.0, math.log2(values[-1] / values[0]))
        for k, spec in enumerate(present):
            sub = _spec_rows(rows, spec)
            # Dodge each transport a little along the log axis so whiskers do not overlap.
            dodge = 2 ** (0.025 * span * (k - (len(present) - 1) / 2))
            xs, ys, lo, hi = [], [], [], []
            for x, at in sorted(sub.groupby(axis), key=lambda g: g[0]):
                iv = stats.interval(at[metric])
                xs.append(x * dodge)
                ys.append(iv.center)
                lo.append(iv.center - iv.low if not math.isnan(iv.low) else 0)
                hi.append(iv.high - iv.center if not math.isnan(iv.high) else 0)
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", color=ctx.colors[spec], capsize=3,
                        markersize=4, linewidth=1.5)
        ax.set_xscale("log", base=2)
        ax.set_xticks(values, [str(v) for v in values])
        ax.minorticks_off()
        ax.set_xlabel(axis)
        ax.set_ylabel(UNITS[metric])
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.grid(alpha=0.3)
        ax.set_title(title, fontsize=9)
    return finish(fig, ctx, f"Throughput against {axis}",
                  "points: geometric mean over repetitions; whiskers: 95% CI")


@plot("sweep_iodepth", "Throughput against iodepth",
      "IOPS against fio iodepth, one line per transport, for scenarios that sweep it")
def sweep_iodepth(ctx: PlotContext) -> Figure:
    return _sweep(ctx, "iodepth")


@plot("sweep_numjobs", "Throughput against numjobs",
      "IOPS against fio numjobs, one line per transport, for scenarios that sweep it")
def sweep_numjobs(ctx: PlotContext) -> Figure:
    return _sweep(ctx, "numjobs")


# -- rendering ---------------------------------------------------------------------------
@dataclass
class Rendered:
    name: str
    title: str
    description: str
    files: list[Path] = field(default_factory=list)
    skipped: str | None = None


def plots_dir(campaign: CampaignResults) -> Path:
    return campaign.path / "plots"


def render(campaign: CampaignResults, names: list[str] | None = None,
           out_dir: str | os.PathLike[str] | None = None,
           formats: tuple[str, ...] = FORMATS, baseline: str | None = None) -> list[Rendered]:
    """Draw the named plots (all by default) into out_dir (default CAMPAIGN/plots)."""
    unknown = [n for n in names or [] if n not in PLOTS]
    if unknown:
        raise KeyError(f"unknown plot {', '.join(unknown)}; known: {', '.join(PLOTS)}")
    out = Path(out_dir) if out_dir is not None else plots_dir(campaign)
    out.mkdir(parents=True, exist_ok=True)
    ctx = PlotContext.build(campaign, baseline)
    done = []
    for name in names or list(PLOTS):
        spec = PLOTS[name]
        item = Rendered(name, spec.title, spec.description)
        try:
            fig = spec.draw(ctx)
        except NotApplicable as e:
            item.skipped = str(e)
        else:
            for fmt in formats:
                path = out / f"{name}.{fmt}"
                fig.savefig(path, format=fmt, dpi=110 if fmt == "png" else None,
                            metadata=_metadata(fmt, campaign, spec.title))
                item.files.append(path)
        done.append(item)
    return done


def _metadata(fmt: str, campaign: CampaignResults, title: str) -> dict[str, Any]:
    # Fixed metadata (no creation date) keeps re-rendered SVGs identical for review.
    if fmt == "svg":
        return {"Title": f"{title} ({campaign.id})", "Date": None}
    return {"Title": f"{title} ({campaign.id})"}
