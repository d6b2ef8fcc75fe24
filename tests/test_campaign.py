"""Campaigns: the plan, a tiny real campaign, and an interrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, fuse_usable, require
from harness.campaigns.interleaved import MIN_ROUNDS, plan
from harness.campaigns.suites import known_suites, load_suite
from harness.results import load
from harness.scenarios import load_scenario
from transports.base import parse_spec
from transports.fuse import mounting


def test_plan_interleaves_and_alternates_order():
    scenario = load_scenario("randread-4k-depth-jobs")
    a, b = parse_spec("pyfuse3"), parse_spec("devfuse")
    runs = plan([scenario], [a, b], reps=2, warmup=1)
    assert len(runs) == len(scenario.points()) * 3 * 2
    first_point = [r for r in runs if r.point == runs[0].point]
    assert [(str(r.transport), r.repetition, r.warmup) for r in first_point] == [
        ("devfuse", -1, True), ("pyfuse3", -1, True),
        ("pyfuse3", 0, False), ("devfuse", 0, False),
        ("devfuse", 1, False), ("pyfuse3", 1, False),
    ]


def test_shipped_suites_name_shipped_scenarios():
    assert {"quick", "full", "buffers"} <= set(known_suites())
    for name in known_suites():
        suite = load_suite(name)
        for scenario in suite.scenarios:
            load_scenario(scenario)
        for spec in suite.transports or ():
            parse_spec(spec)  # every named transport parses


def test_buffers_suite_names_every_mode_beside_the_other_servers():
    suite = load_suite("buffers")
    settings = [parse_spec(t).settings for t in suite.transports if t.startswith("uring")]
    modes = {(s["buffers"], s["zerocopy"]) for s in settings}
    assert modes == {("mapped", False), ("mlock", False), ("pool", False), ("pinned", False),
                     ("pool", True), ("pinned", True)}
    assert {"pyfuse3", "devfuse"} <= set(suite.transports)


def test_buffers_suite_refuses_whole_on_a_kernel_without_pools(tmp_path):
    from conftest import bufpool_reason

    require(fuse_usable())
    if bufpool_reason() is None:
        pytest.skip("this kernel offers pools: the suite runs here")
    proc = ringside("campaign", "buffers", "--out", str(tmp_path), "--runtime", "1")
    assert proc.returncode != 0
    assert "ringside guest --kernel 7.3" in proc.stderr, proc.stderr
    assert not list(tmp_path.rglob("*.json")), "a refused campaign wrote results"


def ringside(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, **kw)


@pytest.mark.mount
def test_tiny_campaign_writes_one_result_per_run(tmp_path):
    require(fuse_usable())
    proc = ringside("campaign", "randread-4k-qd1", "-t", "pyfuse3", "-t", "devfuse",
                    "--reps", "2", "--warmup", "1", "--runtime", "1", "--backing", "memory:64M",
                    "--out", str(tmp_path), "--id", "tiny", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    directory = tmp_path / "tiny"
    manifest = json.loads((directory / "campaign.json").read_text())
    assert manifest["status"] == "done"
    assert [r["status"] for r in manifest["runs"]] == ["done"] * 6
    assert len(list(directory.glob("*.fio"))) == 6
    df = load(directory)
    assert len(df) == 6  # one direction (read) per run
    assert sorted(df["transport_spec"].unique()) == ["devfuse", "pyfuse3"]
    assert df["warmup"].sum() == 2
    assert sorted(df.loc[~df["warmup"], "repetition"]) == [0, 0, 1, 1]
    assert (df["campaign"] == "tiny").all()
    assert (df["iops"] > 0).all()
    assert (df["requests_per_io"] >= 0.99).all()


@pytest.mark.mount
def test_interrupted_campaign_keeps_finished_runs_and_leaves_nothing(tmp_path):
    require(fuse_usable())
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "campaign", "randread-4k-qd1", "-t", "devfuse",
         "--reps", "20", "--warmup", "0", "--runtime", "1", "--backing", "memory:64M",
         "--out", str(tmp_path), "--id", "cut", "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Run directories (and so mountpoints) below tmp_path: what is left is ours alone.
        env=dict(os.environ, TMPDIR=str(tmp_path)),
    )
    directory = tmp_path / "cut"
    try:
        deadline = time.monotonic() + 120
        while len(list(directory.glob("*.json"))) < 3:  # the manifest and two results
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)  # into the middle of the next run
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    manifest = json.loads((directory / "campaign.json").read_text())
    assert manifest["status"] == "interrupted"
    statuses = [r["status"] for r in manifest["runs"]]
    done = statuses.count("done")
    assert done >= 2
    assert statuses.count("interrupted") <= 1
    assert len(load(directory)) == done
    assert not [m for m in mounting.fuse_mounts() if m.path.startswith(str(tmp_path))]
    leftover = subprocess.run(["pgrep", "-f", f"harness serve {tmp_path}"],
                              capture_output=True, text=True)
    assert leftover.stdout.strip() == ""


@pytest.mark.parametrize(
    "args, expected",
    [
        (["nosuch-scenario", "-t", "pyfuse3"], "scenario 'nosuch-scenario' not found"),
        (["quick", "-t", "uring:depht=8"], "did you mean 'depth'"),
        (["quick", "-t", "pyfuse3", "--reps", "0"], "--reps must be at least 1"),
        (["quick", "-t", "pyfuse3", "--fio-cpus", "x"], "bad CPU list"),
    ],
)
def test_campaign_bad_input(tmp_path, args, expected):
    proc = ringside("campaign", *args, "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert not any(tmp_path.iterdir())


def _built(tmp_path, *args: str):
    import argparse

    from harness.commands import campaign as campaign_cmd

    parser = argparse.ArgumentParser()
    campaign_cmd.add_campaign_arguments(parser)
    return campaign_cmd.build(parser.parse_args([*args, "--out", str(tmp_path)]))


def test_a_suite_sets_backing_and_warmup_unless_given(tmp_path):
    suite = load_suite("quick")
    quick = _built(tmp_path, "quick", "-t", "devfuse")
    assert quick.options.export.backing == suite.backing == "memory:256M"
    assert quick.warmup == suite.warmup == 0
    assert len(quick.runs) == len(suite.scenarios) * MIN_ROUNDS  # reps = "auto"
    given = _built(tmp_path, "quick", "-t", "devfuse", "--backing", "memory:64M", "--warmup", "1")
    assert given.options.export.backing == "memory:64M" and given.warmup == 1
    # Without a suite: the campaign defaults.
    plain = _built(tmp_path, "randread-4k-qd1", "-t", "devfuse")
    assert plain.options.export.backing == "memory:1G" and plain.warmup == 1
