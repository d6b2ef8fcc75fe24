"""Formatting a Comparison: terminal, markdown, CSV and email (72-column plain text)."""

from __future__ import annotations

import csv
import io
import math
import string
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.analysis.compare import CEILING_TRANSPORT, Comparison, Row
from harness.analysis.stats import Ratio
from transports.spec import terse

FORMATS = ("terminal", "markdown", "csv", "email")
EMAIL_WIDTH = 72
UNITS = {"iops": "IOPS", "bw_mib_s": "MiB/s"}
CAUTION = "Caution: some runs may not measure what they seem to"


# -- numbers -----------------------------------------------------------------------------
def sig(value: float, digits: int = 3) -> str:
    """`digits` significant digits, never in exponent form: 28.8, 155, 2802, 0.0123."""
    if value is None or math.isnan(value):
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:.{decimals}f}"


def compact(value: float) -> str:
    """At most 6 characters: 950, 22.7k, 1.23M."""
    if value is None or math.isnan(value):
        return "-"
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return sig(value / factor) + suffix
    return sig(value)


def grouped(value: float) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else sig(value)


def fmt_ratio(value: float) -> str:
    """A ratio in at most 4 characters: <.01, 0.05, 1.31, 72.2, 123, >999."""
    if value is None or math.isnan(value):
        return "-"
    if value < 0.005:
        return "<.01"
    if value >= 999.5:
        return ">999"
    if value < 9.995:
        return f"{value:.2f}"
    if value < 99.95:
        return f"{value:.1f}"
    return f"{value:.0f}"


def share_text(r: Row, c: Comparison) -> str:
    """A row's throughput as a share of the ceiling's (`direct`): 62%, 8.4%, "ceiling"."""
    if r.transport == c.ceiling:
        return "ceiling"
    if r.of_ceiling is None or math.isnan(r.of_ceiling):
        return "-"
    pct = 100 * r.of_ceiling
    return f"{pct:.0f}%" if pct >= 9.95 else f"{pct:.1f}%"


def share_title(c: Comparison) -> str:
    assert c.ceiling is not None
    return f"% of {c.labels[c.ceiling]}"


def ceiling_text(c: Comparison) -> str:
    """What the share column means, for markdown and the report."""
    assert c.ceiling is not None
    return (f"`{share_title(c)}`: each throughput as a share of `{c.labels[c.ceiling]}`'s, "
            "fio on the backing itself with no FUSE in between (the ceiling).")


def ci_text(r: Ratio | None, sep: str = ", ") -> str:
    if r is None:
        return "-"
    if not r.has_ci:
        return "no CI"
    return f"[{fmt_ratio(r.low)}{sep}{fmt_ratio(r.high)}]"


def ratio_text(r: Ratio | None) -> str:
    return "-" if r is None else fmt_ratio(r.value)


def _describe(point: str, direction: str, rows: list[Row]) -> str:
    return f"{point} {direction} ({UNITS[rows[0].metric]})"


def _by_point(c: Comparison) -> list[tuple[str, str, list[Row]]]:
    return [(p, d, [r for r in c.rows if (r.point, r.direction) == (p, d)])
            for p, d in c.points()]


def geo_title(c: Comparison) -> str:
    k = max((r.n for r in c.geomean.values()), default=0)
    return f"Geometric mean of the ratios over {k} point{'s' * (k != 1)} and directions"


def _email_value(value: float, metric: str) -> str:
    if metric == "bw_mib_s" and not math.isnan(value) and value < 99999.5:
        return f"{value:.0f}" if value >= 100 else sig(value)
    return compact(value)


def _email_small(value: float, width: int = 5) -> str:
    """A per-I/O figure in `width` characters: 0.00426 becomes 0.004, never wider."""
    text = sig(value)
    if len(text) <= width or value is None or math.isnan(value) or abs(value) >= 1:
        return text
    return f"{value:.{width - 2}f}"


def _email_latency(value: float) -> str:
    return sig(value) if math.isnan(value) or value < 99999.5 else compact(value)


