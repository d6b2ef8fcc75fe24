"""`ringside report`: one page with the metadata, the tables and the figures.

The page is built once as a list of blocks (heading, paragraph, table, figure, list,
code) and written as Markdown (figures beside it in plots/) or as a self-contained HTML
file (figures embedded), so both say the same thing.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.analysis import plots, where
from harness.analysis.campaign_results import CampaignResults, natural_key
from harness.analysis.compare import Comparison, compare
from harness.analysis.stats import METHOD
from harness.analysis.tables import (
    CAUTION,
    PLACEMENT_TITLE,
    Cells,
    ceiling_text,
    geo_title,
    geomean_cells,
    main_cells,
    markdown_table,
    placement_cells,
)

FORMATS = ("markdown", "html")
WARNING = "Warning: runs differ in more than the transport"
# What the campaign manifest (campaign.json) adds to the setup table.
MANIFEST_FIELDS = {
    "label": "Suite or label",
    "reps": "Repetitions",
    "warmup": "Warmup runs per point and transport",
    "server_cpus": "Server CPUs",
    "fio_cpus": "fio CPUs",
    "status": "Campaign status",
}

MEASURES = [
    "Throughput and latency are fio's own, from its json+ output kept verbatim in each "
    "result file (`fio_raw`). The table's p50 and p99 are completion latency (clat); the "
    "figures use total I/O latency (submission + completion) when the results hold it "
    "(fio `lat_percentiles=1`) and say which in their axis labels.",
    "Server context switches and CPU time are summed over every thread of the server "
    "process from /proc/PID/task/*, snapshotted right before and right after fio, and "
    "divided by the number of I/Os fio completed.",
    "Client context switches are fio's `ctx` over all its jobs, per I/O.",
    "Runs flagged as warmup are excluded from every statistic. `ringside campaign` "
    "interleaves repetitions across transports so slow drifts of the machine spread "
    "over all of them.",
]


@dataclass
class Block:
    kind: str  # "h1", "h2", "h3", "p", "table", "figure", "list", "code", "warning"
    content: Any
    extra: Any = None


def _human_size(value: Any) -> str:
    try:
        n = float(value)
    except (TypeError, ValueError):
        return str(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    return str(value)


def _when(stamp: str | None) -> str:
    if not stamp:
        return "?"
    try:
        return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        return stamp


def _runs_text(runs: Any) -> str:
    files = runs.drop_duplicates("file")
    text = f"{len(files)} result files"
    warmups = int(files["warmup"].fillna(False).astype(bool).sum()) if "warmup" in files else 0
    if warmups:
        text += f", of which {warmups} warmup runs (excluded from all statistics)"
    return text


def metadata(campaign: CampaignResults) -> Cells:
    runs = campaign.runs
    first = _when(min(runs["start"].dropna(), default=None))
    last = _when(max(runs["end"].dropna(), default=None))
    dirty = runs.drop_duplicates("file")["git_dirty"].fillna(False).astype(bool).sum() \
        if "git_dirty" in runs else 0
    commits = runs.drop_duplicates("file")["git_commit"].dropna().str[:12].value_counts() \
        if "git_commit" in runs else {}
    commit = ", ".join(f"{c} ({n} runs)" if len(commits) > 1 else c
                       for c, n in commits.items()) or "?"
    sizes = runs["export_size"].dropna() if "export_size" in runs else []
    size = ", ".join(_human_size(v) for v in dict.fromkeys(sizes)) or "?"
    rows = [
        ("Campaign", campaign.id),
        ("Directory", str(campaign.path)),
        ("Runs", _runs_text(runs)),
        ("Period", f"{first} to {last}"),
        ("Host", campaign.common("hostname")),
        ("CPU", f"{campaign.common('cpu_model')} ({campaign.common('cpu_count')} CPUs)"),
        ("Kernel", campaign.common("kernel")),
        ("Virtualization", campaign.common("virtualization")
         + where.footer_note(campaign.runs).replace(" · ", "; ")),
        ("fuse enable_uring", campaign.common("fuse_enable_uring")),
        ("Ringside commit", commit + (f" ({dirty} runs with uncommitted changes)"
                                      if dirty else "")),
        ("Backing", f"{campaign.common('backing')}, export {size}, "
         f"filled with: {campaign.common('backing_fill')}, cache {campaign.common('cache')}"),
        ("fio", campaign.common("fio_version")),
        ("libfuse / liburing", f"{campaign.common('libfuse_version')} / "
         f"{campaign.common('liburing_version')}"),
        ("Python", campaign.common("python_version")),
    ]
    for key, name in MANIFEST_FIELDS.items():
        value = campaign.manifest.get(key)
        if value is not None and value != "":
            rows.append((name, str(value)))
    return Cells(["Setting", "Value"], [[k, v] for k, v in rows])


def transport_cells(campaign: CampaignResults) -> Cells:
    """Every transport with its settings as recorded (defaults included)."""
    rows = []
    for spec, settings in campaign.transport_settings().items():
        text = ", ".join(f"{k}={v}" for k, v in settings.items()) or "(none)"
        rows.append([spec, text])
    rows.sort(key=lambda r: natural_key(r[0]))
    return Cells(["Transport", "Settings"], rows)


def scenario_cells(campaign: CampaignResults) -> Cells:
    t = campaign.table
    columns = [c for c in ("rw", "bs", "ioengine", "iodepth", "numjobs", "direct", "runtime",
                           "rwmixread") if c in t]
    points = t.drop_duplicates("point").sort_values("point", key=lambda s: s.map(natural_key))
    reps = t.drop_duplicates("file").groupby(["point", "transport_label"]).size()
    rows = []
    for _, row in points.iterrows():
        n = reps.get(row["point"])
        rows.append([row["point"], *[_cell(row[c]) for c in columns],
                     "" if n is None else f"{n.min()}–{n.max()}" if n.min() != n.max()
                     else str(n.min())])
    numeric = {i + 1 for i, c in enumerate(columns) if c not in ("rw", "bs", "ioengine")}
    return Cells(["Point", *columns, "Runs per transport"], rows,
                 right=numeric | {len(columns) + 1})


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def build(campaign: CampaignResults, comparison: Comparison,
          figures: list[plots.Rendered]) -> list[Block]:
    specs = list(dict.fromkeys(r.transport for r in comparison.rows))
    blocks = [
        Block("h1", f"Ringside report: {campaign.id}"),
        Block("p", f"{len(specs)} transports ({', '.join(f'`{s}`' for s in specs)}) over "
                   f"{len(comparison.points())} scenario points, compared against "
                   f"`{comparison.baseline}`. Generated "
                   f"{datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}."),
    ]
    if comparison.warnings:
        blocks.append(Block("warning", comparison.warnings))
    if comparison.cautions:
        blocks.append(Block("warning", comparison.cautions, CAUTION))
    blocks += [Block("h2", "Setup"), Block("table", metadata(campaign)),
               Block("table", transport_cells(campaign)),
               Block("h2", "Comparison"), Block("table", main_cells(comparison))]
    if comparison.ceiling:
        blocks.append(Block("p", ceiling_text(comparison)))
    if comparison.geomean:
        blocks += [Block("h3", geo_title(comparison)), Block("table", geomean_cells(comparison))]
    if comparison.placement:
        blocks += [Block("h3", PLACEMENT_TITLE), Block("table", placement_cells(comparison))]
    blocks.append(Block("p", f"_{METHOD}._"))
    blocks.append(Block("h2", "Figures"))
    for item in figures:
        if item.files:
            blocks += [Block("h3", item.title), Block("p", item.description + "."),
                       Block("figure", item)]
    skipped = [f"{item.title}: {item.skipped}" for item in figures if item.skipped]
    if skipped:
        blocks += [Block("p", "Not drawn for this campaign:"), Block("list", skipped)]
    blocks += [Block("h2", "Scenario points"), Block("table", scenario_cells(campaign)),
               Block("h2", "How the numbers are measured"), Block("list", MEASURES + [METHOD]),
               Block("h2", "Reproduce"),
               Block("code", f"ringside compare {campaign.path}\n"
                             f"ringside plot {campaign.path}\n"
                             f"ringside report {campaign.path}")]
    return blocks


# -- writers -----------------------------------------------------------------------------
def _figure_file(item: plots.Rendered, suffix: str) -> Path | None:
    return next((f for f in item.files if f.suffix == suffix), None)


def to_markdown(blocks: list[Block], base: Path) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out += ["#" * int(b.kind[1]) + " " + b.content, ""]
        elif b.kind == "p":
            out += [b.content, ""]
        elif b.kind == "table":
            out += markdown_table(b.content) + [""]
        elif b.kind == "list":
            out += [f"- {x}" for x in b.content] + [""]
        elif b.kind == "code":
            out += ["```", b.content, "```", ""]
        elif b.kind == "warning":
            out += [f"> **{b.extra or WARNING}**", ">"]
            out += [f"> - {w}" for w in b.content] + [""]
        elif b.kind == "figure":
            png, svg = _figure_file(b.content, ".png"), _figure_file(b.content, ".svg")
            image = png or svg
            if image is not None:
                rel = os.path.relpath(image, base)
                out.append(f"![{b.content.title}]({rel})")
                if svg is not None and png is not None:
                    out.append(f"([SVG]({os.path.relpath(svg, base)}))")
                out.append("")
    return "\n".join(out)


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1400px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f3f3f3; }
td.r { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.comparison td:last-child, table.comparison td:nth-child(2) { white-space: nowrap; }
img { max-width: 100%; border: 1px solid #eee; }
.warning { border-left: 4px solid #d62728; background: #fff4f4; padding: 0.5em 1em; }
code, pre { background: #f6f6f6; } pre { padding: 0.6em; }
"""


