"""`ringside run SCENARIO`: measure one transport on one scenario with fio.

Each scenario point runs against its own fresh server process and writes one result
file (and its fio job file) to --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.commands.measuring import (
    DEFAULT_OUT,
    add_placement_arguments,
    interrupt_on_termination,
    overrides,
    run_options,
    with_placement,
)
from harness.point import fio
from harness.point.runner import (
    READY_TIMEOUT_S,
    CheckError,
    RunError,
    options_for,
    run_point,
)
from harness.scenarios import ScenarioError, load_scenario
from transports.base import SpecError, TransportUnavailable, parse_spec
from transports.export.backing import BackingError
from transports.export.spec import ExportSpec
from transports.fuse.mounting import MountError


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


def _fail(message: str, code: int) -> int:
    print(f"ringside run: {message}", file=sys.stderr)
    return code


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
