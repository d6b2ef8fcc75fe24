"""`ringside run SCENARIO`: measure one transport on one scenario with fio.

Each scenario point runs against its own fresh server process and writes one result
file (and its fio job file) to --out.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from harness import fio
from harness.placement_args import add_placement_arguments, with_placement
from harness.runner import (
    READY_TIMEOUT_S,
    CheckError,
    RunError,
    RunOptions,
    options_for,
    run_point,
)
from harness.scenarios import ScenarioError, check_fio_option, load_scenario
from transports.base import SpecError, TransportSpec, TransportUnavailable, parse_spec
from transports.export.backing import BackingError
from transports.export.spec import ExportSpec
from transports.fuse.mounting import MountError

DEFAULT_OUT = Path("results")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a scenario's fio workload against one transport and write result files",
        description="Serve the export through TRANSPORT in a child process, run fio (JSON "
        "output) on the mounted file for every point of SCENARIO, stop the server and write "
        "one result file per point.",
    )
    p.add_argument("scenario", help="scenario file (TOML) or bare name in scenarios/")
    p.add_argument(
        "--transport", "-t", default="pyfuse3", help="transport spec NAME[:key=value,...]"
    )
    ExportSpec.add_arguments(p, fill="data")
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="result directory (default: %(default)s)"
    )
    p.add_argument(
        "--mountpoint", help="regular file to mount on (default: a file in a fresh temp dir)"
    )
    p.add_argument("--runtime", type=int, metavar="SECONDS", help="override the scenario's runtime")
    p.add_argument(
        "--fio",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one fio option of the scenario (repeatable), e.g. --fio iodepth=4",
    )
    add_placement_arguments(p)
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=READY_TIMEOUT_S,
        help="seconds to wait for the server's mount (default: %(default)s)",
    )
    p.set_defaults(func=run_run)


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


def _fail(message: str, code: int) -> int:
    print(f"ringside run: {message}", file=sys.stderr)
    return code


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


def run_run(args: argparse.Namespace) -> int:
    try:
        spec = with_placement(parse_spec(args.transport), args)
        spec.create().check_available()
        scenario = load_scenario(args.scenario)
        points = scenario.points(overrides(args))
        fio.fio_path()
        opts = run_options(
            args, spec, mountpoint=args.mountpoint, ready_timeout=args.ready_timeout
        )
    except (SpecError, ScenarioError, ValueError) as e:
        return _fail(str(e), 2)
    except (TransportUnavailable, fio.FioError) as e:
        return _fail(str(e), 1)
    interrupt_on_termination()
    opts = options_for(scenario, opts)
    meta = {"name": scenario.name, "description": scenario.description, "file": scenario.path}
    for n, point in enumerate(points, 1):
        if len(points) > 1:
            print(f"ringside: point {n}/{len(points)}: {point.label}", file=sys.stderr)
        try:
            path = run_point(point, opts, meta)
        except (BackingError, MountError) as e:
            return _fail(str(e), 2)
        except CheckError as e:
            return _fail(f"{point.label}: result not written: {e}", 1)
        except (RunError, fio.FioError) as e:
            return _fail(f"{point.label}: {e}", 1)
        print(path)
    return 0
