"""`ringside plot`: every figure renders, with units, a legend and the footer."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.analysis.campaign_results import load_campaign
from harness.analysis.plots import PLOTS, NotApplicable, PlotContext, buffer_pairs, render
from harness.analysis.synthetic import default_points, write_campaign
from harness.cli import main

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def small_points() -> list:
    """The fewest points every figure draws from (each is a panel, and panels are what
    rendering costs): a sweep of iodepth (1, 16 at one job) and of numjobs (1, 2 at depth
    1), and a one-off bandwidth point."""
    points = default_points()
    sweep = [p for p in points if (p.sweep.get("iodepth"), p.sweep.get("numjobs"))
             in ((1, 1), (16, 1), (1, 2))]
    return [*sweep, next(p for p in points if p.scenario == "seqread-1m")]


@pytest.fixture(scope="module")
def campaign_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_campaign(tmp_path_factory.mktemp("plots") / "synthetic",
                          points=small_points(), repetitions=3)


@pytest.fixture(scope="module")
def ctx(campaign_dir: Path) -> PlotContext:
    return PlotContext.build(load_campaign(campaign_dir))


@pytest.mark.parametrize("name", list(PLOTS))
def test_figure_has_units_legend_and_footer(ctx: PlotContext, name: str) -> None:
    fig = PLOTS[name].draw(ctx)
    texts = [t.get_text() for t in fig.texts]
    assert any("host devbox" in t and "kernel 6.18.0" in t and "campaign synthetic" in t
               for t in texts), texts
    assert fig.legends, "a legend names the transports"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "uring:pinned" in " ".join(labels)
    for ax in fig.axes:
        unit = ax.get_xlabel() + ax.get_ylabel()
        assert any(u in unit for u in ("IOPS", "MiB/s", "µs", "per I/O", "log scale")), (
            name, ax.get_title(), unit)


@pytest.fixture(scope="module")
def markdown_report(campaign_dir: Path) -> Path:
    """`ringside report CAMPAIGN`, once: it draws every figure into CAMPAIGN/plots (render()
    with its defaults) and writes report.md beside them. Drawing is what this module spends
    its time on, so the tests of both read what it left."""
    assert main(["report", str(campaign_dir)]) == 0
    return campaign_dir / "report.md"


def test_render_writes_png_and_svg(campaign_dir: Path, markdown_report: Path) -> None:
    # Every figure, as the report drew it: a PNG and an SVG each.
    for name in PLOTS:
        png, svg = (campaign_dir / "plots" / f"{name}.{fmt}" for fmt in ("png", "svg"))
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 20_000, name
        text = svg.read_text()
        assert text.lstrip().startswith("<?xml") and "campaign synthetic" in text, name
    # What render() answers, asked for two of them.
    names = ["ratios", "sweep_numjobs"]
    done = render(load_campaign(campaign_dir), names=names)
    assert [d.name for d in done] == names
    for item in done:
        assert item.skipped is None, (item.name, item.skipped)
        assert item.files == [campaign_dir / "plots" / f"{item.name}.{fmt}"
                              for fmt in ("png", "svg")]


def test_plots_that_do_not_apply_say_why(tmp_path: Path) -> None:
    path = write_campaign(tmp_path / "flat", {"pyfuse3": 1.0, "devfuse": 1.5},
                          points=default_points()[:1], repetitions=2, warmup=False)
    ctx = PlotContext.build(load_campaign(path))
    with pytest.raises(NotApplicable, match="buffers"):
        PLOTS["pinned_vs_mapped"].draw(ctx)
    with pytest.raises(NotApplicable, match="no scenario sweeps iodepth"):
        PLOTS["sweep_iodepth"].draw(ctx)
    # Every figure of such a campaign is drawn by test_report_lists_plots_it_could_not_draw.
    done = {d.name: d for d in render(load_campaign(path), ["sweep_numjobs", "throughput"],
                                      formats=("png",))}
    assert done["sweep_numjobs"].skipped and not done["sweep_numjobs"].files
    assert done["throughput"].files == [path / "plots" / "throughput.png"]


def test_buffer_pairs() -> None:
    specs = ["uring:depth=8,buffers=mapped", "uring:depth=8,buffers=pinned",
             "uring:depth=32,buffers=pinned", "pyfuse3"]
    assert buffer_pairs(specs) == [("uring:depth=8,buffers=mapped",
                                    "uring:depth=8,buffers=pinned")]
    # A bare `uring` is mapped by default: its recorded settings say so.
    recorded = {"uring": {"buffers": "mapped", "depth": 8},
                "uring:buffers=pinned": {"buffers": "pinned", "depth": 8},
                "uring:depth=16,buffers=pinned": {"buffers": "pinned", "depth": 16}}
    assert buffer_pairs(list(recorded), recorded) == [("uring", "uring:buffers=pinned")]


def test_cli(campaign_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(campaign_dir), "-p", "ratios", "--out", str(tmp_path),
                 "--format", "svg"]) == 0
    assert (tmp_path / "ratios.svg").exists() and not (tmp_path / "ratios.png").exists()
    assert "ratios" in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "none")]) == 2


def test_every_plot_renders_from_the_reference_campaign(reference_runs: Path,
                                                        tmp_path: Path) -> None:
    # Its runs at a sweep of each kind and a bandwidth point (tests/conftest.py), drawn
    # (layout included), not written: writing the files is test_render_writes_...'s.
    done = render(load_campaign(reference_runs), out_dir=tmp_path, formats=())
    drawn = [d.name for d in done if d.skipped is None]
    for name in ("throughput", "latency_percentiles", "latency_cdf", "context_switches",
                 "server_cpu"):
        assert name in drawn, [(d.name, d.skipped) for d in done]


# -- ringside report ---------------------------------------------------------------------
def test_markdown_report_has_tables_figures_and_metadata(markdown_report: Path) -> None:
    path = markdown_report
    text = path.read_text()
    for needle in ("# Ringside report: synthetic", "## Setup", "| Kernel | 6.18.0 |",
                   "warmup runs (excluded", "## Comparison", "**1.30x faster**",
                   "Geometric mean", "Welch", "## Scenario points", "seqread-1m"):
        assert needle in text, needle
    # each transport with every setting its results recorded
    settings = next(line for line in text.splitlines()
                    if line.startswith("| uring:buffers=pinned | ") and "depth=" in line)
    assert all(s in settings for s in ("depth=8", "buffers=pinned", "affinity=True", "sched=auto"))
    images = [line for line in text.splitlines() if line.startswith("![")]
    targets = [line[line.index("](") + 2:-1] for line in images]
    assert [Path(t).stem for t in targets] == list(PLOTS), targets
    for target in targets:
        assert (path.parent / target).is_file(), target


def test_html_report_stands_alone(tmp_path: Path) -> None:
    # One point: fewer figures to draw (the sweeps do not apply), each embedded all the same.
    campaign = write_campaign(tmp_path / "c", {"pyfuse3": 1.0, "devfuse": 1.3},
                              points=default_points()[:1], repetitions=2, warmup=False,
                              paired=True)
    out = tmp_path / "elsewhere" / "report.html"
    assert main(["report", str(campaign), "-f", "html", "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>")
    drawn = sorted((campaign / "plots").glob("*.png"))
    assert len(drawn) >= 5 and text.count("data:image/png;base64,") == len(drawn)
    assert "<strong>1.30x faster</strong>" in text and "<td>Kernel</td>" in text
    assert 'src="plots/' not in text, "no reference to files beside the report"


def test_report_lists_plots_it_could_not_draw(tmp_path: Path) -> None:
    path = write_campaign(tmp_path / "flat", {"pyfuse3": 1.0, "devfuse": 1.5},
                          points=default_points()[:1], repetitions=2, warmup=False)
    assert main(["report", str(path)]) == 0
    text = (path / "report.md").read_text()
    assert "Not drawn for this campaign:" in text and "no scenario sweeps iodepth" in text


# -- latency from fio json+ ----------------------------------------------------------------
def test_latency_bins_percentiles_and_the_total_latency_preference() -> None:
    from harness.analysis import latency

    clat = {"bins": {"1000": 50, "2000": 40, "8000": 10},
            "percentile": {"50.000000": 1000, "90.000000": 2000, "99.000000": 8000,
                           "99.900000": 8000, "99.990000": 8000}}
    raw = {"jobs": [{"read": {"total_ios": 100, "clat_ns": clat}}]}
    assert latency.kind(raw, "read") == "clat_ns"
    assert latency.percentiles(raw, "read") == {"p50": 1000, "p90": 2000, "p99": 8000,
                                                "p99.9": 8000, "p99.99": 8000}
    x, y = latency.cdf(latency.bins(raw, "read"))
    assert list(x) == [1000, 2000, 8000] and list(y) == pytest.approx([0.5, 0.9, 1.0])
    # Two jobs without group reporting: bins add up, percentiles come from them.
    two = {"jobs": [raw["jobs"][0], raw["jobs"][0]]}
    assert latency.bins(two, "read")[1000] == 100
    assert latency.percentiles(two, "read")["p90"] == 2000
    # With lat_percentiles=1, total latency (slat + clat) is what the figures show.
    lat = {"bins": {"3000": 100}, "percentile": {k: 3000 for k in clat["percentile"]}}
    raw["jobs"][0]["read"]["lat_ns"] = lat
    assert latency.kind(raw, "read") == "lat_ns"
    assert latency.percentiles(raw, "read")["p50"] == 3000
