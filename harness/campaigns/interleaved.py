"""Campaigns: every scenario point x transport, repeated and interleaved, one result each.

Runs are interleaved so that drift on the machine (thermal, other load) lands on every
transport alike: for each point, repetition r runs the transports in order, and the
order reverses on odd repetitions (A B, B A, A B ...), so no transport always runs first.
Each run is a fresh server process and mount (harness.point.runner). Warmup runs come first
for each point, are kept in the results and are flagged, as pyperf keeps them.

A manifest, campaign.json, records the plan and the state of every run as the campaign
goes, so an interrupted campaign still says what finished, what failed and what was cut.

With `--reps auto` (`Adaptive`) the plan starts with MIN_ROUNDS rounds per point (a round
is every transport once at the point, in the alternating order). Then the results written
so far are compared (harness.analysis.compare, judged by harness.analysis.decide) and
every point whose ratios to the baseline are not yet known within ±ci_within gets one
more round, the widest first, until each point is decided, reaches max_reps rounds, or
the next round would overrun the time budget. Added runs are appended to the manifest
as they are planned, and its `adaptive` section says per point how many rounds it got,
whether it was decided, its widest CI and why it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.analysis.decide import DEFAULT_CI_WITHIN, within_text
from harness.point.fio import FioError
from harness.point.runner import RunError, RunOptions, options_for, run_point
from harness.results import MANIFEST_FORMAT
from harness.scenarios import Scenario, ScenarioPoint
from transports.base import TransportSpec

MANIFEST = "campaign.json"
RUN_OVERHEAD_S = 1.5  # mount, server start and stop per run, for the first ETA
MIN_ROUNDS = 3  # --reps auto: rounds every point gets before any is judged
DEFAULT_MAX_REPS = 10


@dataclass(frozen=True)
class Adaptive:
    """--reps auto: rounds per point until every ratio's 95% CI is within ±ci_within."""

    max_reps: int = DEFAULT_MAX_REPS
    ci_within: float = DEFAULT_CI_WITHIN  # a fraction: 0.10 is ±10% of the ratio
    budget_s: float | None = None  # since the campaign's start, for adding rounds
    min_rounds: int = MIN_ROUNDS

    def describe(self) -> dict[str, Any]:
        return {"min_reps": self.min_rounds, "max_reps": self.max_reps,
                "ci_within": self.ci_within, "budget_s": self.budget_s}


@dataclass(frozen=True)
class PlannedRun:
    index: int
    scenario: Scenario
    point: ScenarioPoint
    transport: TransportSpec
    repetition: int  # 0-based among measured runs; warmups count from -warmup to -1
    warmup: bool

    def describe(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "point": self.point.label,
            "transport": str(self.transport),
            "label": self.transport.display,
            "repetition": self.repetition,
            "warmup": self.warmup,
        }


def plan(
    scenarios: list[Scenario],
    transports: list[TransportSpec],
    reps: int,
    warmup: int,
    overrides: dict[str, Any] | None = None,
) -> list[PlannedRun]:
    """The interleaved run order: per point, warmups then repetitions, order alternating."""
    runs: list[PlannedRun] = []
    for scenario in scenarios:
        for point in scenario.points(overrides):
            for rep in range(-warmup, reps):
                order = transports if rep % 2 == 0 else list(reversed(transports))
                for spec in order:
                    runs.append(PlannedRun(len(runs), scenario, point, spec, rep, rep < 0))
    return runs


def campaign_id(label: str, when: datetime | None = None) -> str:
    when = when or datetime.now()
    return f"{label}-{when.strftime('%Y%m%d-%H%M%S')}"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


