"""`ringside campaign`: scenario points x transports, repeated and interleaved."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from harness.analysis.decide import DEFAULT_CI_WITHIN
from harness.campaigns.interleaved import (
    DEFAULT_MAX_REPS,
    MIN_ROUNDS,
    Adaptive,
    Campaign,
    campaign_id,
    decision_lines,
    plan,
)
from harness.campaigns.suites import Suite, iter_scenarios, known_suites, load_suite
from harness.commands.measuring import (
    DEFAULT_OUT,
    add_placement_arguments,
    given,
    interrupt_on_termination,
    overrides,
    run_options,
    with_placement,
)
from harness.point import fio
from harness.point.runner import preflight_backing
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
# Every kind of server once, the C anchor (libfuse, `make peers` builds it) in both modes,
# and the ceiling; buffer modes have their own suite (buffers), qemu-storage-daemon its
# own (qsd-series): Debian's qsd 7.2 only on request (-t qsd).
DEFAULT_TRANSPORTS = ("pyfuse3", "devfuse", "uring", "libfuse-uring=libfuse:mode=uring",
                      "libfuse-legacy=libfuse:mode=legacy", "direct")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "campaign",
        help="run scenarios (or a suite) on several transports, repeated and interleaved",
        description="Run every point of the scenarios (or of a suite: "
        + ", ".join(known_suites())
        + ") on every transport, REPS times (auto: until each point's ratios are decided), "
        "interleaved (A B, B A, ...), each run with a "
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
        type=reps_value,
        metavar="N|auto",
        help="measured repetitions per point and transport, or auto: at least "
        f"{MIN_ROUNDS} rounds, then more for each point until every ratio to the baseline "
        "is known within --ci-within, up to --max-reps and the --budget (default: the "
        "suite's, else 3)",
    )
    p.add_argument(
        "--max-reps",
        type=int,
        metavar="N",
        help=f"with --reps auto: at most N rounds per point (default: {DEFAULT_MAX_REPS})",
    )
    p.add_argument(
        "--ci-within",
        type=float,
        metavar="PERCENT",
        help="with --reps auto: a point is decided when every ratio's 95%% CI lies within "
        f"±PERCENT of the ratio (default: {DEFAULT_CI_WITHIN * 100:g})",
    )
    p.add_argument(
        "--budget",
        type=float,
        metavar="SECONDS",
        help="with --reps auto: add no round that would end the campaign's runs later than "
        "SECONDS after their start (default: the suite's budget_s, else none)",
    )
    p.add_argument(
        "--baseline",
        metavar="SPEC",
        help="transport the ratios are judged against by --reps auto (and by bench's "
        "comparison); default: pyfuse3 when present, else the first transport",
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


def reps_value(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a count nor auto") from None


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
    if (reps != "auto" and reps < 1) or args.warmup < 0:
        raise ScenarioError("--reps must be at least 1 (or auto) and --warmup at least 0")
    if reps == "auto":
        adaptive = _adaptive(args, suite)
    else:
        adaptive = None
        _only_with_auto(args)
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
    if adaptive is not None and len(specs) < 2:
        if args.reps == "auto":
            raise ScenarioError(
                "--reps auto adds rounds until the ratios to the baseline are known, which "
                "needs at least two transports: give another -t, or a count to --reps")
        _only_with_auto(args)
        print(f"ringside: the suite's reps = \"auto\" judges ratios between transports; "
              f"with one transport it runs {MIN_ROUNDS} repetitions", file=sys.stderr)
        adaptive, reps = None, MIN_ROUNDS
    fio.fio_path()
    if args.fio_cpus:
        sysinfo.parse_cpu_list(args.fio_cpus)
    options = run_options(args, specs[0])
    preflight_backing(options)
    label = suite.name if suite else "-".join(s.name for s in scenarios[:2])
    cid = args.campaign_id or campaign_id(label)
    rounds = adaptive.min_rounds if adaptive is not None else reps
    runs = plan(scenarios, specs, rounds, args.warmup, overrides(args))
    options = dataclasses.replace(options, out=args.out / cid)
    if args.baseline is None and suite is not None and suite.baseline in {
            s.display for s in specs}:
        args.baseline = suite.baseline  # the suite's, when it takes part
    if args.baseline is not None:  # one of the transports, known before any run
        from harness.analysis.compare import choose_baseline

        choose_baseline([s.display for s in specs], args.baseline)
    return Campaign(cid, args.out / cid, runs, reps, args.warmup, label, options, args.fio_cpus,
                    adaptive=adaptive, baseline=args.baseline)


def _adaptive(args: argparse.Namespace, suite: Suite | None) -> Adaptive:
    """--reps auto's limits from the options, else the suite, else the defaults."""
    max_reps = args.max_reps if args.max_reps is not None else DEFAULT_MAX_REPS
    if max_reps < MIN_ROUNDS:
        raise ScenarioError(f"--max-reps must be at least {MIN_ROUNDS}, the rounds --reps "
                            "auto always runs")
    within = args.ci_within / 100 if args.ci_within is not None else DEFAULT_CI_WITHIN
    if not 0 < within < 1:
        raise ScenarioError("--ci-within is a percentage above 0 and below 100, e.g. 10")
    budget = args.budget if args.budget is not None else (suite.budget_s if suite else None)
    if budget is not None and budget <= 0:
        raise ScenarioError("--budget is a number of seconds above 0")
    return Adaptive(max_reps=max_reps, ci_within=within, budget_s=budget)


def _only_with_auto(args: argparse.Namespace) -> None:
    given = [name for name, value in (("--max-reps", args.max_reps),
                                      ("--ci-within", args.ci_within),
                                      ("--budget", args.budget)) if value is not None]
    if given:
        raise ScenarioError(f"{', '.join(given)} only apply with --reps auto (the suite's "
                            "reps, or the option)")


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
    auto = campaign.adaptive
    planned = f"{len(campaign.runs)} runs" if auto is None else (
        f"{len(campaign.runs)} runs ({auto.min_rounds} rounds per point), then up to "
        f"{auto.max_reps} rounds for each point until every ratio's 95% CI is within "
        f"±{auto.ci_within:.0%}" + (f", within {auto.budget_s:g} s" if auto.budget_s else ""))
    print(f"ringside: campaign {campaign.id}: {planned} into {campaign.directory}",
          file=sys.stderr)
    if auto is not None and auto.budget_s and campaign.minimum_seconds() > auto.budget_s:
        print(f"ringside: the {auto.min_rounds} rounds --reps auto always runs take about "
              f"{campaign.minimum_seconds():.0f} s, past the budget of {auto.budget_s:g} s: "
              "no round will be added (fewer transports or points, or a larger --budget)",
              file=sys.stderr)
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
    for line in decision_lines(manifest):
        print(line, file=sys.stderr)
    print(campaign.directory)
    return 0 if manifest["status"] == "done" else 1
