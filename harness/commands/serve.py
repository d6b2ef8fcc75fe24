"""`ringside serve`: mount the export on a file through one transport until stopped."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from harness.serving import READY_PREFIX, describe_connection_end
from transports import sysinfo
from transports.base import SpecError, TransportUnavailable, parse_spec
from transports.export.backing import BackingError
from transports.export.image import Export
from transports.export.spec import ExportSpec
from transports.fuse import mounting


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
    p.add_argument(
        "--cpus",
        help="run the server on these CPUs only, e.g. 1 or 0-1 (the uring transport still "
        "pins each queue thread to its own CPU unless pin=off)",
    )
    p.set_defaults(func=run_serve)


def _fail(message: str, code: int = 2) -> int:
    print(f"ringside serve: {message}", file=sys.stderr)
    return code


def run_serve(args: argparse.Namespace) -> int:
    try:
        if args.cpus:
            os.sched_setaffinity(0, sysinfo.parse_cpu_list(args.cpus))
        spec = parse_spec(args.transport)
        export_spec = ExportSpec.from_args(args)
        backing = export_spec.backing_spec()
        transport = spec.create()
        transport.check_available()
        export = Export(backing, export_spec.options())
    except (SpecError, BackingError, ValueError) as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"--cpus {args.cpus}: {e.strerror}: name CPUs this machine has")
    except TransportUnavailable as e:
        return _fail(str(e), 1)
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
        transport.serve(export, mountpoint, on_ready)
    except (TransportUnavailable, mounting.MountError) as e:
        code = _fail(str(e), 1)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        end = None if asked_to_stop else transport.connection_end()
        if end is not None:  # the runner quotes it: the mount is gone either way
            _log(describe_connection_end(end, mountpoint))
        mounting.unmount_if_mounted(mountpoint)
        export_info = export.describe()
        export.close()
        if args.stats_out:
            stats = {"spec": str(spec), "export": export_info, **transport.statistics().as_dict()}
            with open(args.stats_out, "w") as f:
                json.dump(stats, f, indent=1, sort_keys=True)
    if code == 0:
        print(f"ringside: stopped; {mountpoint} is unmounted", flush=True)
    return code


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