class Progress:
    """A one-line progress bar with ETA on stderr (tqdm), fed with expected run times."""

    def __init__(self, runs: list[PlannedRun], enabled: bool):
        from tqdm import tqdm

        self._expected = [self._estimate(r) for r in runs]
        self._bar = tqdm(
            total=round(sum(self._expected), 1),
            unit="s",
            disable=not enabled,
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}] {postfix}",
            dynamic_ncols=True,
        )

    @staticmethod
    def _estimate(run: PlannedRun) -> float:
        return float(run.point.fio.get("runtime", 10)) + RUN_OVERHEAD_S

    def extend(self, runs: list[PlannedRun]) -> None:
        """Runs added to the plan (--reps auto): the total and the ETA grow with them."""
        added = [self._estimate(r) for r in runs]
        self._expected += added
        self._bar.total = round(self._bar.total + sum(added), 1)
        self._bar.refresh()

    def start(self, run: PlannedRun, total: int) -> None:
        tag = " warmup" if run.warmup else f" rep {run.repetition + 1}"
        self._bar.set_postfix_str(
            f"run {run.index + 1}/{total}: {run.point.label} on {run.transport.display}{tag}"
        )

    def done(self, run: PlannedRun) -> None:
        self._bar.update(self._expected[run.index])

    def write(self, message: str) -> None:
        # stderr with the bar: stdout carries only what a script reads (the directory)
        self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()


