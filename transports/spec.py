"""The one transport spec: `[LABEL=]NAME[:key=value,...]`, parsed once, used everywhere.

`Spec.parse` reads a spec a user wrote and validates it against the transport's options
(unknown keys and bad values are refused, defaults filled into `settings`). `Spec.read`
reads a spec a result recorded: the same syntax, but nothing is refused, since a result
may hold options this version no longer has. Both give the same object, which renders
itself (`text`, `str`), compares options (`given`, `differing`) and describes them.

Placement keys (`sched`, `idle_guard`, `cpus`) belong to every transport: they say where
the server's threads run, whoever wrote the server (transports/placement.py).
A free-form transport (`external:COMMAND`) takes the remainder as its one option, after
any leading placement items (`external:sched=idle,cpus=1,my-server {image} {mountpoint}`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from transports.options import Option, SpecError
from transports.placement import PLACEMENT_OPTIONS

if TYPE_CHECKING:
    from transports.base import Transport

LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}$")
# Values a recorded setting holds for a spec's on/off words.
_WORDS = {True: "on", False: "off"}


def setting_text(value: Any) -> str:
    """A setting as a spec writes it: on/off for booleans, the value's text otherwise."""
    if isinstance(value, bool):
        return _WORDS[value]
    return str(value)


def same_setting(a: Any, b: Any) -> bool:
    """Two settings are equal as a spec would write them (`pin=on` and True alike)."""
    norm = {"true": "on", "yes": "on", "1": "on", "false": "off", "no": "off", "0": "off"}
    ta, tb = setting_text(a).strip().lower(), setting_text(b).strip().lower()
    return norm.get(ta, ta) == norm.get(tb, tb)


def _options_of(name: str) -> tuple[dict[str, Option], str | None] | None:
    """A registered transport's options (placement included) and its free-form key."""
    from transports.base import TransportUnavailable, transport_class

    try:
        cls = transport_class(name)
    except (SpecError, TransportUnavailable):
        return None
    return {**cls.options, **PLACEMENT_OPTIONS}, getattr(cls, "raw_option", None)


