"""What every measuring command (`serve`, `run`, `campaign`, `bench`) takes alike: the
placement for specs that do not set theirs (`--sched`, `--idle-guard`, `--cpus`), fio
overrides (`--fio`, `--runtime`), the result directory, and SIGTERM/SIGHUP unwinding like
Ctrl-C so that servers are stopped and mounts undone."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from harness.point.runner import RunOptions
from harness.point.serving import PLACEMENT_FLAGS
from harness.scenarios import ScenarioError, check_fio_option
from transports.base import TransportSpec
from transports.export.spec import ExportSpec
from transports.placement import PLACEMENT_OPTIONS
from transports.spec import Spec

DEFAULT_OUT = Path("results")


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
    return {key: getattr(args, key) for key in PLACEMENT_FLAGS if getattr(args, key, None)}


def with_placement(spec: Spec, args: argparse.Namespace | dict[str, Any]) -> Spec:
    """`spec` with the command line's placement for each key the spec does not give."""
    values = given(args) if isinstance(args, argparse.Namespace) else args
    return spec.placed(values)


def run_options(args: argparse.Namespace, spec: TransportSpec, **more: Any) -> RunOptions:
    """RunOptions from the export arguments every measuring command takes."""
    return RunOptions(transport=spec, out=args.out, export=ExportSpec.from_args(args), **more)


def interrupt_on_termination() -> None:
    """SIGTERM/SIGHUP (a CI timeout, a closed terminal) unwind like Ctrl-C, so the
    runner's cleanup stops the server and unmounts."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _parse_value(raw: str) -> Any:
    # Command-line values are text; scenario values are typed: read numbers as numbers.
    text = raw.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        return text


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.fio:
        key, eq, raw = item.partition("=")
        if not eq:
            raise ScenarioError(f"--fio {item!r} is not KEY=VALUE, e.g. --fio iodepth=4")
        out[key.strip()] = check_fio_option("--fio", key.strip(), _parse_value(raw))
    if args.runtime is not None:
        out["runtime"] = check_fio_option("--runtime", "runtime", args.runtime)
    return out


