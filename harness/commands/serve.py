"""`ringside serve`: mount the export on a file through one transport until stopped."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from transports import mounting, sysinfo
from transports.backing import FILL_CHOICES, BackingError, parse_backing, parse_size
from transports.base import SpecError, TransportUnavailable, parse_spec
from transports.export import Export, ExportOptions

READY_PREFIX = "ringside: ready"


def add_export_arguments(parser: argparse.ArgumentParser, fill: str = "none") -> None:
    """Options shared by every command that serves the export; `fill` is its default."""
    parser.add_argument(
        "--backing",
        default="memory:1G",
        help="file:PATH (raw image, created sparse with --size if missing) or memory:SIZE "
        "(default: %(default)s)",
    )
    parser.add_argument("--size", help="size of a new image file, e.g. 1G")
    parser.add_argument(
        "--fill",
        choices=FILL_CHOICES,
        default=fill,
        help="what a backing created here holds (a memory backing, a new image file): data "
        "(written full of pseudo-random bytes, so reads copy real memory) or none (sparse: "
        "reads of holes only copy the zero page); an existing image is never written "
        "(default: %(default)s)",
    )
    parser.add_argument("--read-only", action="store_true", help="refuse writes (EROFS)")
    parser.add_argument(
        "--growable", action="store_true", help="writes past the end extend the image"
    )
    parser.add_argument(
        "--cache",
        choices=("pagecache", "direct"),
        default="pagecache",
        help="for opens without O_DIRECT: use the client's page cache, or bypass it "
        "(O_DIRECT opens always bypass it) (default: %(default)s)",
    )
    parser.add_argument(
        "--attr-timeout",
        type=float,
        default=1.0,
        help="seconds the client may cache the file's attributes; 0 sends every stat to "
        "the server (default: %(default)s)",
    )


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
    add_export_arguments(p)
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


def export_options(args: argparse.Namespace) -> ExportOptions:
    if args.attr_timeout < 0:
        raise ValueError(f"--attr-timeout {args.attr_timeout}: must be >= 0")
    return ExportOptions(
        read_only=args.read_only,
        growable=args.growable,
        cache=args.cache,
        attr_timeout=args.attr_timeout,
        fill=args.fill == "data",
    )


def run_serve(args: argparse.Namespace) -> int:
    try:
        if args.cpus:
            os.sched_setaffinity(0, sysinfo.parse_cpu_list(args.cpus))
        spec = parse_spec(args.transport)
        size = parse_size(args.size) if args.size else None
        backing = parse_backing(args.backing, size)
        transport = spec.create()
        transport.check_available()
        export = Export(backing, export_options(args))
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

    def on_signal(signum: int, frame: Any) -> None:
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
