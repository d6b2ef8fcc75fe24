"""`ringside kernel fetch|list`: the kernels a guest can boot (see harness.guests.kernels)."""

from __future__ import annotations

import argparse
import sys

from harness.commands.fetching import add_fetch_options
from harness.guests import kernels


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "kernel",
        help="fetch Debian kernels into the checkout's cache and list them",
        description="Kernels for `ringside guest --kernel`. `fetch 7.3` downloads Debian "
        f"{kernels.SUITE}'s linux-binary/-base/-modules-7.3-{kernels.FLAVOUR} and the "
        "matching linux-libc-dev with a private apt sources list and state directory (the "
        f"host's apt configuration is not touched) and unpacks them into {kernels.CACHE_DIR}.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    f = actions.add_parser("fetch", help="download and unpack a kernel (e.g. 7.3)")
    f.add_argument("version", help="kernel version as Debian names it, e.g. 7.3")
    add_fetch_options(f, "the kernel is")
    f.set_defaults(func=run_fetch)
    ls = actions.add_parser("list", help="cached kernels: release, FUSE protocol minor")
    ls.set_defaults(func=run_list)


def run_fetch(args: argparse.Namespace) -> int:
    if args.if_missing and any(
        k.name == kernels.cache_name(args.version) for k in kernels.cached()
    ):
        return 0
    try:
        kernels.fetch(args.version, mirror=args.mirror)
    except kernels.KernelError as e:
        print(f"ringside kernel fetch: {e}", file=sys.stderr)
        return 1
    return 0


def describe(kernel: kernels.Kernel) -> str:
    minor, source = kernel.fuse_minor()
    proto = f"7.{minor} (from {source})" if minor is not None else source
    missing = kernel.missing_uring_configs()
    uring = (
        "unknown config"
        if missing is None
        else "FUSE io_uring: yes" if not missing else f"FUSE io_uring: no ({', '.join(missing)})"
    )
    version = f", package {kernel.package_version}" if kernel.package_version else ""
    return f"{kernel.name}: release {kernel.release}{version}; FUSE protocol {proto}; {uring}"


def run_list(args: argparse.Namespace) -> int:
    found = kernels.cached()
    if not found:
        print(f"no cached kernels in {kernels.CACHE_DIR}: `{kernels.fetch_command('7.3')}`")
        return 0
    for kernel in found:
        print(describe(kernel))
    return 0
