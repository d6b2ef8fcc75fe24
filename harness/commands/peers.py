"""`ringside peers fetch|list`: peer programs built from Debian's source into the cache."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.commands.fetching import add_fetch_options
from transports.peers import builds

PROGRAMS = ("libfuse", "qsd")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "peers",
        help="build peer servers (libfuse, qemu-storage-daemon) from Debian's source into "
        "the cache and list them",
        description="Peer programs for the peer transports. `fetch libfuse [VERSION]` "
        "downloads Debian sid's fuse3 source package (default: its version) with a private "
        "apt sources list and state directory (the host's apt configuration is not touched; "
        "its Debian mirror is used, or --mirror), builds libfuse's servers with meson and "
        f"ninja and puts the build in {builds.CACHE_DIR}/libfuse-VERSION/. The libfuse "
        "transport uses the newest one unless given build=DIR or $RINGSIDE_LIBFUSE_BUILD. "
        "`fetch qsd [VERSION] [--patches FILE...]` builds qemu-storage-daemon (tools only, "
        "FUSE export, io_uring) from the newest `qemu` source Debian sid or experimental "
        "serves (or VERSION), with the patches applied in order, into "
        f"{builds.CACHE_DIR}/qsd-VERSION[+NAME]/; the qsd transport uses it with "
        "build=VERSION[+NAME] (default: Debian's installed qemu-storage-daemon).",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    f = actions.add_parser("fetch", help="download and build a peer (libfuse, qsd)")
    f.add_argument("program", choices=PROGRAMS)
    f.add_argument("version", nargs="?",
                   help="upstream version, e.g. 3.18.3 or 10.2.2 (default: the newest whose "
                   "source Debian serves)")
    f.add_argument("--patches", nargs="+", type=Path, metavar="FILE",
                   help="qsd: apply these patches in order before building: mbox files (the "
                   ".mbx `b4 am MSGID` writes) or .patch files (`git format-patch`)")
    f.add_argument("--name", help="qsd: the patch set's name in the build's directory "
                   "(qsd-VERSION+NAME; default: a hash of the patches)")
    add_fetch_options(f, "a build (of VERSION, if given) is")
    f.set_defaults(func=run_fetch)
    ls = actions.add_parser("list", help="cached builds, their versions, and the default")
    ls.set_defaults(func=run_list)


def run_fetch(args: argparse.Namespace) -> int:
    from harness.peer_builds import BuildError, libfuse, qsd

    try:
        if args.program == "qsd":
            qsd.fetch(args.version, patch_files=args.patches, name=args.name,
                      mirror=args.mirror, if_missing=args.if_missing)
        elif args.patches or args.name:
            raise BuildError("--patches and --name are for qsd builds")
        else:
            libfuse.fetch(args.version, mirror=args.mirror, if_missing=args.if_missing)
    except BuildError as e:
        print(f"ringside peers fetch: {e}", file=sys.stderr)
        return 1
    return 0


def describe(build: builds.CachedBuild) -> str:
    source = build.stamp.get("source") or {}
    made = build.stamp.get("build") or {}
    return (f"{build.program} {build.version}: {build.build_dir} (Debian "
            f"{source.get('package')} {source.get('debian_version')} from "
            f"{source.get('archive')}, sha256 {str(source.get('sha256'))[:12]}…; "
            f"{made.get('meson')}; built {build.stamp.get('built')})")


def describe_qsd(build: builds.CachedBuild) -> str:
    from harness.peer_builds.qsd import describe_patches

    source = build.stamp.get("source") or {}
    made = build.stamp.get("build") or {}
    export = made.get("export") or {}
    fix = (source.get("write_copy_fix") or {}).get("present")
    return (f"qsd {build.name}: {build.build_dir} (Debian {source.get('package')} "
            f"{source.get('debian_version')}, sha256 {str(source.get('sha256'))[:12]}…; "
            f"{describe_patches(build.stamp)}; FUSE export io-uring option: "
            f"{'yes' if export.get('io_uring_option') else 'no'}; write-copy fix: "
            f"{'yes' if fix else 'no' if fix is not None else 'unknown'}; built "
            f"{build.stamp.get('built')}) [qsd:build={build.name}]")


def run_list(args: argparse.Namespace) -> int:
    from transports.peers.libfuse import ENV_BUILD, configured_build

    found, not_builds = builds.scan("libfuse")
    if not found:
        print(f"no libfuse build in {builds.CACHE_DIR}: `ringside peers fetch libfuse`")
    for build in found:
        default = " [default]" if build is found[-1] and not configured_build() else ""
        print(describe(build) + default)
    if found and (env := configured_build()):
        print(f"the libfuse transport uses ${ENV_BUILD}={env} instead (set in the "
              "environment); build=DIR overrides both")
    _not_builds(not_builds)
    qsd_found, qsd_not_builds = builds.scan("qsd")
    if not qsd_found:
        print(f"no qemu-storage-daemon build in {builds.CACHE_DIR} (the qsd transport uses "
              "Debian's installed one): `ringside peers fetch qsd`")
    for build in qsd_found:
        print(describe_qsd(build))
    _not_builds(qsd_not_builds)
    return 0


def _not_builds(paths) -> None:
    for path in paths:
        print(f"{path}: not a build (no stamp of a completed fetch{_stamp_note(path)}): "
              f"remove it (a fetch of its version replaces it)")


def _stamp_note(path) -> str:
    return "; its stamp names another version" if os.path.exists(path / builds.STAMP) else ""
