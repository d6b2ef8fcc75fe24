"""Campaigns: every scenario point x transport, repeated and interleaved, one result each.

Runs are interleaved so that drift on the machine (thermal, other load) lands on every
transport alike: for each point, repetition r runs the transports in order, and the
order reverses on odd repetitions (A B, B A, A B ...), so no transport always runs first.
Each run is a fresh server process and mount (harness.runner). Warmup runs come first
for each point, are kept in the results and are flagged, as pyperf keeps them.

A manifest, campaign.json, records the plan and the state of every run as the campaign
goes, so an interrupted campaign still says what finished, what failed and what was cut.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.fio import FioError
from harness.runner import RunError, RunOptions, options_for, run_point
from harness.scenarios import SCENARIO_DIR, Scenario, ScenarioError, ScenarioPoint, load_scenario
from transports.base import TransportSpec

SUITE_DIR = SCENARIO_DIR / "suites"
MANIFEST = "campaign.json"
# 2: uring:buffers=pinned is the kernel pin (7.46); in 1 it meant mlock (see results.py)
# 3: devfuse and uring default to datapath=native (and uring to sched=batch); before, to
#    datapath=python and sched=normal
# 4: uring defaults to sched=auto, and sched=idle is guarded; before, to sched=batch and
#    an unguarded idle. devfuse defaults to follow=on,sched=auto; before, neither existed
MANIFEST_VERSION = 4
RUN_OVERHEAD_S = 1.5  # mount, server start and stop per run, for the first ETA


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    scenarios: list[str]
    runtime: int | None = None
    reps: int | None = None
    backing: str | None = None  # the suite's own --backing, when none is given
    warmup: int | None = None  # the suite's own --warmup, when none is given
    # A suite that is a comparison names its transports; all must run (none left out).
    transports: list[str] | None = None


def known_suites() -> list[str]:
    return sorted(p.stem for p in SUITE_DIR.glob("*.toml"))


def load_suite(name: str) -> Suite:
    path = SUITE_DIR / f"{name}.toml"
    if not path.exists():
        raise ScenarioError(f"no suite {name!r}: known suites are {', '.join(known_suites())}")
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    scenarios = doc.get("scenarios")
    if not isinstance(scenarios, list) or not all(isinstance(s, str) for s in scenarios):
        raise ScenarioError(f"{path}: scenarios must be a list of scenario names")
    transports = doc.get("transports")
    if transports is not None and (
        not isinstance(transports, list) or not all(isinstance(t, str) for t in transports)
    ):
        raise ScenarioError(f"{path}: transports must be a list of transport specs")
    return Suite(name, doc.get("description", ""), scenarios, doc.get("runtime"), doc.get("reps"),
                 doc.get("backing"), doc.get("warmup"), transports)


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

    def start(self, run: PlannedRun, total: int) -> None:
        tag = " warmup" if run.warmup else f" rep {run.repetition + 1}"
        self._bar.set_postfix_str(
            f"run {run.index + 1}/{total}: {run.point.label} on {run.transport.display}{tag}"
        )

    def done(self, run: PlannedRun) -> None:
        self._bar.update(self._expected[run.index])

    def write(self, message: str) -> None:
        self._bar.write(message)

    def close(self) -> None:
        self._bar.close()


@dataclass
class Campaign:
    id: str
    directory: Path
    runs: list[PlannedRun]
    reps: int
    warmup: int
    label: str
    options: RunOptions
    fio_cpus: str | None = None
    log: Callable[[str], None] = print

    def manifest(self) -> dict[str, Any]:
        return {
            "kind": "campaign",
            "campaign_format": MANIFEST_VERSION,
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

    def execute(self, progress: bool = True) -> dict[str, Any]:
        """Run every planned run; returns the final manifest. Ctrl-C stops after cleanup."""
        self.directory.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest()
        manifest.update(status="running", start=datetime.now().astimezone().isoformat())
        path = self.directory / MANIFEST
        _write_json(path, manifest)
        bar = Progress(self.runs, progress)
        current: PlannedRun | None = None
        try:
            for run in self.runs:
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


def _quiet(message: str) -> None:
    """The progress bar speaks for the runs; the runner's own chatter is dropped."""


def iter_scenarios(names: list[str]) -> Iterator[Scenario]:
    for name in names:
        yield load_scenario(name)