@dataclass
class Campaign:
    id: str
    directory: Path
    runs: list[PlannedRun]
    reps: int | str  # a count, or "auto" (then `adaptive` says how far to go)
    warmup: int
    label: str
    options: RunOptions
    fio_cpus: str | None = None
    log: Callable[[str], None] = print
    adaptive: Adaptive | None = None
    baseline: str | None = None  # what ratios are judged against (compare's default: None)
    _warned: set[Any] = dataclasses.field(default_factory=set, init=False, repr=False)

    def manifest(self) -> dict[str, Any]:
        manifest = {
            "kind": "campaign",
            "campaign_format": MANIFEST_FORMAT,  # harness/results/upgrade.py reads older ones
            "id": self.id,
            "label": self.label,
            "reps": self.reps,
            "warmup": self.warmup,
            "transports": list(dict.fromkeys(str(r.transport) for r in self.runs)),
            "labels": {r.transport.display: str(r.transport) for r in self.runs},
            "scenarios": list(dict.fromkeys(r.scenario.name for r in self.runs)),
            "points": list(dict.fromkeys(r.point.label for r in self.runs)),
            "backing": self.options.export.backing,
            "server_cpus": _common_cpus(self.runs),
            "fio_cpus": self.fio_cpus,
            "status": "planned",
            "runs": [dict(r.describe(), status="pending") for r in self.runs],
        }
        if self.adaptive is not None:
            points = {label: {"rounds": self.adaptive.min_rounds, "decided": None,
                              "widest_ci": None, "widest": None, "wide": {}, "stopped": None}
                      for label in manifest["points"]}
            manifest["adaptive"] = {**self.adaptive.describe(), "baseline": None,
                                    "points": points}
        return manifest

    def minimum_seconds(self) -> float:
        """The planned runs' expected time (for --reps auto: the rounds always run)."""
        return sum(Progress._estimate(r) for r in self.runs)

    def execute(self, progress: bool = True) -> dict[str, Any]:
        """Run every planned run, and with --reps auto the rounds added as the results
        come in; returns the final manifest. Ctrl-C stops after cleanup."""
        self.directory.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest()
        manifest.update(status="running", start=datetime.now().astimezone().isoformat())
        path = self.directory / MANIFEST
        _write_json(path, manifest)
        bar = Progress(self.runs, progress)
        started = time.monotonic()
        current: PlannedRun | None = None
        index = 0
        try:
            while index < len(self.runs) or self._add_rounds(manifest, bar, started):
                run = self.runs[index]
                index += 1
                current = run
                bar.start(run, len(self.runs))
                entry = manifest["runs"][run.index]
                entry.update(status="running", start=datetime.now().astimezone().isoformat())
                _write_json(path, manifest)
                t0 = time.monotonic()
                try:
                    result = self._run_one(run)
                except (RunError, FioError) as e:
                    entry.update(status="failed", error=str(e))
                    bar.write(f"ringside: run {run.index + 1} ({run.point.label} on "
                              f"{run.transport}) failed: {e}")
                else:
                    entry.update(status="done", result=result.name)
                entry["seconds"] = round(time.monotonic() - t0, 3)
                bar.done(run)
                _write_json(path, manifest)
                current = None
        except BaseException as e:
            # The runner has already stopped its server and unmounted on the way out.
            cut = "interrupted" if isinstance(e, KeyboardInterrupt) else "error"
            if current is not None:
                manifest["runs"][current.index].update(status=cut, error=str(e) or cut)
            manifest["status"] = cut
            raise
        finally:
            bar.close()
            if manifest["status"] == "running":
                failed = sum(r["status"] == "failed" for r in manifest["runs"])
                manifest["status"] = "failed" if failed else "done"
            manifest["end"] = datetime.now().astimezone().isoformat()
            _write_json(path, manifest)
        return manifest

    def _add_rounds(self, manifest: dict[str, Any], bar: Progress, started: float) -> bool:
        """Judge the results so far (printing new warnings); with --reps auto, plan a round
        for each point still undecided, within the caps. True when runs were added."""
        comparison = self._judge(bar)
        if self.adaptive is None:
            return False
        added = self._next_rounds(comparison, manifest, time.monotonic() - started)
        if not added:
            return False
        self.runs += added
        manifest["runs"] += [dict(r.describe(), status="pending") for r in added]
        _write_json(self.directory / MANIFEST, manifest)
        bar.extend(added)
        undecided = list(dict.fromkeys(r.point.label for r in added))
        points = manifest["adaptive"]["points"]
        bar.write("ringside: one more round for " + ", ".join(
            f"{p} ({points[p]['widest']} {within_text(_width(points[p]['widest_ci']))})"
            for p in undecided))
        return True

    def _judge(self, bar: Progress) -> Any:
        """compare() over the results written so far (None when there is nothing to
        compare); prints the stability warnings not printed before."""
        from harness.analysis.campaign_results import CampaignError, load_campaign
        from harness.analysis.compare import CompareError, compare

        try:
            comparison = compare(load_campaign(self.directory), self.baseline)
        except (CampaignError, CompareError) as e:
            bar.write(f"ringside: cannot compare the results so far: {e}")
            return None
        for warning in comparison.unstable:
            if warning.key not in self._warned:
                self._warned.add(warning.key)
                bar.write(f"ringside: warning: {warning.text}")
        return comparison

    def _next_rounds(self, comparison: Any, manifest: dict[str, Any], elapsed: float,
                     ) -> list[PlannedRun]:
        """One round for every point not yet decided, the widest CI first, while it stays
        under max_reps and within the budget; records every point's state."""
        from harness.analysis.decide import decide

        auto = self.adaptive
        assert auto is not None
        record = manifest["adaptive"]
        decisions = decide(comparison, auto.ci_within) if comparison is not None else {}
        if comparison is not None:
            record["baseline"] = comparison.baseline
        waiting = []
        for label, point in record["points"].items():
            if point["stopped"]:
                continue
            decision = decisions.get(label)
            if decision is None:
                point.update(decided=False, stopped="no_results")
                continue
            widest, width = decision.widest
            point.update(decided=decision.decided, widest=widest,
                         widest_ci=None if math.isinf(width) else round(width, 4),
                         wide={k: None if math.isinf(w) else round(w, 4)
                               for k, w in decision.wide.items()})
            if decision.decided:
                point["stopped"] = "decided"
            elif point["rounds"] >= auto.max_reps:
                point["stopped"] = "max_reps"
            else:
                waiting.append((width, label))
        added: list[PlannedRun] = []
        planned_s = 0.0
        for _, label in sorted(waiting, key=lambda wl: -wl[0]):
            cost = self._round_seconds(label, manifest)
            if auto.budget_s is not None and elapsed + planned_s + cost > auto.budget_s:
                record["points"][label]["stopped"] = "budget"
                continue
            planned_s += cost
            added += self._round(label, record["points"][label]["rounds"],
                                 len(self.runs) + len(added))
            record["points"][label]["rounds"] += 1
        return added

    def _round(self, label: str, repetition: int, first_index: int) -> list[PlannedRun]:
        """Every transport once at the point, in the order plan() gives repetition."""
        first = [r for r in self.runs
                 if r.point.label == label and r.repetition == 0 and not r.warmup]
        order = first if repetition % 2 == 0 else list(reversed(first))
        return [PlannedRun(first_index + i, r.scenario, r.point, r.transport, repetition, False)
                for i, r in enumerate(order)]

    def _round_seconds(self, label: str, manifest: dict[str, Any]) -> float:
        """A round's expected time: what this point's runs took so far, per transport."""
        runs = [r for r in self.runs if r.point.label == label and not r.warmup]
        transports = len({str(r.transport) for r in runs})
        took = [e["seconds"] for e in manifest["runs"]
                if e["point"] == label and not e["warmup"] and "seconds" in e]
        each = sum(took) / len(took) if took else Progress._estimate(runs[0])
        return each * transports

    def _run_one(self, run: PlannedRun) -> Path:
        point = run.point
        if self.fio_cpus is not None:
            point = dataclasses.replace(point, fio={**point.fio, "cpus_allowed": self.fio_cpus})
        opts = dataclasses.replace(
            options_for(run.scenario, self.options), transport=run.transport, log=_quiet
        )
        meta = {
            "name": run.scenario.name,
            "description": run.scenario.description,
            "file": run.scenario.path,
        }
        extra = {
            "campaign": {
                "id": self.id,
                "label": self.label,
                "run_index": run.index,
                "runs": len(self.runs),
                "repetition": run.repetition,
                "warmup": run.warmup,
                "reps": self.reps,
            }
        }
        return run_point(point, opts, meta, extra)


