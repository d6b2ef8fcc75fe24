"""`ringside campaign`: scenario points x transports, repeated and interleaved."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from harness import fio
from harness.campaign import (
    Campaign,
    campaign_id,
    iter_scenarios,
    known_suites,
    load_suite,
    plan,
)
from harness.commands.run import DEFAULT_OUT, interrupt_on_termination, overrides, run_options
from harness.placement_args import add_placement_arguments, given, with_placement
from harness.runner import preflight_backing
from harness.scenarios import ScenarioError
from transports import sysinfo
from transports.base import (
    SpecError,
    TransportSpec,
    TransportUnavailable,
    check_unique,
    parse_spec,
)
from transports.export.backing import BackingError
from transports.export.spec import ExportSpec

# What a campaign measures when no --transport is given: every transport this machine runs.
DEFAULT_BACKING = ExportSpec.backing
DEFAULT_WARMUP = 1
# `direct` (no FUSE, the backing itself) is the ceiling compare shows each row a share of.
DEFAULT_TRANSPORTS = ("pyfuse3", "devfuse", "uring", "uring:buffers=mlock", "qsd", "direct")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "campaign",
        help="run scenarios (or a suite) on several transports, repeated and interleaved",
        description="Run every point of the scenarios (or of a suite: "
        + ", ".join(known_suites())
        + ") on every transport, REPS times, interleaved (A B, B A, ...), each run with a "
        "fresh server and mount, one result file per run under OUT/CAMPAIGN-ID/.",
    )
    add_campaign_arguments(p)
    p.set_defaults(func=run_campaign)


def add_campaign_arguments(p: argparse.ArgumentParser, with_targets: bool = True) -> None:
    if with_targets:
        p.add_argument(
            "targets",
            nargs="+",
            metavar="SUITE|SCENARIO",
            help="a suite name, or scenario files / names",
        )
    p.add_argument(
        "--transport",
        "-t",
        action="append",
        metavar="[LABEL=]SPEC",
        help="transport spec (repeatable), optionally named for tables, e.g. "
        "libfuse-uring=libfuse:mode=uring; default: every available one of "
        + ", ".join(DEFAULT_TRANSPORTS),
    )
    p.add_argument(
        "--reps",
        type=int,
        help="measured repetitions per point and transport (default: the suite's, else 3)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        help="warmup runs per point and transport, kept but flagged (default: the suite's, "
        f"else {DEFAULT_WARMUP})",
    )
    ExportSpec.add_arguments(p, fill="data", suite_backing=True)
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="parent directory of the campaign directory (default: %(default)s)",
    )
    p.add_argument("--id", dest="campaign_id", help="campaign id (default: LABEL-DATE-TIME)")
    p.add_argument(
        "--runtime",
        type=int,
        metavar="SECONDS",
        help="override every scenario's runtime (default: the suite's, if any)",
    )
    p.add_argument(
        "--fio",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one fio option in every scenario (repeatable)",
    )
    add_placement_arguments(p)
    p.add_argument("--fio-cpus", help="CPU list for fio (its cpus_allowed), e.g. 0")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fail(message: str, code: int) -> int:
    print(f"ringside campaign: {message}", file=sys.stderr)
    return code


def available_transports(log=print, placement: dict[str, str] | None = None,
                         ) -> list[TransportSpec]:
    specs = []
    for text in DEFAULT_TRANSPORTS:
        spec = with_placement(parse_spec(text), placement or {})
        try:
            spec.create().check_available()
        except TransportUnavailable as e:
            log(f"ringside: leaving out {text}: {e}")
            continue
        specs.append(spec)
    return specs


def build(args: argparse.Namespace) -> Campaign:
    """Validate everything up front: a campaign must not fail on run 37 for a typo."""
    suite = None
    targets = args.targets
    if len(targets) == 1 and targets[0] in known_suites():
        suite = load_suite(targets[0])
        targets = suite.scenarios
    if args.runtime is None and suite is not None and suite.runtime is not None:
        args.runtime = suite.runtime
    if args.backing is None:
        args.backing = suite.backing if suite is not None and suite.backing else DEFAULT_BACKING
    if args.warmup is None:
        args.warmup = suite.warmup if suite is not None and suite.warmup is not None \
            else DEFAULT_WARMUP
    reps = args.reps if args.reps is not None else (suite.reps if suite and suite.reps else 3)
    if reps < 1 or args.warmup < 0:
        raise ScenarioError("--reps must be at least 1 and --warmup at least 0")
    scenarios = list(iter_scenarios(targets))
    named = args.transport or (suite.transports if suite is not None else None)
    if named:
        specs = [with_placement(parse_spec(t), args) for t in named]
        for spec in specs:
            spec.create().check_available()
    else:
        specs = available_transports(lambda m: print(m, file=sys.stderr), given(args))
        if not specs:
            raise TransportUnavailable("no transport can run here: see `ringside doctor`")
    check_unique(specs)
    fio.fio_path()
    if args.fio_cpus:
        sysinfo.parse_cpu_list(args.fio_cpus)
    options = run_options(args, specs[0])
    preflight_backing(options)
    label = suite.name if suite else "-".join(s.name for s in scenarios[:2])
    cid = args.campaign_id or campaign_id(label)
    runs = plan(scenarios, specs, reps, args.warmup, overrides(args))
    options = dataclasses.replace(options, out=args.out / cid)
    return Campaign(cid, args.out / cid, runs, reps, args.warmup, label, options, args.fio_cpus)


def run_campaign(args: argparse.Namespace) -> int:
    try:
        campaign = build(args)
    except Exception as e:
        return run_campaign_error(e)
    return execute(campaign, progress=not args.no_progress)


def run_campaign_error(e: Exception) -> int:
    """The exit code and message for an error found while building a campaign."""
    if isinstance(e, (SpecError, ScenarioError, BackingError, ValueError)):
        return _fail(str(e), 2)
    if isinstance(e, (TransportUnavailable, fio.FioError)):
        return _fail(str(e), 1)
    raise e


def execute(campaign: Campaign, progress: bool) -> int:
    interrupt_on_termination()
    print(
        f"ringside: campaign {campaign.id}: {len(campaign.runs)} runs into {campaign.directory}",
        file=sys.stderr,
    )
    try:
        manifest = campaign.execute(progress=progress)
    except KeyboardInterrupt:
        done = sum(1 for p in campaign.directory.glob("*.json") if p.name != "campaign.json")
        print(
            f"ringside: campaign interrupted; {done} finished runs kept in "
            f"{campaign.directory} (see campaign.json)",
            file=sys.stderr,
        )
        return 130
    counts = {s: sum(r["status"] == s for r in manifest["runs"]) for s in ("done", "failed")}
    print(
        f"ringside: campaign {campaign.id} {manifest['status']}: {counts['done']} runs "
        f"done, {counts['failed']} failed",
        file=sys.stderr,
    )
    print(campaign.directory)
    return 0 if manifest["status"] == "done" else 1
