"""--reps auto: rounds until each point's answer is decided, and the stability warnings.

The plan and the decisions are tested on synthetic results (harness.analysis.synthetic)
written by a campaign whose runs are replaced by make_run: the noise chosen per point
makes one point decided after the first rounds and another one never. One small
campaign runs on real mounts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy
import pytest
from test_campaign import _built, ringside

from conftest import fuse_usable, require
from harness.analysis import stability
from harness.analysis.campaign_results import load_campaign
from harness.analysis.compare import compare
from harness.analysis.synthetic import make_run
from harness.campaigns.interleaved import Adaptive, Campaign, PlannedRun, decision_lines, plan
from harness.campaigns.suites import load_suite
from harness.point.runner import RunOptions
from harness.results import load, write_result
from harness.scenarios import load_scenario
from transports.base import parse_spec
from transports.export.spec import ExportSpec

FACTORS = {"pyfuse3": 1.0, "devfuse": 1.3}
QUIET, NOISY = "randread-4k-qd1", "seqread-1m"


class SyntheticCampaign(Campaign):
    """The real campaign logic; each run writes a synthetic result instead of mounting.
    The throughput noise depends on the point: small at QUIET, large at NOISY."""

    noise: dict[str, float]

    def _run_one(self, run: PlannedRun) -> Path:
        rng = self.__dict__.setdefault("_rng", numpy.random.default_rng(7))
        spec = str(run.transport)
        data = make_run(run.point, spec, FACTORS[spec], rng,
                        start=datetime(2026, 1, 2, tzinfo=UTC) + timedelta(seconds=run.index),
                        campaign=self.id, repetition=run.repetition, warmup=run.warmup,
                        noise=self.noise[run.point.scenario])
        return write_result(self.directory, data)


def synthetic_campaign(directory: Path, adaptive: Adaptive | None, warmup: int = 0,
                       noise: dict[str, float] | None = None) -> SyntheticCampaign:
    scenarios = [load_scenario(QUIET), load_scenario(NOISY)]
    specs = [parse_spec(s) for s in FACTORS]
    rounds = adaptive.min_rounds if adaptive else 3
    runs = plan(scenarios, specs, rounds, warmup, {"runtime": 1})
    options = RunOptions(transport=specs[0], out=directory,
                         export=ExportSpec(backing="memory:64M", fill="data"))
    campaign = SyntheticCampaign(directory.name, directory, runs,
                                 "auto" if adaptive else rounds, warmup, "synthetic", options,
                                 adaptive=adaptive, log=lambda m: None)
    campaign.noise = noise or {QUIET: 0.01, NOISY: 0.4}
    return campaign


def test_auto_gives_rounds_to_the_undecided_point_only_and_names_it(tmp_path, capsys):
    campaign = synthetic_campaign(tmp_path / "auto", Adaptive(max_reps=6), warmup=1)
    manifest = campaign.execute(progress=False)

    assert manifest["status"] == "done" and manifest["reps"] == "auto"
    points = manifest["adaptive"]["points"]
    quiet = next(v for k, v in points.items() if k.startswith(QUIET))
    noisy = next(v for k, v in points.items() if k.startswith(NOISY))
    assert quiet["rounds"] == 3 and quiet["decided"] and quiet["stopped"] == "decided"
    assert quiet["widest_ci"] < 0.10 and quiet["wide"] == {}
    assert noisy["rounds"] == 6 and not noisy["decided"] and noisy["stopped"] == "max_reps"
    assert noisy["widest"] == "devfuse" and noisy["wide"]["devfuse"] > 0.10
    assert manifest["adaptive"]["baseline"] == "pyfuse3"

    # Every run is in the manifest, the added ones appended, all of them done.
    runs = manifest["runs"]
    warmups, first = 2 * 2, 2 * 2 * 3
    assert len(runs) == warmups + first + 3 * 2
    assert [r["status"] for r in runs] == ["done"] * len(runs)
    added = runs[warmups + first:]
    assert {r["point"] for r in added} == {noisy_label(manifest)}
    assert [(r["repetition"], r["transport"]) for r in added] == [
        (3, "devfuse"), (3, "pyfuse3"), (4, "pyfuse3"), (4, "devfuse"),
        (5, "devfuse"), (5, "pyfuse3")]  # the order still alternates round by round
    assert [r["index"] for r in runs] == list(range(len(runs)))
    assert len(load(tmp_path / "auto")) == len(runs)
    on_disk = json.loads((tmp_path / "auto" / "campaign.json").read_text())
    assert on_disk["adaptive"] == manifest["adaptive"]

    lines = decision_lines(manifest)
    assert lines[0].startswith("ringside: --reps auto: 1 of 2 points decided")
    assert any(line.strip().startswith(f"{noisy_label(manifest)}: UNDECIDED after 6 rounds, "
                                       "stopped at --max-reps 6: devfuse ±") for line in lines)

    # On the way, the noisy point's spread was named with what to do.
    err = capsys.readouterr()
    said = err.out + err.err
    assert f"one more round for {noisy_label(manifest)} (devfuse ±" in said
    assert f"warning: {noisy_label(manifest)}: throughput varies by more than 10%" in said

    # compare names the undecided point, and only it.
    notes = compare(load_campaign(tmp_path / "auto")).cautions
    undecided = [n for n in notes if "undecided" in n]
    assert len(undecided) == 1
    assert undecided[0].startswith(f"{noisy_label(manifest)}: undecided: 95% CI wider than "
                                   "±10% for devfuse")
    assert "after 6 rounds (stopped at the --max-reps cap)" in undecided[0]


def noisy_label(manifest: dict) -> str:
    return next(p for p in manifest["points"] if p.startswith(NOISY))


def test_auto_stops_after_the_first_rounds_when_everything_is_decided(tmp_path):
    campaign = synthetic_campaign(tmp_path / "calm", Adaptive(),
                                  noise={QUIET: 0.01, NOISY: 0.01})
    manifest = campaign.execute(progress=False)
    assert len(manifest["runs"]) == 2 * 2 * 3
    assert all(p["decided"] and p["rounds"] == 3 for p in manifest["adaptive"]["points"].values())
    assert not [n for n in compare(load_campaign(tmp_path / "calm")).cautions
                if "undecided" in n or "varies" in n]


def test_a_fixed_count_records_no_decisions_and_compare_adds_none(tmp_path):
    campaign = synthetic_campaign(tmp_path / "fixed", None)
    manifest = campaign.execute(progress=False)
    assert "adaptive" not in manifest and manifest["reps"] == 3
    assert len(manifest["runs"]) == 2 * 2 * 3
    assert not [n for n in compare(load_campaign(tmp_path / "fixed")).cautions
                if "undecided" in n]


def test_the_budget_stops_rounds_widest_first(tmp_path):
    """Given the runs' recorded durations (3 s each, so 6 s a round), a round is added
    only while it ends within the budget; the widest CI gets the round first."""
    campaign = synthetic_campaign(tmp_path / "budget", Adaptive(budget_s=50),
                                  noise={QUIET: 0.2, NOISY: 0.4})
    campaign.adaptive = None  # run the first rounds only, judged later by hand
    manifest = campaign.execute(progress=False)
    campaign.adaptive = Adaptive(budget_s=50)
    manifest.update(campaign.manifest())
    for entry in manifest["runs"]:
        entry["seconds"] = 3.0
    comparison = compare(load_campaign(tmp_path / "budget"))

    added = campaign._next_rounds(comparison, manifest, elapsed=40)
    points = manifest["adaptive"]["points"]
    widest = max(points, key=lambda p: points[p]["widest_ci"])
    assert {r.point.label for r in added} == {widest} and len(added) == 2
    assert points[widest]["rounds"] == 4 and points[widest]["stopped"] is None
    other = next(p for p in points if p != widest)
    assert points[other]["stopped"] == "budget" and not points[other]["decided"]

    assert campaign._next_rounds(comparison, manifest, elapsed=45) == []
    assert points[widest]["stopped"] == "budget"
    assert "stopped by the time budget (50 s)" in "\n".join(decision_lines(manifest))


def test_quick_suite_runs_until_decided_within_its_budget(tmp_path):
    suite = load_suite("quick")
    assert suite.reps == "auto" and suite.budget_s and suite.budget_s <= 270
    quick = _built(tmp_path, "quick", "-t", "devfuse", "-t", "pyfuse3")
    assert quick.adaptive is not None and quick.adaptive.budget_s == suite.budget_s
    assert len(quick.runs) == len(suite.scenarios) * 2 * quick.adaptive.min_rounds
    alone = _built(tmp_path, "quick", "-t", "devfuse")  # no ratio to judge: the first rounds
    assert alone.adaptive is None and alone.reps == quick.adaptive.min_rounds
    fixed = _built(tmp_path, "quick", "-t", "devfuse", "-t", "pyfuse3", "--reps", "2")
    assert fixed.adaptive is None and fixed.reps == 2
    tuned = _built(tmp_path, "quick", "-t", "devfuse", "-t", "pyfuse3", "--max-reps", "5",
                   "--ci-within", "5", "--budget", "60")
    assert tuned.adaptive.max_reps == 5 and tuned.adaptive.ci_within == pytest.approx(0.05)
    assert tuned.adaptive.budget_s == 60


@pytest.mark.parametrize(
    "args, expected",
    [
        (["randread-4k-qd1", "-t", "pyfuse3", "--max-reps", "5"],
         "--max-reps only apply with --reps auto"),
        (["randread-4k-qd1", "-t", "pyfuse3", "--reps", "auto"], "needs at least two transports"),
        (["randread-4k-qd1", "-t", "pyfuse3", "-t", "devfuse", "--reps", "auto",
          "--max-reps", "2"], "--max-reps must be at least 3"),
        (["randread-4k-qd1", "-t", "pyfuse3", "-t", "devfuse", "--reps", "auto",
          "--ci-within", "0"], "--ci-within is a percentage"),
        (["randread-4k-qd1", "-t", "pyfuse3", "-t", "devfuse", "--baseline", "qsd"],
         "baseline 'qsd' is not in this campaign"),
    ],
)
def test_auto_bad_input(tmp_path, args, expected):
    proc = ringside("campaign", *args, "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert not any(tmp_path.iterdir())


def test_reps_must_be_a_count_or_auto(tmp_path):
    proc = ringside("campaign", "randread-4k-qd1", "--reps", "many", "--out", str(tmp_path))
    assert proc.returncode == 2 and "'many' is neither a count nor auto" in proc.stderr


@pytest.mark.mount
def test_auto_campaign_on_real_mounts(tmp_path):
    require(fuse_usable())
    proc = ringside("campaign", "randread-4k-qd1", "-t", "pyfuse3", "-t", "devfuse",
                    "--reps", "auto", "--max-reps", "4", "--warmup", "0", "--runtime", "1",
                    "--backing", "memory:64M", "--out", str(tmp_path), "--id", "auto",
                    "--no-progress")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "auto" / "campaign.json").read_text())
    assert manifest["status"] == "done"
    (label, point), = manifest["adaptive"]["points"].items()
    assert 3 <= point["rounds"] <= 4
    assert point["stopped"] in ("decided", "max_reps")
    assert point["decided"] == (point["stopped"] == "decided")
    assert len(manifest["runs"]) == 2 * point["rounds"]
    assert [r["status"] for r in manifest["runs"]] == ["done"] * len(manifest["runs"])
    assert len(load(tmp_path / "auto")) == len(manifest["runs"])
    assert "ringside: --reps auto: " in proc.stderr
    if not point["decided"]:  # an undecided point is named, at the end and by compare
        assert f"{label}: UNDECIDED after 4 rounds" in proc.stderr
        shown = ringside("compare", str(tmp_path / "auto"))
        assert f"{label}: undecided" in shown.stdout


def test_spread_warning_triggers_over_ten_percent_only():
    noisy = stability.warnings({("p", "uring"): [100, 130, 80, 110]}, {"p": "IOPS"})
    assert [w.kind for w in noisy] == ["spread"]
    assert noisy[0].text.startswith("p: throughput varies by more than 10% of its mean")
    assert "uring (20% over 4 runs)" in noisy[0].text and "--fio-cpus" in noisy[0].text
    assert stability.warnings({("p", "uring"): [100, 103, 97, 101]}, {"p": "IOPS"}) == []


def test_outliers_are_tukeys_and_material():
    found = stability.warnings({("p", "qsd"): [100, 101, 99, 100, 100.5, 140]}, {"p": "IOPS"})
    assert "outliers" in [w.kind for w in found]
    text = next(w.text for w in found if w.kind == "outliers")
    assert "qsd (1 of 6: 140 IOPS, median 100 IOPS)" in text and "quiet machine" in text
    assert stability.outliers([100, 101, 99, 100, 100.5, 140]) == [140]
    assert stability.outliers([100, 100, 100, 100.3]) == []  # beyond the fences, immaterial
    assert stability.outliers([100, 101, 99, 102, 98, 100.5]) == []
    assert stability.outliers([100, 100, 160]) == []  # three values cannot say


def test_two_groups_need_a_material_gap_between_tight_groups():
    split = [20000, 20200, 19900, 30000, 30300, 29800]
    found = stability.warnings({("p (read)", "devfuse"): split}, {"p (read)": "IOPS"})
    assert "two groups" in [w.kind for w in found]
    text = next(w.text for w in found if w.kind == "two groups")
    assert "devfuse (3 near 20.0k IOPS, 3 near 30.0k IOPS)" in text
    assert "bind fio (--fio-cpus) and the servers (--cpus) to CPUs" in text
    assert stability.two_groups([100, 103, 97, 101, 99, 102]) is None  # one group
    assert stability.two_groups([100, 101, 99, 100.5, 99.5, 150]) is None  # one outlier
    assert stability.two_groups([100, 100.1, 100.05, 101, 101.1, 101.05]) is None  # immaterial
    assert stability.two_groups([20000, 20200, 30000, 30300]) is None  # too few to say


def test_compare_warns_on_the_unstable_transport_and_point(tmp_path):
    campaign = synthetic_campaign(tmp_path / "unstable", None, noise={QUIET: 0.01, NOISY: 0.3})
    campaign.execute(progress=False)
    comparison = compare(load_campaign(tmp_path / "unstable"))
    spread = [w for w in comparison.unstable if w.kind == "spread"]
    assert spread and all(w.point.startswith(NOISY) for w in spread)
    assert any(w.text in comparison.cautions for w in spread)
