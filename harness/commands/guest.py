"""`ringside guest --kernel K -- ARGS...`: run `ringside ARGS...` on another kernel."""

from __future__ import annotations

import argparse
import re
import sys

from harness.commands.measuring import interrupt_on_termination
from harness.guests import host, kernels


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "guest",
        help="boot a kernel in a throw-away guest (virtme-ng) and run `ringside ARGS` there",
        description="Boot KERNEL with virtme-ng on qemu, sharing this machine's files "
        "read-only and the result directory (--out of ARGS, default results/) read-write, "
        "switch FUSE-over-io_uring on inside and run `ringside ARGS`. Output streams here; "
        "the exit code is the command's. Results record kernel and virtualization.",
        epilog="example: ringside guest --kernel 7.3 -- run randread-4k-qd1 -t uring "
        "--runtime 2",
    )
    p.add_argument(
        "--kernel", "-k", required=True,
        help="a cached kernel (`ringside kernel list`, e.g. 7.3), a kernel image (bzImage, "
        "vmlinuz) or a kernel build directory (its modules are used)",
    )  # fmt: skip
    p.add_argument("--cpus", type=int, default=2, help="guest CPUs (default: %(default)s)")
    p.add_argument("--memory", default="4G", help="guest memory, e.g. 4G (default: %(default)s)")
    p.add_argument(
        "--accel", choices=("auto", "kvm", "tcg"), default="auto",
        help="auto: KVM when a guest boots under it, else TCG (emulated CPU; says why)",
    )  # fmt: skip
    p.add_argument("--console", action="store_true", help="show the guest's kernel console")
    p.add_argument(
        "--command", action="store_true",
        help="ARGS is a command line to run in the guest (e.g. python -m pytest), "
        "not ringside arguments; the checkout stays read-only",
    )  # fmt: skip
    p.add_argument(
        "--rwdir", action="append", default=[], metavar="DIR",
        help="another directory the guest may write (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--boot-stall", type=float, default=host.BOOT_STALL_S, metavar="SECONDS",
        help="a boot with no console line for this long is stopped and retried "
        "(default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--boot-attempts", type=int, default=host.BOOT_ATTEMPTS, metavar="N",
                   help="boots to try before giving up (default: %(default)s)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- then the ringside arguments")
    p.set_defaults(func=run_guest)


def run_guest(args: argparse.Namespace) -> int:
    from pathlib import Path

    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    if not rest:
        print("ringside guest: nothing to run: give `-- ARGS...`, e.g. `-- run "
              "randread-4k-qd1 -t uring`", file=sys.stderr)  # fmt: skip
        return 2
    if args.cpus < 1:
        print("ringside guest: --cpus must be at least 1", file=sys.stderr)
        return 2
    if not re.fullmatch(r"\d+[KMGT]?", args.memory, re.I):
        print(f"ringside guest: bad --memory {args.memory!r}: use e.g. 4G or 2048M",
              file=sys.stderr)  # fmt: skip
        return 2
    # SIGTERM/SIGHUP (a CI timeout, a closed terminal) stop the guest as Ctrl-C does: qemu
    # runs in its own session and would otherwise outlive us.
    interrupt_on_termination()
    try:
        kernel = kernels.resolve(args.kernel)
        opts = host.GuestOptions(
            kernel=kernel, cpus=args.cpus, memory=args.memory, accel=args.accel,
            console=args.console, command=args.command,
            rwdirs=[Path(d).absolute() for d in args.rwdir],
            boot_stall_s=args.boot_stall, attempts=max(1, args.boot_attempts),
        )  # fmt: skip
        return host.run(rest, opts)
    except (kernels.KernelError, host.GuestError) as e:
        print(f"ringside guest: {e}", file=sys.stderr)
        return 1
