"""Suites: a named campaign in a file (scenarios/suites/NAME.toml): its scenarios, and
optionally its transports, repetitions, runtime, backing, warmup, time budget and baseline."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import dataclass

from harness.scenarios import SCENARIO_DIR, Scenario, ScenarioError, load_scenario

SUITE_DIR = SCENARIO_DIR / "suites"


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    scenarios: list[str]
    runtime: int | None = None
    reps: int | str | None = None  # a count, or "auto"
    backing: str | None = None  # the suite's own --backing, when none is given
    warmup: int | None = None  # the suite's own --warmup, when none is given
    # A suite that is a comparison names its transports; all must run (none left out).
    transports: list[str] | None = None
    budget_s: float | None = None  # with reps = "auto": no round is added past this
    # What ratios are judged against when no --baseline is given and it takes part.
    baseline: str | None = None


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
    reps = doc.get("reps")
    if reps is not None and reps != "auto" and not (isinstance(reps, int) and reps >= 1):
        raise ScenarioError(f"{path}: reps must be a count of at least 1 or \"auto\"")
    budget = doc.get("budget_s")
    if budget is not None and not (isinstance(budget, (int, float)) and budget > 0):
        raise ScenarioError(f"{path}: budget_s must be a number of seconds above 0")
    baseline = doc.get("baseline")
    if baseline is not None and not isinstance(baseline, str):
        raise ScenarioError(f"{path}: baseline must be a transport's label or spec")
    return Suite(name, doc.get("description", ""), scenarios, doc.get("runtime"), reps,
                 doc.get("backing"), doc.get("warmup"), transports, budget, baseline)



def iter_scenarios(names: list[str]) -> Iterator[Scenario]:
    for name in names:
        yield load_scenario(name)