def _inline(text: str) -> str:
    """The little inline markup the blocks use: `code` and _emphasis_ around a whole line."""
    escaped = html.escape(text)
    parts = escaped.split("`")
    escaped = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    if escaped.startswith("_") and escaped.endswith("_"):
        escaped = f"<em>{escaped[1:-1]}</em>"
    return escaped


def _html_table(cells: Cells) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in cells.head) if any(cells.head) else ""
    rows = []
    for i, row in enumerate(cells.rows):
        tds = []
        for j, value in enumerate(row):
            text = html.escape(value)
            if (i, j) in cells.strong:
                text = f"<strong>{text}</strong>"
            tds.append(f'<td class="r">{text}</td>' if j in cells.right else f"<td>{text}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    css = f' class="{cells.kind}"' if cells.kind else ""
    return (f"<table{css}>" + (f"<thead><tr>{head}</tr></thead>" if head else "")
            + "<tbody>" + "".join(rows) + "</tbody></table>")


def to_html(blocks: list[Block]) -> str:
    title = next((b.content for b in blocks if b.kind == "h1"), "Ringside report")
    out = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{html.escape(b.content)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{_inline(b.content)}</p>")
        elif b.kind == "table":
            out.append(_html_table(b.content))
        elif b.kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in b.content) + "</ul>")
        elif b.kind == "code":
            out.append(f"<pre>{html.escape(b.content)}</pre>")
        elif b.kind == "warning":
            items = "".join(f"<li>{html.escape(w)}</li>" for w in b.content)
            out.append(f'<div class="warning"><strong>{html.escape(b.extra or WARNING)}'
                       f"</strong><ul>{items}</ul></div>")
        elif b.kind == "figure":
            png = _figure_file(b.content, ".png")
            if png is not None:
                data = base64.b64encode(png.read_bytes()).decode()
                out.append(f'<figure><img alt="{html.escape(b.content.title)}" '
                           f'src="data:image/png;base64,{data}"></figure>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_reports(campaign: CampaignResults, formats: tuple[str, ...] = ("markdown",),
                  output: str | os.PathLike[str] | None = None,
                  baseline: str | None = None) -> tuple[Comparison, list[Path]]:
    """Draw the figures (CAMPAIGN/plots) and write the report in each format; `output`
    names the file when there is one format (default CAMPAIGN/report.md or .html)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown report format {unknown[0]!r}; known: {', '.join(FORMATS)}")
    comparison = compare(campaign, baseline)
    figures = plots.render(campaign, baseline=baseline)
    blocks = build(campaign, comparison, figures)
    paths = []
    for fmt in formats:
        suffix = ".md" if fmt == "markdown" else ".html"
        path = Path(output) if output is not None and len(formats) == 1 \
            else campaign.path / f"report{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_markdown(blocks, path.parent) if fmt == "markdown"
                        else to_html(blocks))
        paths.append(path)
    return comparison, paths


def write_report(campaign: CampaignResults, fmt: str = "markdown",
                 output: str | os.PathLike[str] | None = None,
                 baseline: str | None = None) -> Path:
    """Draw the figures and write one report; return its path."""
    return write_reports(campaign, (fmt,), output, baseline)[1][0]
