"""qemu-storage-daemon built from Debian's `qemu` source package, tools only.

The newest version whose source Debian serves (sid and experimental list versions whose
source files the archive may no longer hold: those are skipped, saying so), or a given
one; optionally with a patch series applied in order (harness/peer_builds/patches.py).
Configured with the FUSE export and io_uring, built with ninja in a temporary directory,
renamed to `.cache/peers/qsd-VERSION[+NAME]/` with its stamp only when its
qemu-storage-daemon runs and its FUSE export answers (transports/peers/qsd_build.py
probes it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.debian.private_apt import KEYRING, AptError, PrivateApt, archive_uri
from harness.peer_builds import BuildError, debian_source, meson, patches
from harness.peer_builds import cache as cache_dir
from transports.peers import builds, qsd_build

PROGRAM = qsd_build.PROGRAM
SOURCE_PACKAGE = "qemu"
SUITES = ("sid", "experimental")
CONFIGURE_OPTIONS = [
    "--target-list=", "--disable-system", "--disable-user", "--without-default-features",
    "--enable-tools", "--enable-fuse", "--enable-fuse-lseek", "--enable-linux-io-uring",
    "--disable-docs", "--disable-werror",
    # Python packages come from our venv (PyPI, said so), subprojects from the tarball.
    "--disable-download",
    # Debian's +ds tarball has no firmware blobs, and a tools build needs none.
    "--disable-install-blobs",
]
TARGET = qsd_build.BINARY  # ninja names targets by output path
BUILDING_PREFIX = cache_dir.building_prefix(PROGRAM)
# QEMU's pythondeps.toml [meson] group: what configure needs in its Python venv.
PYTHON_NEEDS = {"pycotap": "1.1.0"}
# pkg-config modules the tools-only build needs, and the Debian package of each.
PKG_CONFIG_NEEDS = {
    "glib-2.0 >= 2.66": "libglib2.0-dev",
    "zlib": "zlib1g-dev",
    "fuse3 >= 3.1": "libfuse3-dev",
    "liburing >= 0.3": "liburing-dev",
}
# Programs it needs, and their packages: meson wants dtc even for a tools build when the
# tarball has no prebuilt device trees (Debian's +ds has none); nothing is compiled by it.
PROGRAM_NEEDS = {"dtc": "device-tree-compiler"}
# The upstream fix of the legacy export's concurrent-write corruption (QEMU 7.2 in Debian
# 12): "fuse: Copy write buffer content before polling" (Hanna Czenczek, 2025). Its mark
# in block/export/fuse.c: the write data is copied into a bounce buffer before any I/O.
WRITE_COPY_FIX = "fuse: Copy write buffer content before polling"
_WRITE_COPY_MARK = re.compile(r"memcpy\(copied, (?:buf|in_place_buf)")


def fetch(version: str | None = None, patch_files: list[Path] | None = None,
          name: str | None = None, mirror: str | None = None, cache: Path | None = None,
          log: Callable[[str], None] = print, if_missing: bool = False) -> builds.CachedBuild:
    """Build qemu-storage-daemon `version` (upstream, e.g. 10.2.2; default: the newest
    whose source Debian serves), with `patch_files` applied in order, into the cache; with
    `if_missing`, a complete cached build of the same version and patches is returned
    without touching the network."""
    cache = cache or builds.CACHE_DIR
    series = patches.read_series(list(patch_files)) if patch_files else None
    variant = None
    if series is not None:
        variant = patches.check_name(name) if name else series.default_name()
    elif name:
        raise BuildError("--name names a patch set: give --patches too")
    with cache_dir.locked(cache, log):
        if if_missing and (have := _cached(version, variant, cache)) is not None:
            return have
        _remove_leftovers(cache, log)
        try:
            return _fetch(version, series, variant, mirror, cache, log)
        except AptError as e:
            raise BuildError(str(e)) from None


def _cached(version: str | None, variant: str | None,
            cache: Path) -> builds.CachedBuild | None:
    found, _ = builds.scan(PROGRAM, cache)
    matching = [b for b in found if (version is None or b.version == version)
                and b.variant == variant]
    return matching[-1] if matching else None


def _remove_leftovers(cache: Path, log: Callable[[str], None]) -> None:
    for stale in cache.glob(f"{BUILDING_PREFIX}*"):
        log(f"ringside: removing {stale} (left by an interrupted fetch)")
        shutil.rmtree(stale, ignore_errors=True)


def _fetch(version: str | None, series: patches.Series | None, variant: str | None,
           mirror: str | None, cache: Path, log: Callable[[str], None]) -> builds.CachedBuild:
    started = time.monotonic()
    archive, chosen = archive_uri(mirror)
    apt = PrivateApt(cache / ".apt-qemu", [f"deb-src [signed-by={KEYRING}] {archive} {suite} "
                                           "main" for suite in SUITES])
    where = f"Debian {' and '.join(SUITES)} ({archive})"
    log(f"ringside: reading the source lists of {where}, chosen by {chosen}")
    apt.update(where)
    available = debian_source.available_versions(apt, SOURCE_PACKAGE)
    work = Path(tempfile.mkdtemp(prefix=f"{BUILDING_PREFIX}{version or 'newest'}-", dir=cache))
    try:
        debian_version, files, unserved = _download(apt, version, available, where,
                                                    work / "download", log)
        upstream = _upstream(debian_version)
        root = builds.root_of(PROGRAM, upstream, cache, variant)
        debian_source.unpack(files.tarball, work / "source")
        fetched = time.monotonic()
        logs = cache / "logs"
        logs.mkdir(exist_ok=True)
        log_path = logs / f"{root.name}.log"
        with open(log_path, "w") as build_log:
            if series is not None:
                for note in series.skipped:
                    log(f"ringside: skipping {note}")
                for patch in series.patches:
                    log(f"ringside: applying {patch.where}: {patch.subject}")
                    patches.apply(patch, work / "source", build_log)
            write_fix = _has_write_copy_fix(work / "source")
            _check_build_dependencies(log)
            tool, meson_used = meson.private_meson(
                _meson_minimum(work / "source"), cache / ".meson-venv", log,
                "not where QEMU's configure looks: it takes meson from its --python's venv")
            meson.ensure_packages(cache / ".meson-venv", PYTHON_NEEDS, log)
            tooled = time.monotonic()
            log(f"ringside: building qemu-storage-daemon {upstream}"
                f"{f' +{variant}' if variant else ''} (log: {log_path}; 10-20 minutes on 2 "
                "CPUs)")
            build_dir = work / builds.BUILD_SUBDIR
            build_dir.mkdir()
            python = str(cache / ".meson-venv" / "bin" / "python")
            meson.check_tools((("ninja", "ninja-build"), ("cc", "gcc")))
            meson.run_logged([
                [str(work / "source" / "configure"), f"--python={python}", *CONFIGURE_OPTIONS],
                ["ninja", "-C", str(build_dir), TARGET],
            ], build_log, log_path, cwd=build_dir)
        built = time.monotonic()
        probe = _check_build(build_dir, log_path)
        shutil.rmtree(work / "download")
        builds.write_stamp(work, {
            "program": PROGRAM,
            "version": upstream,
            "variant": variant,
            "source": {
                "package": SOURCE_PACKAGE,
                "debian_version": debian_version,
                "archive": f"{archive} {' '.join(SUITES)}",
                "archive_chosen_by": chosen,
                "not_served": unserved,
                "tarball": files.tarball.name,
                "sha256": files.sha256,
                "debian_changes": "not applied (the upstream tarball as released)",
                "write_copy_fix": {"name": WRITE_COPY_FIX, "present": write_fix},
            },
            "patches": None if series is None else {
                "name": variant,
                "files": series.files,
                "applied": series.record(),
                "skipped": series.skipped,
                "tool": "GNU patch " + " ".join(patches.PATCH_OPTIONS),
            },
            "build": {
                "configure": CONFIGURE_OPTIONS,
                "target": TARGET,
                "binary": qsd_build.BINARY,
                "meson": meson_used,
                "export": probe.record(),
                "log": str(log_path),
                "seconds": {"fetch": round(fetched - started, 1),
                            "tools": round(tooled - fetched, 1),
                            "build": round(built - tooled, 1)},
            },
            "built": datetime.now(UTC).isoformat(timespec="seconds"),
        })
        cache_dir.move_into_place(PROGRAM, work, root, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        _check_build(root / builds.BUILD_SUBDIR, log_path)
    except BuildError:
        shutil.rmtree(root, ignore_errors=True)  # never leave a build that does not run
        raise
    log(f"ringside: qemu-storage-daemon {root.name.removeprefix(PROGRAM + '-')} built in "
        f"{root / builds.BUILD_SUBDIR} (fetch {fetched - started:.1f} s, tools "
        f"{tooled - fetched:.1f} s, build {built - tooled:.1f} s); FUSE export io-uring "
        f"option: {'yes' if probe.io_uring_option else 'no'}")
    result = _cached(upstream, variant, cache)
    assert result is not None
    return result


def _download(apt: PrivateApt, version: str | None, available: list[str], where: str,
              into: Path, log: Callable[[str], None]):
    """The newest Debian version of `version` (or of all) whose source the archive
    serves, its files, and the newer ones it listed but did not serve."""
    what = f"{where} source package {SOURCE_PACKAGE}"
    if not available:
        raise BuildError(f"{what}: no such source package")
    if version is not None:
        listed = available
        available = [v for v in listed if _upstream(v) == version or v == version]
        if not available:
            have = ", ".join(f"{_upstream(v)} (Debian {v})" for v in listed)
            raise BuildError(f"{what} has no version {version}; it has: {have} (the newest "
                             "may be listed without its source being served)")
    unserved: list[str] = []
    for debian_version in reversed(available):
        log(f"ringside: downloading {SOURCE_PACKAGE} {debian_version}")
        try:
            return debian_version, debian_source.download(
                apt, SOURCE_PACKAGE, debian_version, into), unserved
        except AptError as e:
            if not re.search(r"\b404\b", str(e)):
                raise
            unserved.append(debian_version)
            shutil.rmtree(into, ignore_errors=True)
            log(f"ringside: {where} lists {SOURCE_PACKAGE} {debian_version} but does not "
                "serve its source files (404)" + ("; trying the next older version"
                                                  if debian_version != available[0] else ""))
    raise BuildError(f"{what}: none of the versions listed is served (404 for "
                     f"{', '.join(unserved)}); give an older VERSION or another --mirror")


def _upstream(debian_version: str) -> str:
    """`1:10.2.2+ds-1` -> `10.2.2` (Debian's repacked `+ds` tarball is upstream's)."""
    return debian_source.upstream_of(debian_version).split("+ds")[0]


def _meson_minimum(source: Path) -> str:
    """The meson configure accepts (pythondeps.toml's [meson] group)."""
    try:
        text = (source / "pythondeps.toml").read_text()
    except OSError:
        raise BuildError(f"{source} has no pythondeps.toml: not a QEMU >= 8.1 source tree") \
            from None
    m = re.search(r'^meson\s*=\s*\{[^}]*accepted\s*=\s*">=\s*([\d.]+)"', text, re.M)
    return m.group(1) if m else "1.5.0"


def _has_write_copy_fix(source: Path) -> bool:
    try:
        text = (source / "block" / "export" / "fuse.c").read_text(errors="replace")
    except OSError:
        return False
    return _WRITE_COPY_MARK.search(text) is not None


def _check_build_dependencies(log: Callable[[str], None]) -> None:
    """The packages the build needs: installed now when missing and we are root (glib's
    headers and dtc are not among `make setup`'s packages: only this build needs them)."""
    if shutil.which("pkg-config") is None:
        raise BuildError("pkg-config is missing: `apt-get install pkg-config`")
    missing = sorted({package for module, package in PKG_CONFIG_NEEDS.items()
                      if subprocess.run(["pkg-config", "--exists", module]).returncode != 0}
                     | {package for program, package in PROGRAM_NEEDS.items()
                        if shutil.which(program) is None})
    if not missing:
        return
    command = f"apt-get install {' '.join(missing)}"
    if not _is_root():
        raise BuildError(f"building qemu-storage-daemon needs {', '.join(missing)}: run "
                         f"`{command}` as root, then fetch again")
    log(f"ringside: installing {', '.join(missing)} (what qemu-storage-daemon's build "
        f"needs; `{command}`)")
    proc = subprocess.run(["apt-get", "install", "-y", "-q", *missing], capture_output=True,
                          text=True, env={"DEBIAN_FRONTEND": "noninteractive",
                                          "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    if proc.returncode != 0:
        raise BuildError(f"`{command}` failed (exit {proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[-1500:]}")


def _is_root() -> bool:
    return os.geteuid() == 0


def _check_build(build_dir: Path, log_path: Path) -> qsd_build.ExportProbe:
    """The binary runs and its FUSE export answers (BuildError otherwise)."""
    binary = build_dir / qsd_build.BINARY
    if not binary.exists():
        raise BuildError(f"the build made no {qsd_build.BINARY} (see {log_path})")
    try:
        probe = qsd_build.probe(str(binary))
    except qsd_build.ProbeError as e:
        raise BuildError(f"{binary} does not work: {e} (see {log_path})") from None
    if not probe.fuse:
        raise BuildError(f"{binary} has no FUSE export ({probe.detail}): was libfuse3-dev "
                         f"missing when it was configured? See {log_path}")
    return probe


def describe_patches(stamp: dict[str, Any]) -> str:
    """One line of a cached build's patches, for `ringside peers list`."""
    record = stamp.get("patches")
    if not record:
        return "no patches"
    applied = record.get("applied") or []
    return (f"{len(applied)} patches ({record.get('name')}): "
            + "; ".join(f"{p.get('subject')} [{str(p.get('sha256'))[:12]}]" for p in applied))