def _common_cpus(runs: list[PlannedRun]) -> str | None:
    """The servers' CPU list when every transport has the same (None: all CPUs)."""
    lists = {str(r.transport.settings.get("cpus") or "") for r in runs}
    return lists.pop() or None if len(lists) == 1 else "differs"

def _width(stored: float | None) -> float:
    """A half-width as the manifest stores it (null: no CI)."""
    return math.inf if stored is None else float(stored)


def decision_lines(manifest: dict[str, Any]) -> list[str]:
    """What --reps auto decided, per point: for the end of a campaign."""
    record = manifest.get("adaptive")
    if not isinstance(record, dict):
        return []
    points = record["points"]
    decided = sum(bool(p["decided"]) for p in points.values())
    lines = [f"ringside: --reps auto: {decided} of {len(points)} points decided (every "
             f"ratio's 95% CI within ±{record['ci_within']:.0%} of it, against "
             f"{record.get('baseline')})"]
    reasons = {"max_reps": f"stopped at --max-reps {record['max_reps']}",
               "budget": f"stopped by the time budget ({record['budget_s']:g} s)"
               if record.get("budget_s") else "stopped by the time budget",
               "no_results": "no results to judge"}
    for label, point in points.items():
        if point["decided"]:
            lines.append(f"  {label}: decided after {point['rounds']} rounds (widest "
                         f"{within_text(_width(point['widest_ci']))}, {point['widest']})")
            continue
        wide = ", ".join(f"{k} {within_text(_width(w))}" for k, w in point["wide"].items())
        why = reasons.get(point["stopped"], "cut short")
        lines.append(f"  {label}: UNDECIDED after {point['rounds']} rounds, {why}"
                     + (f": {wide}" if wide else ""))
    return lines


def _quiet(message: str) -> None:
    """The progress bar speaks for the runs; the runner's own chatter is dropped."""
