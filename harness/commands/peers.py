"""`ringside peers fetch|list`: peer programs built from Debian's source into the cache."""

from __future__ import annotations

import argparse
import os
import sys

from harness.commands.fetching import add_fetch_options
from transports.peers import builds

PROGRAMS = ("libfuse",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "peers",
        help="build peer servers (libfuse) from Debian's source into the cache and list them",
        description="Peer programs for the peer transports. `fetch libfuse [VERSION]` "
        "downloads Debian sid's fuse3 source package (default: its version) with a private "
        "apt sources list and state directory (the host's apt configuration is not touched; "
        "its Debian mirror is used, or --mirror), builds libfuse's servers with meson and "
        f"ninja and puts the build in {builds.CACHE_DIR}/libfuse-VERSION/. The libfuse "
        "transport uses the newest one unless given build=DIR or $RINGSIDE_LIBFUSE_BUILD.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    f = actions.add_parser("fetch", help="download and build a peer (libfuse)")
    f.add_argument("program", choices=PROGRAMS)
    f.add_argument("version", nargs="?",
                   help="upstream version, e.g. 3.18.3 (default: the newest in Debian sid)")
    add_fetch_options(f, "a build (of VERSION, if given) is")
    f.set_defaults(func=run_fetch)
    ls = actions.add_parser("list", help="cached builds, their versions, and the default")
    ls.set_defaults(func=run_list)


def run_fetch(args: argparse.Namespace) -> int:
    from harness.peer_builds import BuildError, libfuse

    try:
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
    for path in not_builds:
        print(f"{path}: not a build (no stamp of a completed fetch{_stamp_note(path)}): "
              f"remove it (a fetch of its version replaces it)")
    return 0


def _stamp_note(path) -> str:
    return "; its stamp names another version" if os.path.exists(path / builds.STAMP) else ""
