"""`ringside compare`: statistics on synthetic results with known answers, and formats."""

from __future__ import annotations

import io
import json
import math
import random
from datetime import UTC, datetime
from pathlib import Path

import numpy
import pandas
import pytest

from harness.analysis import stats
from harness.analysis.campaign_results import load_campaign
from harness.analysis.compare import CompareError, choose_baseline, compare, short_labels
from harness.analysis.synthetic import Point, default_points, make_run, write_campaign
from harness.analysis.tables import EMAIL_WIDTH, render
from harness.cli import main
from harness.results import write_result

FACTORS = {"pyfuse3": 1.0, "devfuse": 1.3, "uring:buffers=mapped": 1.0,
           "uring:buffers=pinned": 1 / 1.12}


# -- the statistics ----------------------------------------------------------------------
@pytest.mark.parametrize("df,expected", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764),
                                         (10, 2.2281), (30, 2.0423), (1e9, 1.9600)])
def test_t_quantile_matches_tables(df: float, expected: float) -> None:
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_known_ratio_and_its_interval_by_hand() -> None:
    base = [100.0, 110.0, 90.0]
    r = stats.ratio([1.31 * v for v in base], base)
    assert r.value == pytest.approx(1.31)
    # Same log spread on both sides and n = 3 each: Welch's df is 4.
    logs = [math.log(v) for v in base]
    mean = sum(logs) / 3
    var = sum((x - mean) ** 2 for x in logs) / 2
    half = 2.7764451 * math.sqrt(2 * var / 3)
    assert r.df == pytest.approx(4)
    assert r.low == pytest.approx(1.31 * math.exp(-half), rel=1e-6)
    assert r.high == pytest.approx(1.31 * math.exp(half), rel=1e-6)
    assert r.significant and r.verdict() == "1.31x faster"


def test_slower_and_lower_is_better_wording() -> None:
    base = [100.0, 101.0, 99.0, 100.5]
    r = stats.ratio([v / 1.12 for v in base], base)
    assert r.verdict() == "1.12x slower"
    assert r.verdict(higher_is_better=False) == "1.12x faster"


def test_not_significant_when_repetitions_cannot_tell() -> None:
    r = stats.ratio([100.0, 130.0, 80.0], [95.0, 120.0, 90.0])
    assert r.low < 1.0 < r.high
    assert not r.significant and r.verdict() == "not significant"
    # Identical samples: a ratio of exactly 1 is never a difference.
    same = stats.ratio([1.0, 2.0, 3.0], [3.0, 1.0, 2.0])
    assert same.value == pytest.approx(1.0) and same.verdict() == "not significant"


def test_one_run_has_no_interval() -> None:
    r = stats.ratio([130.0], [100.0, 101.0])
    assert r.value == pytest.approx(130 / math.sqrt(100 * 101))
    assert not r.has_ci and not r.significant
    assert r.verdict() == f"{r.value:.2f}x (no CI)"
    assert math.isnan(stats.ratio([], [1.0]).value)


def test_interval_covers_the_true_ratio_95_percent_of_the_time() -> None:
    # Unequal spreads and sizes: what Welch's interval is for.
    rng = random.Random(7)
    trials, hits = 1000, 0
    for _ in range(trials):
        a = [1.2 * rng.lognormvariate(0, 0.05) for _ in range(3)]
        b = [rng.lognormvariate(0, 0.15) for _ in range(5)]
        r = stats.ratio(a, b)
        hits += r.low <= 1.2 <= r.high
    assert 0.93 <= hits / trials <= 0.975


def test_geometric_mean_of_ratios() -> None:
    base = [100.0, 102.0, 98.0]
    g = stats.geomean_ratio([([2 * v for v in base], base), ([v / 2 for v in base], base)])
    assert g.value == pytest.approx(1.0) and g.n == 2
    assert g.verdict() == "not significant"
    g = stats.geomean_ratio([([1.5 * v for v in base], base), ([1.5 * v for v in base], base)])
    assert g.value == pytest.approx(1.5) and g.verdict() == "1.50x faster"


def test_interval_of_one_transport() -> None:
    i = stats.interval([100.0, 100.0, 100.0])
    assert (i.center, i.low, i.high, i.n) == pytest.approx((100, 100, 100, 3))
    assert math.isnan(stats.interval([5.0]).low)


# -- a synthetic campaign ----------------------------------------------------------------
@pytest.fixture(scope="module")
def campaign_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_campaign(tmp_path_factory.mktemp("campaign") / "synthetic", FACTORS,
                          paired=True, noise=0.02, repetitions=3)


