"""A transport's options as a spec names them: how each is parsed, its default, its help.

Transports declare `options = {"key": Option(...)}`; transports/spec.py reads specs with
them. Kept apart from the transports so the spec, the placement keys and the analysis can
use them without loading any transport.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class SpecError(ValueError):
    """A transport spec that names an unknown transport or option, or a bad value."""


@dataclass(frozen=True)
class Option:
    parse: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    # What a run ran with before the option existed, as a spec writes it: a result that
    # does not record the key is read as having it (harness/results/upgrade.py). None:
    # what its default does now.
    absent: str | None = None
    # The key's earlier name: a spec that uses it is refused with the new one, and a
    # result or manifest that recorded it reads under the new one (upgrade.py).
    formerly: str | None = None

    def convert(self, name: str, key: str, raw: str) -> Any:
        if self.choices and raw not in self.choices:
            raise SpecError(f"{name}: {key}={raw!r} is not one of {', '.join(self.choices)}")
        try:
            return self.parse(raw)
        except (TypeError, ValueError) as e:
            raise SpecError(f"{name}: bad value {key}={raw!r}: {e}") from None


def positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def on_off(raw: str) -> bool:
    if raw in ("on", "yes", "true", "1"):
        return True
    if raw in ("off", "no", "false", "0"):
        return False
    raise ValueError("use on or off")


def flag(settings: dict[str, Any], key: str, default: bool) -> bool:
    """An on/off setting as a bool: parsed specs hold bools, hand-made settings may hold
    "on"/"off"."""
    value = settings.get(key, default)
    return on_off(value) if isinstance(value, str) else bool(value)