# -- terminal ----------------------------------------------------------------------------
def _aligned(rows: list[list[str]], right: set[int], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        out.append((indent + "  ".join(cells)).rstrip())
    return out


PLACEMENT_TITLE = "Placement (where serving threads ran; it differs between the rows)"


def terminal(c: Comparison) -> str:
    base = c.labels[c.baseline]
    ceiling = f", ceiling {c.labels[c.ceiling]} (no FUSE)" if c.ceiling else ""
    lines = [f"Ringside comparison: campaign {c.campaign}, baseline {base}{ceiling}", c.footer,
             ""]
    head = ["transport", "n", "throughput", "p50 µs", "p99 µs", "srv csw/IO",
            "srv CPU µs/IO", f"vs {base}", "95% CI"] + ([share_title(c)] if c.ceiling else [])
    for point, direction, rows in _by_point(c):
        lines.append(_describe(point, direction, rows))
        body = [head] + [
            [r.label, str(r.n), grouped(r.value), sig(r.p50_us), sig(r.p99_us),
             sig(r.server_ctxsw_per_io), sig(r.server_cpu_us_per_io), r.verdict(),
             ci_text(r.ratio)] + ([share_text(r, c)] if c.ceiling else [])
            for r in rows
        ]
        lines += _aligned(body, right={1, 2, 3, 4, 5, 6, 9})
        lines.append("")
    if c.geomean:
        lines.append(geo_title(c))
        body = [[c.labels[s], r.verdict(), ratio_text(r), ci_text(r)]
                for s, r in c.geomean.items()]
        lines += _aligned(body, right={2})
        lines.append("")
    if c.placement:
        lines.append(PLACEMENT_TITLE)
        lines += _aligned([[c.labels.get(s, s), p] for s, p in c.placement.items()], set())
        lines.append("")
    if c.warnings:
        lines.append("Warning: runs differ in more than the transport")
        lines += [f"  ! {w}" for w in c.warnings]
        lines.append("")
    if c.cautions:
        lines.append(CAUTION)
        lines += [f"  ! {w}" for w in c.cautions]
        lines.append("")
    lines.append(c.method)
    return "\n".join(lines) + "\n"


# -- markdown (and the cells the HTML report shares) ------------------------------------
@dataclass
class Cells:
    """A table as text cells; `right` are the right-aligned columns, `strong` the cells
    to emphasise (significant verdicts)."""

    head: list[str]
    rows: list[list[str]]
    right: set[int] = field(default_factory=set)
    strong: set[tuple[int, int]] = field(default_factory=set)
    kind: str = ""  # names the table for styling (the HTML report's class)


def main_cells(c: Comparison) -> Cells:
    base = c.labels[c.baseline]
    cells = Cells(["Point", "Transport", "n", "Throughput", "p50 (µs)", "p99 (µs)",
                   "Server ctxsw/IO", "Server CPU (µs/IO)", f"Ratio vs {base} [95% CI]",
                   "Verdict"] + ([share_title(c)] if c.ceiling else []), [],
                  right=set(range(2, 9)) | ({10} if c.ceiling else set()), kind="comparison")
    for point, direction, rows in _by_point(c):
        for i, r in enumerate(rows):
            if r.ratio is not None and r.ratio.significant:
                cells.strong.add((len(cells.rows), 9))
            cells.rows.append([
                f"{point} {direction}" if i == 0 else "", r.label, str(r.n),
                f"{grouped(r.value)} {UNITS[r.metric]}", sig(r.p50_us), sig(r.p99_us),
                _email_small(r.server_ctxsw_per_io), _email_small(r.server_cpu_us_per_io),
                "—" if r.ratio is None else f"{ratio_text(r.ratio)} {ci_text(r.ratio)}",
                r.verdict(),
            ] + ([share_text(r, c)] if c.ceiling else []))
    return cells


def placement_cells(c: Comparison) -> Cells:
    """Where each transport's serving threads ran, when the rows differ in it."""
    return Cells(["Transport", "Serving threads' policy, CPUs"],
                 [[c.labels.get(s, s), p] for s, p in c.placement.items()], kind="placement")


def geomean_cells(c: Comparison) -> Cells:
    cells = Cells(["Transport", f"Ratio vs {c.labels[c.baseline]} [95% CI]", "Verdict"], [],
                  right={1})
    for spec, r in c.geomean.items():
        if r.significant:
            cells.strong.add((len(cells.rows), 2))
        cells.rows.append([c.labels[spec], f"{ratio_text(r)} {ci_text(r)}", r.verdict()])
    return cells


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def markdown_table(cells: Cells) -> list[str]:
    lines = [_md_row(cells.head),
             "|" + "|".join("--:" if i in cells.right else "---"
                            for i in range(len(cells.head))) + "|"]
    for i, row in enumerate(cells.rows):
        lines.append(_md_row([f"**{v}**" if (i, j) in cells.strong else v
                              for j, v in enumerate(row)]))
    return lines


def markdown(c: Comparison, heading: str = "###") -> str:
    lines = [f"Baseline: `{c.baseline}`. {c.footer}.", ""]
    lines += markdown_table(main_cells(c))
    if c.ceiling:
        lines += ["", ceiling_text(c)]
    if c.geomean:
        lines += ["", f"{heading} {geo_title(c)}", ""]
        lines += markdown_table(geomean_cells(c))
    if c.placement:
        lines += ["", f"{heading} {PLACEMENT_TITLE}", ""]
        lines += markdown_table(placement_cells(c))
    if c.warnings:
        lines += ["", "> **Warning: runs differ in more than the transport**", ">"]
        lines += [f"> - {w}" for w in c.warnings]
    if c.cautions:
        lines += ["", f"> **{CAUTION}**", ">"]
        lines += [f"> - {w}" for w in c.cautions]
    lines += ["", f"_{c.method}._", ""]
    return "\n".join(lines)


# -- CSV ---------------------------------------------------------------------------------
CSV_COLUMNS = ["point", "direction", "transport", "label", "baseline", "n", "metric", "median",
               "p50_us", "p99_us", "server_ctxsw_per_io", "client_ctxsw_per_io",
               "server_cpu_us_per_io", "ratio", "ratio_low", "ratio_high", "significant",
               "verdict"]


def _num(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


def to_csv(c: Comparison) -> str:
    """One line per row; with a ceiling (`direct`) a last column, pct_of_direct."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    share = [] if c.ceiling is None else [f"pct_of_{CEILING_TRANSPORT}"]
    writer.writerow(CSV_COLUMNS + share)
    for r in c.rows:
        ratio = r.ratio
        writer.writerow([
            r.point, r.direction, r.transport, r.label, c.baseline, r.n, r.metric,
            _num(r.value), _num(r.p50_us), _num(r.p99_us), _num(r.server_ctxsw_per_io),
            _num(r.client_ctxsw_per_io), _num(r.server_cpu_us_per_io),
            _num(ratio.value if ratio else 1.0), _num(ratio.low if ratio else None),
            _num(ratio.high if ratio else None),
            "" if ratio is None else str(ratio.significant).lower(), r.verdict(),
        ] + ([_num(None if r.of_ceiling is None else 100 * r.of_ceiling)] if share else []))
    for spec, r in c.geomean.items():
        writer.writerow(["geomean", "", spec, c.labels[spec], c.baseline, r.n, "", "", "", "",
                         "", "", "", _num(r.value), _num(r.low), _num(r.high),
                         str(r.significant).lower(), r.verdict()] + [""] * len(share))
    return out.getvalue()


# -- email -------------------------------------------------------------------------------
# label, throughput, p50, p99, csw/IO, CPU/IO, verdict, CI: 72 columns with separators.
EMAIL_COLUMNS = (12, 6, 5, 5, 5, 5, 15, 11)


def _ascii(text: str) -> str:
    return text.replace("µ", "u").replace("·", "-").encode("ascii", "replace").decode()


def _email_labels(c: Comparison) -> tuple[dict[str, str], list[str]]:
    specs = list(dict.fromkeys(r.transport for r in c.rows))
    short = {s: terse(c.labels[s]) for s in specs}
    if len(set(short.values())) == len(short) and all(
        len(v) <= EMAIL_COLUMNS[0] for v in short.values()
    ):
        return short, []
    letters = dict(zip(specs, string.ascii_uppercase, strict=False))
    legend = [f"{letters[s]} = {s}" + (" (baseline)" if s == c.baseline else "")
              for s in specs]
    return letters, legend


def _email_line(cells: list[str]) -> str:
    w = EMAIL_COLUMNS
    text = (f"{cells[0]:<{w[0]}} {cells[1]:>{w[1]}} {cells[2]:>{w[2]}} {cells[3]:>{w[3]}} "
            f"{cells[4]:>{w[4]}} {cells[5]:>{w[5]}}  {cells[6]:<{w[6]}} {cells[7]:>{w[7]}}")
    return text.rstrip()


def _wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(_ascii(text), EMAIL_WIDTH, initial_indent=indent,
                         subsequent_indent=" " * len(indent), break_on_hyphens=False,
                         break_long_words=True)


def email(c: Comparison) -> str:
    """Plain ASCII, at most 72 columns: for a patch cover letter."""
    names, legend = _email_labels(c)
    base = names[c.baseline]
    ceiling = f", ceiling {c.labels[c.ceiling]} (no FUSE)" if c.ceiling else ""
    lines = _wrap(f"Ringside campaign {c.campaign}, baseline {c.labels[c.baseline]}{ceiling}")
    lines += _wrap(c.footer)
    lines += [_wrap(x)[0] if len(x) > EMAIL_WIDTH else x for x in legend]
    lines.append("")
    for point, direction, rows in _by_point(c):
        lines += _wrap(_describe(point, direction, rows))
        lines.append(_email_line(["", UNITS[rows[0].metric][:6], "p50", "p99", "csw", "CPU",
                                  f"vs {base}"[:15], "95% CI"]))
        lines.append(_email_line(["transport", "", "us", "us", "/IO", "us/IO", "", ""]))
        for r in rows:
            lines.append(_email_line([
                names[r.transport][:EMAIL_COLUMNS[0]], _email_value(r.value, r.metric),
                _email_latency(r.p50_us), _email_latency(r.p99_us),
                _email_small(r.server_ctxsw_per_io), _email_small(r.server_cpu_us_per_io),
                r.verdict(), ci_text(r.ratio, sep=","),
            ]))
        if c.ceiling:
            shares = [f"{names[r.transport]} {share_text(r, c)}" for r in rows
                      if r.transport != c.ceiling]
            lines += _wrap(f"{share_title(c)}: " + ", ".join(shares))
        lines.append("")
    if c.geomean:
        lines.append(geo_title(c))
        for spec, r in c.geomean.items():
            lines.append(_email_line([names[spec][:EMAIL_COLUMNS[0]], "", "", "", "", "",
                                      r.verdict(), ci_text(r, sep=",")]))
        lines.append("")
    if c.placement:
        lines.append(PLACEMENT_TITLE + ":")
        for spec, where in c.placement.items():
            lines += _wrap(f"{names[spec]}: {where}", indent="  - ")
        lines.append("")
    if c.warnings:
        lines.append("WARNING: runs differ in more than the transport:")
        for w in c.warnings:
            lines += _wrap(w, indent="  - ")
        lines.append("")
    if c.cautions:
        lines.append("CAUTION: some runs may not measure what they seem to:")
        for w in c.cautions:
            lines += _wrap(w, indent="  - ")
        lines.append("")
    lines += _wrap(c.method)
    return "\n".join(_ascii(line) for line in lines) + "\n"


FORMATTERS: dict[str, Callable[[Comparison], str]] = {
    "terminal": terminal,
    "markdown": markdown,
    "csv": to_csv,
    "email": email,
}


def render(c: Comparison, fmt: str) -> str:
    if fmt not in FORMATTERS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    return FORMATTERS[fmt](c)