def test_campaign_ratios_are_the_known_factors(campaign_dir: Path) -> None:
    c = compare(load_campaign(campaign_dir))
    assert c.baseline == "pyfuse3" and not c.warnings
    points = c.points()
    assert len(points) == 10  # 9 points, randrw has two directions
    for row in c.rows:
        assert row.n == 3, "the warmup run is excluded"
        if row.is_baseline:
            assert row.verdict() == "baseline"
            continue
        expected = FACTORS[row.transport]
        assert row.ratio is not None and row.ratio.value == pytest.approx(expected)
        assert row.ratio.low <= expected <= row.ratio.high
        assert row.verdict() == {"devfuse": "1.30x faster",
                                 "uring:buffers=mapped": "not significant",
                                 "uring:buffers=pinned": "1.12x slower"}[row.transport]
    assert c.geomean["devfuse"].value == pytest.approx(1.3)
    assert c.geomean["devfuse"].verdict() == "1.30x faster"
    assert c.geomean["uring:buffers=mapped"].verdict() == "not significant"
    metrics = {(r.point, r.metric) for r in c.rows}
    assert ("seqread-1m", "bw_mib_s") in metrics and ("randread-4k-qd1", "iops") in metrics


def test_warmup_runs_would_change_the_answer(campaign_dir: Path) -> None:
    loaded = load_campaign(campaign_dir)
    assert loaded.runs["warmup"].sum() > 0
    assert len(loaded.table) < len(loaded.runs)


def test_baseline_choice(campaign_dir: Path) -> None:
    specs = sorted(FACTORS)
    assert choose_baseline(specs, None) == "pyfuse3"
    assert choose_baseline(specs, "devfuse") == "devfuse"
    assert choose_baseline(specs, "uring:buffers=pinned") == "uring:buffers=pinned"
    with pytest.raises(CompareError, match="several"):
        choose_baseline(specs, "uring")
    with pytest.raises(CompareError, match="not in this campaign"):
        choose_baseline(specs, "qsd")
    c = compare(load_campaign(campaign_dir), "devfuse")
    row = next(r for r in c.rows if r.transport == "pyfuse3")
    assert row.ratio is not None and row.ratio.value == pytest.approx(1 / 1.3)


def test_short_labels() -> None:
    labels = short_labels(["uring:depth=8,buffers=pinned", "uring:depth=8,buffers=mapped",
                           "pyfuse3"])
    assert labels == {"uring:depth=8,buffers=pinned": "uring:buffers=pinned",
                      "uring:depth=8,buffers=mapped": "uring:buffers=mapped",
                      "pyfuse3": "pyfuse3"}


START = datetime(2026, 1, 1, tzinfo=UTC)


def _one_point_campaign(path: Path, **per_transport: dict) -> Path:
    point = Point("randread-4k-qd1", default_points()[0].fio)
    for rep in range(3):
        for spec, kwargs in per_transport.items():
            rng = numpy.random.default_rng(3 + rep)
            data = make_run(point, spec, 1.0, rng, start=START, campaign="c",
                            repetition=rep, **kwargs)
            write_result(path, data)
    return path


def test_warning_block_names_what_differs(tmp_path: Path) -> None:
    host = {"hostname": "devbox", "kernel": "6.17.1", "cpu_count": 2, "cpu_model": "X"}
    path = _one_point_campaign(tmp_path / "c", pyfuse3={}, devfuse={"host": host,
                               "git_commit": "f" * 40})
    c = compare(load_campaign(path))
    text = "\n".join(c.warnings)
    assert "this table mixes kernels: " in text
    assert "6.18.0 (3 runs)" in text and "6.17.1 (3 runs)" in text
    assert "git commit differs" in text and "ffffffffffff" in text
    assert "CPU model differs" in text
    email = render(c, "email")
    assert "WARNING: runs differ in more than the transport" in email
    assert "runs differ in more than the transport" in render(c, "terminal")
    assert "runs differ in more than the transport" in render(c, "markdown")


def test_fio_options_differing_within_a_point_warn(tmp_path: Path) -> None:
    path = _one_point_campaign(tmp_path / "c", pyfuse3={}, devfuse={})
    data = make_run(Point("randread-4k-qd1", {**default_points()[0].fio, "runtime": 5}),
                    "devfuse", 1.0, numpy.random.default_rng(1), start=START,
                    campaign="c", repetition=4)
    write_result(path, data)
    warnings = compare(load_campaign(path)).warnings
    assert any("fio runtime differs" in w for w in warnings)
    assert any("uneven repetitions" in w for w in warnings)


# -- formats -----------------------------------------------------------------------------
def test_email_fits_72_columns_and_is_ascii(campaign_dir: Path) -> None:
    c = compare(load_campaign(campaign_dir))
    text = render(c, "email")
    for line in text.splitlines():
        assert len(line) <= EMAIL_WIDTH, line
        assert line.isascii(), line
    assert "1.30x faster" in text and "1.12x slower" in text and "not significant" in text
    assert "uring:pinned" in text and "Welch" in text


