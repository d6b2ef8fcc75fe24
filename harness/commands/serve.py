"""`ringside serve`: mount the export on a file through one transport until stopped."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from harness.commands.measuring import add_placement_arguments, with_placement
from harness.point.serving import READY_PREFIX, describe_connection_end
from transports.base import SpecError, Transport, TransportUnavailable, parse_spec
from transports.export.backing import BackingError
from transports.export.image import Export
from transports.export.spec import ExportSpec
from transports.fuse import mounting
from transports.placement import Placement, ThreadPlacer
from transports.spec import Spec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the export on MOUNTPOINT (a regular file) until SIGINT/SIGTERM or unmount",
        description="Mount the export on MOUNTPOINT, a regular file (created if missing), "
        "and serve it until SIGINT/SIGTERM or until it is unmounted from outside.",
    )
    p.add_argument("mountpoint", help="regular file to mount the image on")
    p.add_argument(
        "--transport", "-t", default="pyfuse3", help="transport spec NAME[:key=value,...]"
    )
    ExportSpec.add_arguments(p)
    p.add_argument("--stats-out", help="write the transport's statistics as JSON here on exit")
    add_placement_arguments(p)
    p.set_defaults(func=run_serve)


def _fail(message: str, code: int = 2) -> int:
    print(f"ringside serve: {message}", file=sys.stderr)
    return code


def run_serve(args: argparse.Namespace) -> int:
    try:
        spec = with_placement(parse_spec(args.transport), args)
        export_spec = ExportSpec.from_args(args)
        backing = export_spec.backing_spec()
        transport = spec.create()
        transport.check_available()
        placement = Placement(spec.settings)
        placement.resolve()
        placement.apply_to_process()
        export = Export(backing, export_spec.options())
    except (SpecError, BackingError, ValueError) as e:
        return _fail(str(e))
    except TransportUnavailable as e:
        return _fail(str(e), 1)
    # A server that does not place its own threads is placed from outside, from before
    # it starts until it has stopped, so threads it starts after the mount are placed too.
    placer = None if transport.places_own_threads else ThreadPlacer(
        placement, transport.server_pids)
    try:
        mountpoint = mounting.prepare_mountpoint(args.mountpoint, log=_log)
    except mounting.MountError as e:
        export.close()
        return _fail(str(e))

    asked_to_stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal asked_to_stop
        asked_to_stop = True
        transport.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_ready() -> None:
        # The runner measures the processes named here (qsd serves from its own process).
        pids = ",".join(str(p) for p in transport.server_pids())
        print(
            f"{READY_PREFIX}: {mountpoint} serves {backing} through {spec} (server pids {pids})",
            flush=True,
        )

    code = 0
    try:
        if placer is not None:
            placer.start()
        transport.serve(export, mountpoint, on_ready)
    except (TransportUnavailable, mounting.MountError) as e:
        code = _fail(str(e), 1)
    finally:
        if placer is not None:
            placer.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        end = None if asked_to_stop else transport.connection_end()
        if end is not None:  # the runner quotes it: the mount is gone either way
            _log(describe_connection_end(end, mountpoint))
        mounting.unmount_if_mounted(mountpoint)
        export_info = export.describe()
        export.close()
        if args.stats_out:
            stats = {"spec": str(spec), "export": export_info, **transport.statistics().as_dict(),
                     "placement": placement_record(spec, transport, placement, placer)}
            with open(args.stats_out, "w") as f:
                json.dump(stats, f, indent=1, sort_keys=True)
    if code == 0:
        print(f"ringside: stopped; {mountpoint} is unmounted", flush=True)
    return code


def placement_record(spec: Spec, transport: Transport, placement: Placement,
                     placer: ThreadPlacer | None) -> dict[str, Any]:
    """Where the server's threads were to run, who placed them, and the server's own
    design: what the result's placement columns and compare's cautions read."""
    return {
        **placement.describe(),
        "design": transport.own_placement(),
        **(placer.statistics() if placer is not None
           else {"placed_by": f"the transport ({spec.name} places its own threads)"}),
    }


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
