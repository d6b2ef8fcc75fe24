"""Placement belongs to the run: every transport takes sched=, idle_guard= and cpus=, the
servers Ringside did not write are placed from outside (threads started after the mount
too, the starvation guard watching them), results record each thread's policy and CPUs,
and compare names a placement difference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy
import pytest

from conftest import REPO, served
from harness.analysis.campaign_results import load_campaign
from harness.analysis.compare import compare
from harness.analysis.synthetic import Point, default_points, make_run
from harness.analysis.tables import render
from harness.commands.measuring import with_placement
from harness.point.serving import placement_argv
from harness.results import placement_columns, write_result
from transports.base import SpecError, TransportUnavailable, parse_spec
from transports.placement import RINGSIDE_THREADS
from transports.spec import Spec

START = __import__("datetime").datetime(2026, 12, 7, 12, 0, 0)
RINGSIDE = [sys.executable, "-m", "harness"]


# -- specs ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pyfuse3", "devfuse", "uring", "qsd", "libfuse", "direct"])
def test_every_transport_takes_the_placement_keys(name: str) -> None:
    spec = parse_spec(f"{name}:sched=idle,idle_guard=off,cpus=0")
    assert (spec.settings["sched"], spec.settings["idle_guard"], spec.settings["cpus"]) == (
        "idle", False, "0")
    assert parse_spec(name).settings["sched"] == "auto"  # the same default for all


def test_external_takes_placement_before_its_command() -> None:
    spec = parse_spec("external:sched=batch,cpus=0,srv -o a=1,b=2 {image} {mountpoint}")
    assert spec.settings["sched"] == "batch" and spec.settings["cpus"] == "0"
    assert spec.settings["command"] == "srv -o a=1,b=2 {image} {mountpoint}"
    assert Spec.parse(spec.text).settings == spec.settings  # renders back to itself


def test_a_cpu_list_may_hold_commas_and_must_exist() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    spec = parse_spec(f"uring:cpus={','.join(map(str, cpus))},depth=4")
    assert spec.settings["depth"] == 4 and spec.settings["cpus"] in ("0", "0-1", f"0-{cpus[-1]}")
    with pytest.raises(SpecError, match="has no CPU 4095"):
        parse_spec("pyfuse3:cpus=4095")
    with pytest.raises(SpecError, match="not one of auto, normal, batch, idle"):
        parse_spec("pyfuse3:sched=fifo")


def test_the_command_line_places_only_what_a_spec_leaves_open() -> None:
    given = with_placement(parse_spec("uring:sched=batch"), {"sched": "normal", "cpus": "0"})
    assert given.settings["sched"] == "batch" and given.settings["cpus"] == "0"
    assert given.text == "uring:sched=batch"  # labels do not change
    assert placement_argv(given) == ["--sched", "batch", "--idle-guard", "on", "--cpus", "0"]


def test_devfuse_following_cannot_keep_to_a_cpu_list() -> None:
    with pytest.raises(TransportUnavailable, match="follow=off"):
        parse_spec("devfuse:cpus=0").create().check_available()
    parse_spec("devfuse:cpus=0,follow=off").create().check_available()


# -- what results record and compare says -----------------------------------------------
def _result(policy: str | None, design: str | None = None) -> dict:
    thread = {"tid": 1, "name": "server", "utime_s": 1.0, "stime_s": 0.0}
    if policy is not None:
        thread.update(policy=policy, cpus="0-1")
    return {"server": {"window": {"threads": [
        thread, {"tid": 2, "name": RINGSIDE_THREADS[0], "utime_s": 0.5, "stime_s": 0,
                 "policy": "normal", "cpus": "0-1"},
        {"tid": 3, "name": "sleeper", "utime_s": 0.0, "stime_s": 0, "policy": "normal",
         "cpus": "0-1"}]}},
        "transport_stats": {"placement": {"cpus": "all", "design": design}}}


def test_a_runs_placement_is_its_serving_threads() -> None:
    # the busy thread counts; Ringside's placer and a thread that slept do not
    assert placement_columns(_result("idle"))["placement"] == "idle, CPUs all"
    old = _result(None)
    del old["transport_stats"]["placement"]
    assert placement_columns(old)["placement"] == "unknown"
    assert placement_columns({"transport_stats": {"fuse": False}})["placement"] == "no server"


def _campaign(tmp_path: Path, specs: tuple[str, ...]) -> Path:
    path = tmp_path / "c"
    point = Point("randread-4k-qd1", default_points()[0].fio)
    for rep in range(3):
        for spec in specs:
            data = make_run(point, spec, 1.0, numpy.random.default_rng(rep), start=START,
                            campaign="c", repetition=rep)
            write_result(path, data)
    return path


def test_compare_names_a_placement_difference(tmp_path: Path) -> None:
    c = compare(load_campaign(_campaign(tmp_path, ("pyfuse3:sched=normal",
                                                   "libfuse:mode=uring,sched=idle"))))
    text = "\n".join(c.cautions)
    assert "placement differs" in text and "normal, CPUs all" in text
    assert c.placement == {"pyfuse3:sched=normal": "normal, CPUs all",
                           "libfuse:mode=uring,sched=idle": "idle, CPUs all"}
    for fmt in ("terminal", "markdown", "email"):
        assert "Placement" in render(c, fmt)


def test_equal_placement_draws_no_placement_caution(tmp_path: Path) -> None:
    c = compare(load_campaign(_campaign(tmp_path, ("pyfuse3", "libfuse:mode=uring"))))
    assert not any("placement differs" in n for n in c.cautions)
    assert c.placement == {}
    assert "Placement" not in render(c, "terminal")


# -- placed from outside, for real ------------------------------------------------------
def _run(tmp_path: Path, spec: str, *extra: str, scenario: str = "randread-4k-qd1") -> dict:
    proc = subprocess.run(
        [*RINGSIDE, "run", scenario, "-t", spec, "--runtime", "1", "--backing", "memory:64M",
         "--out", str(tmp_path / "out"), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=180,
        env=dict(os.environ, TMPDIR=str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())


def _serving(result: dict) -> list[dict]:
    threads = [t for t in result["server"]["window"]["threads"]
               if t["name"] not in RINGSIDE_THREADS]
    return [t for t in threads if t["utime_s"] + t["stime_s"] > 0] or threads


@pytest.mark.mount
@pytest.mark.needs("idle_guard")
def test_pyfuse3_under_sched_idle_records_every_serving_thread_idle(tmp_path: Path) -> None:
    result = _run(tmp_path, "pyfuse3", "--sched", "idle")
    assert result["transport"]["settings"]["sched"] == "idle"
    assert {t["policy"] for t in result["server"]["window"]["threads"]
            if t["name"] not in RINGSIDE_THREADS} == {"idle"}
    placement = result["transport_stats"]["placement"]
    assert placement["placed_by"].startswith("ringside (from outside")
    # the guard watched them, as it watches our own serving threads
    watched = {t["tid"] for t in placement["sched_guard"]["per_thread"]}
    idle = {t["tid"] for t in result["server"]["window"]["threads"] if t["policy"] == "idle"}
    assert watched and idle <= watched, (watched, idle)


@pytest.mark.mount
@pytest.mark.needs("libfuse_build")
@pytest.mark.needs("idle_guard")
def test_libfuses_ring_threads_started_after_the_mount_are_placed(tmp_path: Path) -> None:
    result = _run(tmp_path, "libfuse:mode=uring,sched=idle")
    threads = [t for t in result["server"]["window"]["threads"]
               if t["name"] not in RINGSIDE_THREADS]
    rings = [t for t in threads if t["name"].startswith("fuse-ring")]
    assert rings and {t["policy"] for t in threads} == {"idle"}, threads
    assert {c["name"]: c["ok"] for c in result["checks"]} == {"peer_ring": True}
    assert "bound to its queue" in (result["transport_stats"]["placement"]["design"] or "")


@pytest.mark.mount
@pytest.mark.needs("libfuse_build")
def test_cpus_bound_every_thread_even_one_the_server_pins(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs: libfuse pins a ring thread to each")
    result = _run(tmp_path, f"libfuse:mode=uring,sched=normal,cpus={cpus[-1]}")
    assert {t["cpus"] for t in result["server"]["window"]["threads"]
            if t["name"] not in RINGSIDE_THREADS} == {str(cpus[-1])}
    assert result["transport_stats"]["placement"]["cpus_set"] >= 1  # its own pin, bounded


@pytest.mark.mount
def test_served_transports_report_the_placement_they_ran_with(tmp_path: Path) -> None:
    with served("pyfuse3", tmp_path / "m", "memory:16M", "--sched", "batch") as s:
        (tmp_path / "m").read_bytes()[:1]
        s.stop()
        placement = s.stats()["placement"]
    assert placement["sched"] == "batch" and placement["cpus"] == "all"
    assert placement["requested"] == "batch" and placement["idle_guard"] == "off"


def test_the_report_shows_placement_when_it_differs(tmp_path: Path) -> None:
    from harness.analysis.report import write_report

    campaign = load_campaign(_campaign(tmp_path, ("pyfuse3:sched=normal", "uring:sched=idle")))
    text = Path(write_report(campaign, "markdown")).read_text()
    assert "Placement" in text and "placement differs" in text