def test_email_with_long_specs_uses_a_legend(tmp_path: Path) -> None:
    long = "uring:depth=16,buffers=pinned,affinity=off"
    path = write_campaign(tmp_path / "c", {"pyfuse3": 1.0, long: 2.0,
                                           "uring:depth=64,buffers=mapped,affinity=on": 2.0},
                          points=default_points()[:2], repetitions=2, warmup=False)
    text = render(compare(load_campaign(path)), "email")
    assert f"B = {long}" in text or f"C = {long}" in text
    assert max(len(line) for line in text.splitlines()) <= EMAIL_WIDTH


def test_csv_is_machine_readable(campaign_dir: Path) -> None:
    table = pandas.read_csv(io.StringIO(render(compare(load_campaign(campaign_dir)), "csv")))
    devfuse = table[(table["transport"] == "devfuse") & (table["point"] != "geomean")]
    assert len(devfuse) == 10
    assert devfuse["ratio"].to_numpy() == pytest.approx([1.3] * 10)
    assert (devfuse["ratio_low"] < 1.3).all() and (devfuse["ratio_high"] > 1.3).all()
    assert set(table.loc[table["point"] == "geomean", "transport"]) == set(FACTORS) - {"pyfuse3"}


def test_markdown_table_is_well_formed(campaign_dir: Path) -> None:
    text = render(compare(load_campaign(campaign_dir)), "markdown")
    table = [line for line in text.splitlines() if line.startswith("|")]
    widths = {line.count("|") - line.count("\\|") for line in table[:42]}
    assert len(widths) == 1, "every row of the main table has the same number of cells"
    assert "**1.30x faster**" in text


def test_cli(campaign_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["compare", str(campaign_dir), "--format", "email"]) == 0
    out = capsys.readouterr().out
    assert "randread-4k-qd1 read (IOPS)" in out
    assert main(["compare", str(campaign_dir), "--baseline", "nope"]) == 2
    assert "not in this campaign" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    out_file = tmp_path / "table.csv"
    assert main(["compare", str(campaign_dir), "-f", "csv", "-o", str(out_file)]) == 0
    assert out_file.read_text().startswith("point,direction,transport")


def test_cautions_name_runs_whose_idle_queue_threads_were_starved(tmp_path: Path) -> None:
    path = tmp_path / "c"
    point = Point("randread-4k-qd1", default_points()[0].fio)
    for rep in range(3):
        for spec in ("pyfuse3", "uring"):
            data = make_run(point, spec, 1.0, numpy.random.default_rng(rep), start=START,
                            campaign="c", repetition=rep)
            if spec == "uring":
                data["transport_stats"]["sched_guard"] = {
                    "boosts": 2 if rep == 1 else 0, "boosted_ms": 300.0 if rep == 1 else 0.0}
            write_result(path, data)
    text = "\n".join(compare(load_campaign(path)).cautions)
    assert ("randread-4k-qd1 on uring, 1 of 3 runs: sched=idle's guard found serving "
            "threads starved 2 times and ran them SCHED_BATCH for 300 ms") in text
    assert "pyfuse3" not in text


def test_cautions_name_runs_that_measured_little(tmp_path: Path) -> None:
    path = tmp_path / "c"
    point = Point("randread-4k-qd1", default_points()[0].fio)
    for rep in range(2):
        for spec in ("pyfuse3", "devfuse", "qsd"):
            data = make_run(point, spec, 1.0, numpy.random.default_rng(rep), start=START,
                            campaign="c", repetition=rep)
            if spec == "devfuse":
                data["coverage"] = {"requests_per_io": 0.01, "warning": "the server saw 5 "
                                    "data requests for 500 fio I/Os: caches absorbed it"}
            if spec == "qsd":
                data["coverage"] = {"warning": "the transport counts no requests (a peer "
                                    "server): coverage unknown"}
            write_result(path, data)
    manifest = {"id": "c", "runs": [{"point": "randread-4k-qd1", "transport": "uring",
                                      "status": "failed", "error": "uring: no ring"},
                                     {"point": "randread-4k-qd1", "transport": "pyfuse3",
                                      "status": "done"}]}
    (path / "campaign.json").write_text(json.dumps(manifest))
    c = compare(load_campaign(path))
    text = "\n".join(c.cautions)
    assert "randread-4k-qd1 on devfuse, 2 of 2 runs: the server saw 5" in text
    assert "qsd: the transport counts no requests" in text and "(2 runs)" in text
    assert "1 of 2 planned runs did not complete (1 failed" in text and "no ring" in text
    assert not c.warnings
    for fmt in ("terminal", "markdown", "email"):
        assert "may not measure what they seem to" in render(c, fmt)
