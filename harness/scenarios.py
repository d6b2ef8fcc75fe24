"""Scenarios: fio workloads kept as data (TOML files in scenarios/), validated on load.

A scenario file holds `name`, `description`, a `[fio]` table of fio job options and an
optional `[sweep]` table mapping an axis (a fio option) to a list of values. The sweep is
expanded as a cross product into scenario points; a scenario without a sweep has one
point. Every error names the file, the key and what was expected, because scenario files
are written by hand.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"


class ScenarioError(ValueError):
    """A scenario file that is missing, unreadable or holds a bad key or value."""


_SIZE_RE = re.compile(r"^(\d+)([kmgt]?)(i?b)?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def size_bytes(value: int | str) -> int:
    """fio's reading of a size ('4k' is 4096: fio's default kb_base is 1024)."""
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(value.strip())
    if not m:
        raise ValueError(value)
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


# -- value checkers: each returns the normalised value or raises ValueError(expected) ----
def _size(value: Any) -> int | str:
    if isinstance(value, bool):
        raise ValueError("a size such as 4k, 1m or a number of bytes")
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str):
        try:
            if size_bytes(value) > 0:
                return value.strip()
        except ValueError:
            pass
    raise ValueError("a size such as 4k, 1m or a number of bytes")


def _positive_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ValueError("a positive integer")


def _non_negative_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError("a non-negative integer")


def _seconds(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ValueError("a whole number of seconds greater than 0, e.g. 10")


def _flag(value: Any) -> int:
    # fio writes booleans as 0/1; TOML users may write true/false.
    if isinstance(value, bool):
        return int(value)
    if value in (0, 1):
        return int(value)
    raise ValueError("true or false (or 0 or 1)")


def _percent(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100:
        return value
    raise ValueError("an integer percentage from 0 to 100")


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, str) and value in choices:
            return value
        raise ValueError("one of " + ", ".join(choices))

    return check


def _cpu_list(value: Any) -> str:
    text = str(value).strip()
    if re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", text):
        return text
    raise ValueError("a CPU list such as 1, 0-1 or 0,2")


RW_MODES = ("read", "write", "randread", "randwrite", "rw", "readwrite", "randrw")
IO_ENGINES = (
    "psync", "sync", "pvsync", "pvsync2", "libaio", "io_uring", "posixaio",
)

# The fio options a scenario may set. The runner owns filename, output and reporting.
FIO_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "rw": _choice(*RW_MODES),
    "bs": _size,
    "iodepth": _positive_int,
    "ioengine": _choice(*IO_ENGINES),
    "direct": _flag,
    "runtime": _seconds,
    "ramp_time": _non_negative_int,
    "time_based": _flag,
    "numjobs": _positive_int,
    "size": _size,
    "rwmixread": _percent,
    "fsync": _non_negative_int,
    "end_fsync": _flag,
    "norandommap": _flag,
    "randrepeat": _flag,
    "hipri": _flag,
    "fixedbufs": _flag,
    "registerfiles": _flag,
    "sqthread_poll": _flag,
    "rate_iops": _positive_int,
    "cpus_allowed": _cpu_list,
    "loops": _positive_int,
}
REQUIRED_FIO = ("rw", "bs")
# Filled in when a scenario leaves them out, so every result records them explicitly.
FIO_DEFAULTS: dict[str, Any] = {
    "iodepth": 1,
    "ioengine": "psync",
    "direct": 1,
    "runtime": 10,
    "time_based": 1,
    "numjobs": 1,
}
SWEEP_AXES = ("bs", "iodepth", "numjobs", "rw", "rwmixread", "ioengine", "direct")
TOP_LEVEL = ("name", "description", "fio", "sweep", "export")


def _attr_timeout(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise ValueError("a number of seconds >= 0, e.g. 0 so that every stat reaches the server")


# Export options a scenario may need (e.g. attr_timeout = 0 for a metadata workload).
EXPORT_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "attr_timeout": _attr_timeout,
    "cache": _choice("pagecache", "direct"),
}


def _unknown(where: str, key: str, known: tuple[str, ...] | list[str]) -> ScenarioError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ScenarioError(f"{where}: unknown key {key!r}{hint}; allowed keys: {', '.join(known)}")


def check_fio_option(where: str, key: str, value: Any) -> Any:
    """Validate one fio option; `where` names the file and table for the message."""
    if key not in FIO_OPTIONS:
        raise _unknown(where, key, list(FIO_OPTIONS))
    try:
        return FIO_OPTIONS[key](value)
    except ValueError as e:
        raise ScenarioError(f"{where}: {key} = {value!r} is invalid: expected {e}") from None


@dataclass(frozen=True)
class ScenarioPoint:
    """One fully specified fio workload: the scenario's options with one sweep choice."""

    scenario: str
    fio: dict[str, Any]
    sweep: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.sweep:
            return self.scenario
        return self.scenario + "@" + ",".join(f"{k}={v}" for k, v in self.sweep.items())

    @property
    def slug(self) -> str:
        """The label made safe for file names."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.label.replace("@", "_").replace("=", "-"))


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    path: str
    fio: dict[str, Any]
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)

    def points(self, overrides: Mapping[str, Any] | None = None) -> list[ScenarioPoint]:
        """The cross product of the sweep axes (in file order); overrides win over all.

        Overrides (e.g. {"runtime": 2} for a quick test) are validated like file values.
        """
        checked = {k: check_fio_option("override", k, v) for k, v in (overrides or {}).items()}
        axes = [a for a in self.sweep if a not in checked]
        base = dict(self.fio)
        for key, value in FIO_DEFAULTS.items():
            base.setdefault(key, value)
        base.update(checked)
        points = []
        for combo in itertools.product(*(self.sweep[a] for a in axes)):
            choice = dict(zip(axes, combo, strict=True))
            points.append(ScenarioPoint(self.name, {**base, **choice}, choice))
        return points


def resolve(path_or_name: str | os.PathLike[str]) -> Path:
    """A path to a scenario file, or a bare name looked up as scenarios/NAME.toml."""
    text = os.fspath(path_or_name)
    path = Path(text)
    if path.exists():
        return path
    if os.sep not in text and not text.endswith(".toml"):
        candidate = SCENARIO_DIR / f"{text}.toml"
        if candidate.exists():
            return candidate
    known = sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
    raise ScenarioError(
        f"scenario {text!r} not found: give a path to a .toml file or the name of one in "
        f"{SCENARIO_DIR} (known: {', '.join(known) or 'none'})"
    )


def load_scenario(path_or_name: str | os.PathLike[str]) -> Scenario:
    path = resolve(path_or_name)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ScenarioError(f"cannot read scenario {path}: {e.strerror}") from None
    return parse_scenario(doc, str(path))


def parse_scenario(doc: Mapping[str, Any], where: str) -> Scenario:
    for key in doc:
        if key not in TOP_LEVEL:
            raise _unknown(where, key, TOP_LEVEL)
    name = doc.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ScenarioError(
            f"{where}: name = {name!r} is invalid: expected a string of letters, digits, "
            "'.', '_' or '-', e.g. name = \"randread-4k-qd1\""
        )
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{where}: description must be a string")
    table = doc.get("fio")
    if not isinstance(table, dict):
        raise ScenarioError(
            f'{where}: missing [fio] table: expected fio job options, e.g. rw = "randread"'
        )
    fio = {k: check_fio_option(f"{where} [fio]", k, v) for k, v in table.items()}
    sweep_table = doc.get("sweep", {})
    if not isinstance(sweep_table, dict):
        raise ScenarioError(f"{where}: sweep must be a table of axis = [values]")
    sweep: dict[str, list[Any]] = {}
    for axis, values in sweep_table.items():
        if axis not in SWEEP_AXES:
            raise _unknown(f"{where} [sweep]", axis, SWEEP_AXES)
        if axis in fio:
            raise ScenarioError(
                f"{where}: {axis} is set in both [fio] and [sweep]: keep it in one of them"
            )
        if not isinstance(values, list) or not values:
            raise ScenarioError(
                f"{where} [sweep]: {axis} = {values!r} is invalid: expected a non-empty list"
            )
        checked = [check_fio_option(f"{where} [sweep]", axis, v) for v in values]
        if len(set(map(str, checked))) != len(checked):
            raise ScenarioError(f"{where} [sweep]: {axis} lists a value twice")
        sweep[axis] = checked
    for key in REQUIRED_FIO:
        if key not in fio and key not in sweep:
            raise ScenarioError(
                f"{where}: [fio] is missing {key!r} (set it in [fio] or sweep it in [sweep])"
            )
    export_table = doc.get("export", {})
    if not isinstance(export_table, dict):
        raise ScenarioError(f"{where}: export must be a table, e.g. [export] attr_timeout = 0")
    export: dict[str, Any] = {}
    for key, value in export_table.items():
        if key not in EXPORT_OPTIONS:
            raise _unknown(f"{where} [export]", key, list(EXPORT_OPTIONS))
        try:
            export[key] = EXPORT_OPTIONS[key](value)
        except ValueError as e:
            raise ScenarioError(
                f"{where} [export]: {key} = {value!r} is invalid: expected {e}"
            ) from None
    return Scenario(name, description, where, fio, sweep, export)
