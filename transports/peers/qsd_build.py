"""Which qemu-storage-daemon the `qsd` transport runs, and what its FUSE export can do.

`qsd:build=` chooses: nothing (Debian's installed qemu-storage-daemon, found on PATH),
`cached` (the newest build `ringside peers fetch qsd` made without patches), `cached-io-uring`
(the newest cached build whose FUSE export has the io-uring option), a cached build's name
(`10.2.2`, `10.2.2+NAME`, as `ringside peers list` shows it) or a path (the binary, a
QEMU build directory, or a cached build's directory).

What the export can do is asked of the binary itself, without mounting anything: it is
started with a `null-co` node and an export on a mountpoint that does not exist, so it
stops at once, and what it says tells whether its QAPI schema has `io-uring` on the FUSE
export ("Parameter 'io-uring' is unexpected" when not) and whether the option works in
this build (the series refuses it without CONFIG_LINUX_IO_URING).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transports.base import TransportUnavailable
from transports.peers import builds

PROGRAM = "qsd"
BINARY = "storage-daemon/qemu-storage-daemon"  # in a QEMU build directory
SYSTEM_BINARY = "qemu-storage-daemon"
CACHED = "cached"
CACHED_IO_URING = "cached-io-uring"
FETCH_HINT = ("`ringside peers fetch qsd` builds Debian's newest served QEMU source into the "
              "checkout's cache (`--patches FILE...` applies a series, e.g. the FUSE-over-"
              "io_uring one, see the README)")
_PROBE_NODE = "ringside-probe"
_PROBE_MOUNTPOINT = "/nonexistent/ringside-probe"
_PROBE_TIMEOUT_S = 20


class ProbeError(RuntimeError):
    """The binary did not answer as any qemu-storage-daemon would."""


@dataclass(frozen=True)
class ExportProbe:
    """What a qemu-storage-daemon binary's FUSE export accepts."""

    version: str  # its --version line
    fuse: bool  # has the FUSE export at all
    io_uring_option: bool  # its QAPI schema has io-uring on the FUSE export
    io_uring_works: bool  # and accepts io-uring=on (built with CONFIG_LINUX_IO_URING)
    detail: str  # what it said to the probes

    def record(self) -> dict[str, Any]:
        return {"version": self.version, "fuse": self.fuse,
                "io_uring_option": self.io_uring_option,
                "io_uring_works": self.io_uring_works, "probe": self.detail}


def _run_probe(binary: str, io_uring: str | None, blockdev: bool) -> str:
    export = (f"type=fuse,id={_PROBE_NODE},node-name={_PROBE_NODE},"
              f"mountpoint={_PROBE_MOUNTPOINT}")
    if io_uring is not None:
        export += f",io-uring={io_uring}"
    argv = [binary, *(["--blockdev", f"driver=null-co,node-name={_PROBE_NODE}"] if blockdev
                      else []), "--export", export]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"`{' '.join(argv)}` did not stop within {_PROBE_TIMEOUT_S} s") \
            from None
    except OSError as e:
        raise ProbeError(f"cannot run {binary}: {e.strerror}") from None
    if proc.returncode == 0:
        raise ProbeError(f"`{' '.join(argv)}` exited 0: an export on a mountpoint that does "
                         "not exist must fail")
    return (proc.stderr + proc.stdout).strip()


@functools.cache
def _probe(binary: str, _mtime_ns: int) -> ExportProbe:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=_PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ProbeError(f"cannot run `{binary} --version`: {e}") from None
    version = (out.stdout.splitlines() or [""])[0].strip()
    if out.returncode != 0 or "qemu-storage-daemon" not in version:
        raise ProbeError(f"`{binary} --version` did not name qemu-storage-daemon "
                         f"(exit {out.returncode}): {(out.stdout + out.stderr).strip()[:300]}")
    with_node = True
    said = _run_probe(binary, "off", blockdev=True)
    if "null-co" in said:  # a build without the null driver: the probe stops at the node
        with_node = False
        said = _run_probe(binary, "off", blockdev=False)
    if re.search(r"'type'.*'fuse'|'fuse'.*'type'|does not accept value 'fuse'", said):
        return ExportProbe(version, False, False, False, said)
    if "Parameter 'io-uring' is unexpected" in said:
        return ExportProbe(version, True, False, False, said)
    if _PROBE_MOUNTPOINT not in said and "Cannot find device" not in said:
        raise ProbeError(f"the FUSE export of {binary} answered neither with an unknown "
                         f"io-uring option nor about its mountpoint: {said[-500:]}")
    works = _run_probe(binary, "on", blockdev=with_node)
    io_uring_works = "CONFIG_LINUX_IO_URING" not in works and "io_uring" not in works.lower()
    return ExportProbe(version, True, True, io_uring_works, f"{said} | io-uring=on: {works}")