@dataclass(frozen=True)
class Spec:
    name: str
    # The options as written, in order, values as text: what `text` renders.
    given: tuple[tuple[str, str], ...] = ()
    label: str = ""  # from `-t LABEL=SPEC`: what tables call it (else the spec itself)
    # Every option with its value, defaults filled in (validated specs only).
    settings: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    validated: bool = field(default=False, compare=False)

    # -- reading -----------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> Spec:
        """A spec a user wrote: validated, defaults filled; errors list known names/keys."""
        label, bare = split_label(text)
        name, items = _split(bare, validate=True)
        known = _options_of(name)
        if known is None:  # raises the registry's own error (unknown, or cannot load)
            from transports.base import transport_class

            transport_class(name)
            raise SpecError(f"transport {name!r} cannot be loaded")
        options, _raw = known
        settings = {key: opt.default for key, opt in options.items()}
        for key, raw in items:
            if key not in options:
                renamed = next((k for k, o in options.items() if o.formerly == key), None)
                if renamed:
                    raise SpecError(f"{name}: {key}= is called {renamed}= now (the same "
                                    f"setting): write {renamed}={raw}")
                own = sorted(k for k in options if k not in PLACEMENT_OPTIONS)
                names = (", ".join(own) or "none") + "; placement: " + ", ".join(
                    sorted(PLACEMENT_OPTIONS))
                close = difflib.get_close_matches(key, options, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise SpecError(f"{name}: unknown option {key!r}{hint}; known options: {names}")
            settings[key] = options[key].convert(name, key, raw)
        return cls(name, tuple(items), label, settings, True)

    @classmethod
    def read(cls, text: str) -> Spec:
        """A spec a result or manifest recorded: parsed, never refused, no defaults."""
        label, bare = split_label(text, strict=False)
        name, items = _split(bare, validate=False)
        return cls(name, tuple(items), label)

    # -- rendering ---------------------------------------------------------------------
    @property
    def text(self) -> str:
        """`NAME[:key=value,...]` as given (the free-form option last, unnamed)."""
        known = _options_of(self.name)
        raw_key = known[1] if known else None
        parts = [f"{k}={v}" for k, v in self.given if k != raw_key]
        parts += [v for k, v in self.given if k == raw_key]
        return self.name + (":" + ",".join(parts) if parts else "")

    def __str__(self) -> str:
        return self.text

    @property
    def display(self) -> str:
        return self.label or self.text

    def options(self) -> dict[str, str]:
        """The options as written (text values), without defaults."""
        return dict(self.given)

    def get(self, key: str, default: Any = None) -> Any:
        """A setting: as converted when validated, else as written, else `default`."""
        if key in self.settings:
            return self.settings[key]
        return self.options().get(key, default)

    def with_options(self, **values: Any) -> Spec:
        """This spec with options set (or added, in order); validated again if it was."""
        given = dict(self.given)
        given.update({k: setting_text(v) for k, v in values.items()})
        spec = Spec(self.name, tuple(given.items()), self.label)
        if not self.validated:
            return spec
        parsed = Spec.parse(spec.text)
        return Spec(parsed.name, parsed.given, self.label, parsed.settings, True)

    def placed(self, values: dict[str, Any]) -> Spec:
        """This spec with placement settings for the keys it does not give, its text (and
        so its label) unchanged: a command's `--sched`/`--cpus` for every transport."""
        given = self.options()
        settings = dict(self.settings)
        for key, value in values.items():
            if key in PLACEMENT_OPTIONS and key not in given and value is not None:
                settings[key] = PLACEMENT_OPTIONS[key].convert(self.name, key,
                                                               setting_text(value))
        return Spec(self.name, self.given, self.label, settings, self.validated)

    def with_defaults(self, defaults: dict[str, Any]) -> Spec:
        """This spec with each of `defaults` it does not give appended."""
        given = self.options()
        missing = {k: v for k, v in defaults.items() if k not in given}
        return self.with_options(**missing) if missing else self

    def without(self, keys: set[str]) -> Spec:
        return Spec(self.name, tuple((k, v) for k, v in self.given if k not in keys),
                    self.label)

    def describe(self) -> list[str]:
        """One line per setting: `key=value: what it means` (validated specs)."""
        known = _options_of(self.name)
        options = known[0] if known else {}
        return [f"{key}={setting_text(value)}: {options[key].help}"
                for key, value in self.settings.items() if key in options]

    def create(self) -> Transport:
        from transports.base import transport_class

        return transport_class(self.name)(dict(self.settings))


def _split(text: str, validate: bool) -> tuple[str, list[tuple[str, str]]]:
    """`NAME:rest` -> (NAME, [(key, raw value)...]).

    A `cpus=` value may hold commas (`cpus=0,1,depth=8`): an item without '=' right after
    a cpus item continues its list. A free-form transport's remainder, after leading
    placement items, is its one option.
    """
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    known = _options_of(name) if validate or name else None
    raw_key = known[1] if known else None
    items: list[tuple[str, str]] = []
    pieces = rest.split(",") if rest else []
    while pieces:
        piece = pieces[0]
        key, eq, raw = piece.partition("=")
        key = key.strip()
        if raw_key is not None and not (eq and key in PLACEMENT_OPTIONS):
            items.append((raw_key, ",".join(pieces)))  # a command may hold ',' and '='
            break
        pieces.pop(0)
        if not eq:
            if items and items[-1][0] == "cpus" and piece.strip():
                items[-1] = ("cpus", f"{items[-1][1]},{piece.strip()}")
                continue
            if validate:
                raise SpecError(f"{name}: {piece!r} is not key=value")
            continue
        items.append((key, raw.strip()))
    if raw_key is not None and validate and raw_key not in dict(items):
        items.append((raw_key, ""))
    return name, items


def split_label(text: str, strict: bool = True) -> tuple[str, str]:
    """`LABEL=SPEC` -> (LABEL, SPEC); a plain spec -> ("", spec).

    A spec's own '=' always comes after its ':' (`uring:depth=16`), so an '=' before
    any ':' marks a label.
    """
    from transports.base import known_transports

    head, eq, rest = text.strip().partition("=")
    if not eq or ":" in head:
        return "", text.strip()
    label = head.strip()
    if not strict:
        return label, rest.strip()
    if not LABEL_RE.match(label):
        raise SpecError(
            f"bad label {label!r} in {text.strip()!r}: a label is 1-32 letters, digits, "
            "'.', '_', '+' or '-' (no spaces), starting with a letter or digit, e.g. "
            "-t libfuse-uring=libfuse:mode=uring"
        )
    if label in known_transports():
        raise SpecError(
            f"label {label!r} is the name of a transport: tables would confuse the two; "
            "choose another label"
        )
    if not rest.strip():
        raise SpecError(f"label {label!r} names no transport: use -t {label}=SPEC")
    return label, rest.strip()


def check_unique(specs: list[Spec]) -> None:
    """Every transport of a campaign must show under its own name in tables.

    The same spec twice under two labels is allowed (an A/A comparison).
    """
    seen: dict[str, Spec] = {}
    for spec in specs:
        other = seen.get(spec.display)
        if other is not None:
            what = "label" if spec.label else "transport"
            raise SpecError(
                f"{what} {spec.display!r} is given twice ({other.text!r} and {spec.text!r}): "
                "a transport is listed twice; give each its own label"
            )
        seen[spec.display] = spec


def short_labels(specs: list[str]) -> dict[str, str]:
    """Labels without the settings every spec of the same transport shares.

    `uring:depth=8,buffers=pinned` and `uring:depth=8,buffers=mapped` become
    `uring:buffers=pinned` and `uring:buffers=mapped`.
    """
    parsed = {text: Spec.read(text) for text in specs}
    labels = {}
    for text, spec in parsed.items():
        siblings = [s for s in parsed.values() if s.name == spec.name]
        shared = (set.intersection(*(set(s.given) for s in siblings))
                  if len(siblings) > 1 else set())
        labels[text] = spec.without({k for k, _ in shared}).text
    if len(set(labels.values())) != len(labels):
        return {spec: spec for spec in specs}
    return labels


def terse(label: str) -> str:
    """`uring:buffers=pinned` -> `uring:pinned`: a setting's word value says enough."""
    spec = Spec.read(label)
    if not spec.given:
        return spec.name
    parts = [v if not v.isdigit() and v not in ("on", "off") else f"{k}={v}"
             for k, v in spec.given]
    return f"{spec.name}:{','.join(parts)}"
