"""`--sched`, `--idle-guard` and `--cpus`: the placement a command gives every transport
whose spec does not set it (`serve`, `run`, `campaign`, `bench` alike)."""

from __future__ import annotations

import argparse
from typing import Any

from transports.placement import PLACEMENT_OPTIONS
from transports.spec import Spec, setting_text

ARGUMENTS = {"sched": "--sched", "idle_guard": "--idle-guard", "cpus": "--cpus"}


def add_placement_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "placement", "where every server's threads run, for each transport spec that does "
        "not say (its sched=, idle_guard=, cpus=); the same for all by default")
    g.add_argument("--sched", choices=PLACEMENT_OPTIONS["sched"].choices,
                   help="scheduling policy of every server thread (default: auto, the "
                   "guarded idle where the guard may act, else batch)")
    g.add_argument("--idle-guard", choices=("on", "off"),
                   help="with sched idle: the starvation guard (default: on)")
    g.add_argument("--cpus", "--server-cpus", dest="cpus",
                   help="CPUs every server thread may run on, e.g. 1 or 0-1 (default: all)")


def given(args: argparse.Namespace) -> dict[str, str]:
    """The placement keys the command line gave."""
    return {key: getattr(args, key) for key in ARGUMENTS if getattr(args, key, None)}


def with_placement(spec: Spec, args: argparse.Namespace | dict[str, Any]) -> Spec:
    """`spec` with the command line's placement for each key the spec does not give."""
    values = given(args) if isinstance(args, argparse.Namespace) else args
    return spec.placed(values)


def placement_argv(spec: Spec) -> list[str]:
    """Arguments for `ringside serve` that carry `spec`'s placement settings."""
    argv: list[str] = []
    for key, flag in ARGUMENTS.items():
        if key in spec.settings and setting_text(spec.settings[key]) != "":
            argv += [flag, setting_text(spec.settings[key])]
    return argv
