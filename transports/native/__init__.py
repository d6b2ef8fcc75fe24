"""Ringside's one compiled module, transports._native, for every Python user of its C.

transports._native holds the C of three areas (built by build.py from the files that
sources.py lists): the uring transport's rings (transports/builtin/uring/), the native data path
(transports/datapath/) and where serving threads run (transports/sched/: the starvation
guard, devfuse's following). Its users import `ffi` and `lib` from here, never
transports._native itself, so that a module that is missing, cannot load or was built
from other sources than the tree's is refused here, with its cause and its fix: nothing
falls back to another transport or data path.

The module links liburing, so it is built only where liburing's headers are (`make setup`
installs liburing-dev); without them setup.py installs the rest of Ringside, and devfuse,
uring, datapath=native and the guard are refused with that cause.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from transports.native import sources

MODULE = "transports._native"
REBUILD = "`make setup` (or `.venv/bin/pip install -e .`)"

# Loaded on first use (module __getattr__ below), so that importing this package or
# sources.py needs no build.
ffi: Any
lib: Any


class NativeModuleUnavailable(ImportError):
    """transports._native is missing, cannot load, or is stale; the message says why and
    what fixes it. An ImportError, as a missing compiled module always was."""


def check_stamp(built: str, root: Path = sources.TRANSPORTS) -> None:
    """Refuse a module whose stamp (`built`: the hash of the sources it was built from) is
    not the hash of the sources under `root`. A tree without them (an install that ships
    none) is not checked."""
    current = sources.source_hash(root)
    if current is not None and built != current:
        raise NativeModuleUnavailable(
            f"{MODULE} is stale: it was built from other sources than those in {root} "
            f"(built from {built[:12]}, the tree is {current[:12]}): rebuild it with {REBUILD}"
        )


def load(name: str = MODULE) -> tuple[Any, Any]:
    """The compiled module's (ffi, lib), its stamp checked; NativeModuleUnavailable says
    why not."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise NativeModuleUnavailable(f"{name} cannot be loaded ({e}): {REBUILD}") from e
        if not sources.liburing_headers():
            raise NativeModuleUnavailable(
                f"{name} is not built: it links liburing, whose headers are missing "
                f"(setup.py built Ringside without it): `apt-get install liburing-dev`, "
                f"then {REBUILD}"
            ) from e
        raise NativeModuleUnavailable(f"{name} is not built: build it with {REBUILD}") from e
    except ImportError as e:
        raise NativeModuleUnavailable(
            f"{name} cannot be loaded ({e}): rebuild it with {REBUILD}"
        ) from e
    stamp = getattr(module.lib, "rs_native_stamp", None)  # None: built before stamps
    check_stamp(module.ffi.string(stamp()).decode() if stamp else "none")
    return module.ffi, module.lib


def __getattr__(name: str) -> Any:
    if name in ("ffi", "lib"):
        globals()["ffi"], globals()["lib"] = load()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
