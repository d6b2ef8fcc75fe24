"""What every peer build does to the cache: one fetch at a time, and a finished build
renamed into place (replacing an older one) only when whole."""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from transports.peers import builds


def building_prefix(program: str) -> str:
    """The name of a build in progress (or left by a killed fetch) below the cache."""
    return f".building-{program}-"


@contextmanager
def locked(cache: Path, log: Callable[[str], None]) -> Iterator[None]:
    """One fetch at a time per cache: a second one waits (then finds the build done)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"ringside: another fetch is running in {cache}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def move_into_place(program: str, work: Path, root: Path, log: Callable[[str], None]) -> None:
    """Rename the complete build to its name, replacing what was there (an older build of
    the same version, or a directory that is not a build)."""
    old = None
    if root.exists():
        what = "build" if builds.read_stamp(root, program) else "directory (not a build: no stamp)"
        log(f"ringside: replacing the {what} at {root}")
        old = root.with_name(f"{building_prefix(program)}replaced-{root.name}")
        if old.exists():
            shutil.rmtree(old)
        root.rename(old)
    work.rename(root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
