"""Peer programs built by `ringside peers fetch` into the checkout's cache.

A build lives in `.cache/peers/PROGRAM-VERSION/` (`PROGRAM-VERSION+VARIANT/` for one
built with patches, VARIANT naming the patch set): the source as unpacked, the build
directory `build/`, and the stamp `ringside-build.json` (program, version, variant,
source hash, how it was built). The stamp is written last, before the directory is
renamed into place: a directory without a stamp, or whose stamp names another program,
version or variant, is not a build (a killed fetch, or a hand-made directory) and is
never chosen.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The checkout's cache (this file is transports/peers/builds.py in the checkout).
CACHE_DIR = Path(__file__).resolve().parents[2] / ".cache" / "peers"
STAMP = "ringside-build.json"
BUILD_SUBDIR = "build"


@dataclass(frozen=True)
class CachedBuild:
    program: str
    version: str
    root: Path  # .cache/peers/PROGRAM-VERSION[+VARIANT]
    stamp: dict[str, Any]

    @property
    def build_dir(self) -> Path:
        return self.root / BUILD_SUBDIR

    @property
    def variant(self) -> str | None:
        """The patch set's name for a build with patches (None: as released)."""
        return self.stamp.get("variant") or None

    @property
    def name(self) -> str:
        """VERSION or VERSION+VARIANT: how `build=` and `ringside peers list` name it."""
        return f"{self.version}+{self.variant}" if self.variant else self.version


def root_of(program: str, version: str, cache: Path | None = None,
            variant: str | None = None) -> Path:
    return (cache or CACHE_DIR) / f"{program}-{version}{f'+{variant}' if variant else ''}"


def version_key(version: str) -> tuple:
    """Orders upstream versions (3.9 < 3.18; a ~rc before its release, as Debian does)."""
    release, _, pre = version.partition("~")
    parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.+-]", release))
    return (parts, 0 if pre else 1, pre)


def read_stamp(root: Path, program: str) -> dict[str, Any] | None:
    """The stamp of a complete build of `program` in `root`, or None (not a build)."""
    try:
        stamp = json.loads((root / STAMP).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("program") != program:
        return None
    variant = stamp.get("variant")
    if root.name != root_of(program, str(stamp.get("version")), root.parent, variant).name:
        return None
    return stamp


def write_stamp(root: Path, stamp: dict[str, Any]) -> None:
    tmp = root / f".{STAMP}.tmp"
    tmp.write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    tmp.rename(root / STAMP)


def scan(program: str, cache: Path | None = None) -> tuple[list[CachedBuild], list[Path]]:
    """The complete builds of `program`, oldest version first, and the directories named
    like one that are not (no stamp, or a stamp of another version)."""
    cache = cache or CACHE_DIR
    builds, not_builds = [], []
    if not cache.is_dir():
        return [], []
    for entry in sorted(cache.glob(f"{program}-*")):
        if not entry.is_dir():
            continue
        stamp = read_stamp(entry, program)
        if stamp is None:
            not_builds.append(entry)
        else:
            builds.append(CachedBuild(program, str(stamp["version"]), entry, stamp))
    builds.sort(key=lambda b: (version_key(b.version), b.variant or ""))
    return builds, not_builds


def newest(program: str, cache: Path | None = None) -> CachedBuild | None:
    """The newest complete build of `program` as released (a patched build is chosen by
    name only)."""
    builds, _ = scan(program, cache)
    released = [b for b in builds if b.variant is None]
    return released[-1] if released else None
