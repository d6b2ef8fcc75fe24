"""libfuse's servers (example/passthrough_hp) built from Debian's `fuse3` source package.

Fetched from sid through a private apt state below the cache; built with meson and ninja
(`-Dtests=false -Dutils=false -Dexamples=true`) in a temporary directory, renamed to
`.cache/peers/libfuse-VERSION/` with its stamp only when passthrough_hp runs from there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from harness.debian.private_apt import KEYRING, AptError, PrivateApt, archive_uri
from harness.peer_builds import BuildError, debian_source, meson
from harness.peer_builds import cache as cache_dir
from transports.peers import builds

PROGRAM = "libfuse"
SOURCE_PACKAGE = "fuse3"
SUITE = "sid"
MESON_OPTIONS = ["-Dtests=false", "-Dutils=false", "-Dexamples=true"]
SERVER = "example/passthrough_hp"
BUILDING_PREFIX = cache_dir.building_prefix(PROGRAM)


def fetch(version: str | None = None, mirror: str | None = None, cache: Path | None = None,
          log: Callable[[str], None] = print, if_missing: bool = False) -> builds.CachedBuild:
    """Build libfuse `version` (upstream, e.g. 3.18.3; default: the newest in sid) into the
    cache; with `if_missing`, a complete cached build of it (of any version when None) is
    returned without touching the network."""
    cache = cache or builds.CACHE_DIR
    with cache_dir.locked(cache, log):
        if if_missing and (have := _cached(version, cache)) is not None:
            return have
        _remove_leftovers(cache, log)
        try:
            return _fetch(version, mirror, cache, log)
        except AptError as e:
            raise BuildError(str(e)) from None


def _cached(version: str | None, cache: Path) -> builds.CachedBuild | None:
    found, _ = builds.scan(PROGRAM, cache)
    matching = [b for b in found if version is None or b.version == version]
    return matching[-1] if matching else None


def _remove_leftovers(cache: Path, log: Callable[[str], None]) -> None:
    # Under the lock, a building directory belongs to a fetch that died: never a build.
    for stale in cache.glob(f"{BUILDING_PREFIX}*"):
        log(f"ringside: removing {stale} (left by an interrupted fetch)")
        shutil.rmtree(stale, ignore_errors=True)


def _fetch(version: str | None, mirror: str | None, cache: Path,
           log: Callable[[str], None]) -> builds.CachedBuild:
    started = time.monotonic()
    archive, chosen = archive_uri(mirror)
    apt = PrivateApt(cache / ".apt", [f"deb-src [signed-by={KEYRING}] {archive} {SUITE} main"])
    where = f"Debian {SUITE} ({archive})"
    log(f"ringside: reading the source list of {where}, chosen by {chosen}")
    apt.update(where)
    debian_version = debian_source.choose_version(
        version, debian_source.available_versions(apt, SOURCE_PACKAGE),
        f"{where} source package {SOURCE_PACKAGE}",
    )
    upstream = debian_source.upstream_of(debian_version)
    root = builds.root_of(PROGRAM, upstream, cache)
    work = Path(tempfile.mkdtemp(prefix=f"{BUILDING_PREFIX}{upstream}-", dir=cache))
    try:
        log(f"ringside: downloading {SOURCE_PACKAGE} {debian_version}")
        files = debian_source.download(apt, SOURCE_PACKAGE, debian_version, work / "download")
        debian_source.unpack(files.tarball, work / "source")
        fetched = time.monotonic()
        tool, meson_used = meson.find_meson(
            meson.required_version(work / "source"), cache / ".meson-venv", log
        )
        tooled = time.monotonic()
        logs = cache / "logs"
        logs.mkdir(exist_ok=True)
        log_path = logs / f"{PROGRAM}-{upstream}.log"
        log(f"ringside: building libfuse {upstream} with {meson_used} (log: {log_path})")
        meson.build(tool, work / "source", work / builds.BUILD_SUBDIR, MESON_OPTIONS, log_path)
        built = time.monotonic()
        io_uring = _check_build(work / builds.BUILD_SUBDIR, upstream, log_path)
        shutil.rmtree(work / "download")
        builds.write_stamp(work, {
            "program": PROGRAM,
            "version": upstream,
            "source": {
                "package": SOURCE_PACKAGE,
                "debian_version": debian_version,
                "archive": f"{archive} {SUITE}",
                "archive_chosen_by": chosen,
                "tarball": files.tarball.name,
                "sha256": files.sha256,
                "debian_changes": "not applied (the upstream tarball as released)",
            },
            "build": {
                "meson": meson_used,
                "options": MESON_OPTIONS,
                "io_uring": io_uring,
                "log": str(log_path),
                "seconds": {"fetch": round(fetched - started, 1),
                            "meson": round(tooled - fetched, 1),
                            "build": round(built - tooled, 1)},
            },
            "built": datetime.now(UTC).isoformat(timespec="seconds"),
        })
        cache_dir.move_into_place(PROGRAM, work, root, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        _check_build(root / builds.BUILD_SUBDIR, upstream, log_path)
    except BuildError:
        shutil.rmtree(root, ignore_errors=True)  # never leave a build that does not run
        raise
    log(f"ringside: libfuse {upstream} built in {root / builds.BUILD_SUBDIR} (fetch "
        f"{fetched - started:.1f} s, meson {tooled - fetched:.1f} s, build "
        f"{built - tooled:.1f} s)")
    result = _cached(upstream, cache)
    assert result is not None
    return result


def _check_build(build_dir: Path, version: str, log_path: Path) -> bool:
    """passthrough_hp runs with this build's libfuse, which has io_uring (else BuildError)."""
    server = build_dir / SERVER
    if not server.exists():
        raise BuildError(f"the build made no {SERVER} (see {log_path})")
    ldd = subprocess.run(["ldd", str(server)], capture_output=True, text=True).stdout
    m = re.search(r"libfuse3\.so\S* => (\S+)", ldd)
    if m is None or not Path(m.group(1)).resolve().is_relative_to(build_dir.resolve()):
        raise BuildError(f"{server} does not load the libfuse it was built with: ldd says\n"
                         f"{ldd.strip()}")
    proc = subprocess.run([str(server), "--help"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{server} --help failed (exit {proc.returncode}): "
                         f"{proc.stderr.strip()[-500:]}")
    config = (build_dir / "fuse_config.h").read_text(errors="replace")
    if not re.search(r"^#define HAVE_URING\b", config, re.M):
        raise BuildError(f"libfuse {version} was built without io_uring ({_why_no_uring(log_path)};"
                         f" see {log_path}): install that, then fetch again")
    return True


# What libfuse's meson.build needs for io_uring, as its log says it, and the package.
_URING_NEEDS = (
    ("Run-time dependency liburing found: NO", "no liburing: `apt-get install liburing-dev`"),
    ("Run-time dependency numa found: NO", "no libnuma: `apt-get install libnuma-dev`"),
    ("SQE128 support: NO", "liburing without SQE128: liburing >= 2.2 (`liburing-dev`)"),
)


def _why_no_uring(log_path: Path) -> str:
    text = log_path.read_text(errors="replace")
    found = [why for line, why in _URING_NEEDS if line in text]
    return "; ".join(found) or "meson's reason is in the log"