def probe(binary: str) -> ExportProbe:
    """What `binary`'s FUSE export accepts (asked once per binary and modification)."""
    return _probe(binary, os.stat(binary).st_mtime_ns)


@dataclass(frozen=True)
class QsdBuild:
    binary: str
    chosen_by: str  # Debian's installed one, a cached build, or a given path
    name: str | None = None  # a cached build's name (VERSION[+VARIANT])
    stamp: dict[str, Any] | None = field(default=None, compare=False)

    def probe(self) -> ExportProbe:
        try:
            return probe(self.binary)
        except (ProbeError, OSError) as e:
            raise TransportUnavailable(f"qemu-storage-daemon {self.binary} ({self.chosen_by}) "
                                       f"does not work: {e}") from None

    def describe(self) -> str:
        return f"{self.binary} ({self.name + ', ' if self.name else ''}{self.chosen_by})"

    def record(self) -> dict[str, Any]:
        """Which build served: binary, version, and for a cached one its source and
        patches (subjects and hashes)."""
        found = self.probe()
        record: dict[str, Any] = {"binary": self.binary, "chosen_by": self.chosen_by,
                                  "name": self.name, "version": found.version,
                                  "io_uring_option": found.io_uring_option}
        if self.stamp is not None:
            record["source"] = self.stamp.get("source")
            record["patches"] = self.stamp.get("patches")
        return record


def resolve(setting: str | None, cache: Path | None = None) -> QsdBuild:
    """The build `qsd:build=SETTING` names; TransportUnavailable naming the fix otherwise."""
    if not setting:
        binary = shutil.which(SYSTEM_BINARY)
        if binary is None:
            raise TransportUnavailable(
                "qemu-storage-daemon is missing: install it with `apt-get install "
                f"qemu-system-common`, or give qsd:build=NAME|PATH ({FETCH_HINT})")
        return QsdBuild(binary, "Debian's installed qemu-storage-daemon (PATH)")
    found, _ = builds.scan(PROGRAM, cache)
    if setting == CACHED:
        plain = [b for b in found if b.variant is None]
        if not plain:
            raise TransportUnavailable(f"no cached qemu-storage-daemon build without patches "
                                       f"in {cache or builds.CACHE_DIR}: {FETCH_HINT}")
        return _cached(plain[-1], "newest cached build without patches")
    if setting == CACHED_IO_URING:
        capable = [b for b in found if ((b.stamp.get("build") or {}).get("export") or {})
                   .get("io_uring_option")]
        if not capable:
            raise TransportUnavailable(
                f"no cached qemu-storage-daemon build whose FUSE export has the io-uring "
                f"option in {cache or builds.CACHE_DIR}: build one with the FUSE-over-"
                "io_uring series, `ringside peers fetch qsd --patches FILE...` (README)")
        return _cached(capable[-1], "newest cached build with the io-uring option")
    if "/" in setting or os.path.exists(setting):
        return _from_path(Path(setting))
    for build in found:
        if setting in (build.name, build.root.name):
            return _cached(build, "cached build named by build=")
    names = ", ".join(b.name for b in found) or "none"
    raise TransportUnavailable(
        f"qsd:build={setting} is no cached build (cached: {names}; also {CACHED}, "
        f"{CACHED_IO_URING}, or a path to a qemu-storage-daemon binary or build directory); "
        + FETCH_HINT)


def _cached(build: builds.CachedBuild, chosen_by: str) -> QsdBuild:
    binary = build.build_dir / BINARY
    if not os.access(binary, os.X_OK):
        raise TransportUnavailable(f"cached build {build.root} has no {BINARY}: fetch it "
                                   "again (`ringside peers fetch qsd ...`)")
    return QsdBuild(str(binary), chosen_by, build.name, build.stamp)


def _from_path(path: Path) -> QsdBuild:
    path = path.resolve()
    for candidate in (path, path / BINARY, path / builds.BUILD_SUBDIR / BINARY):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            stamp = builds.read_stamp(path, PROGRAM) if candidate != path else None
            name = path.name.removeprefix(f"{PROGRAM}-") if stamp else None
            return QsdBuild(str(candidate), "path given by build=", name, stamp)
    raise TransportUnavailable(
        f"qsd:build={path}: neither a qemu-storage-daemon binary nor a directory holding "
        f"{BINARY} or {builds.BUILD_SUBDIR}/{BINARY}")
