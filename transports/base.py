"""The one interface every transport has, the registry, and transport specs.

A spec is `NAME[:key=value,...]` (e.g. `uring:depth=16,buffers=pinned`). Each transport
declares its options once; parsing, validation, defaults and error messages live here.
A transport moves bytes between the kernel and the export (through the codec, or
through libfuse for pyfuse3); it never decides what a request means.
"""

from __future__ import annotations

import abc
import ctypes
import dataclasses
import difflib
import importlib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from transports.export.image import Export

_PR_SET_NAME = 15


def name_os_thread() -> None:
    """Give the calling thread its Python name in /proc (comm), for per-thread metrics."""
    name = threading.current_thread().name.encode()[:15]
    ctypes.CDLL(None).prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


class SpecError(ValueError):
    """A transport spec that names an unknown transport or option, or a bad value."""


class TransportUnavailable(RuntimeError):
    """The transport cannot run on this machine; the message names the cause and the fix."""


@dataclass(frozen=True)
class Option:
    parse: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple[str, ...] = ()

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


@dataclass
class TransportStatistics:
    """What every transport's `statistics()` returns: one shape, filled by each transport.

    Opcodes are named as in transports.fuse.abi.OPCODE_NAMES (upper case). None means "not
    counted": a peer counts nothing, and only a transport with a ring fills the ring
    fields, even with zero counts, so a silent fallback to /dev/fuse is caught. What is
    particular to one transport (its queues, locked memory, teardown) goes in `detail`.
    In JSON (`as_dict`, the result's transport_stats) the fields are flat, None ones left
    out, detail merged in.
    """

    transport: str
    settings: dict[str, Any]
    requests: int | None  # every request served
    ops: dict[str, int] | None = None  # opcode name -> requests served
    errors: int | None = None  # error replies
    exceptions: int | None = None  # requests the export raised on (answered EIO)
    requests_devfuse: int | None = None  # of `requests`, read from /dev/fuse
    ops_devfuse: dict[str, int] | None = None
    requests_ring: int | None = None  # of `requests`, carried by the ring
    ops_ring: dict[str, int] | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "detail" and getattr(self, f.name) is not None
        }
        out["requests"] = self.requests  # kept when None: "counted by nobody"
        return {**out, **self.detail}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransportStatistics:
        """Read back what as_dict wrote (other keys, such as serve's spec, go to detail)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"detail"}
        known = {k: v for k, v in data.items() if k in names}
        known.setdefault("settings", {})
        known.setdefault("requests", None)
        return cls(
            transport=str(data.get("transport", "")),
            **{k: v for k, v in known.items() if k != "transport"},
            detail={k: v for k, v in data.items() if k not in names},
        )

    @classmethod
    def of_codecs(
        cls,
        transport: str,
        settings: dict[str, Any],
        total: dict[str, Any],
        devfuse: dict[str, Any],
        ring: dict[str, Any] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> TransportStatistics:
        """From merged Codec.counters(): of every path (`total`), of the requests read from
        /dev/fuse and, for a transport with a ring, of those the ring carried."""
        return cls(
            transport=transport,
            settings=settings,
            requests=total["requests"],
            ops=total["ops"],
            errors=total["errors"],
            exceptions=total["exceptions"],
            requests_devfuse=devfuse["requests"],
            ops_devfuse=devfuse["ops"],
            requests_ring=None if ring is None else ring["requests"],
            ops_ring=None if ring is None else ring["ops"],
            detail=detail or {},
        )

    def data_requests(self, names: tuple[str, ...], ring: bool = False) -> int | None:
        """Requests of the named opcodes (all paths, or the ring's); None if not counted."""
        ops = self.ops_ring if ring else self.ops
        return None if ops is None else sum(int(ops.get(name, 0)) for name in names)


class Transport(abc.ABC):
    """Serves an export on a mountpoint until it is unmounted or asked to stop.

    Life cycle (all in the serving process): `serve()` mounts, calls `on_ready()` once
    the mount answers, and returns only after the mount is gone and every thread it
    started has been joined. `stop()` may be called from a signal handler or another
    thread; it makes `serve()` return. `statistics()` may be called at any time and
    after `serve()` returned.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    options: ClassVar[dict[str, Option]] = {}
    # False for a transport that puts something other than a FUSE mount on the
    # mountpoint (`direct`: the backing itself): no FUSE requests to count or check.
    serves_fuse: ClassVar[bool] = True

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings

    @abc.abstractmethod
    def serve(self, export: Export, mountpoint: str, on_ready: Callable[[], None]) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    @abc.abstractmethod
    def statistics(self) -> TransportStatistics:
        """Effective settings and counters, at any time (also after `serve()` returned)."""

    def connection_end(self) -> str | None:
        """How the kernel ended the connection under the server ("aborted" or
        "unmounted"), once it has; None when it has not or this transport cannot tell."""
        return None

    def server_pids(self) -> list[int]:
        """The processes that do the serving, whose CPU time and context switches count."""
        return [os.getpid()]

    def check_available(self) -> None:
        """Raise TransportUnavailable when this machine cannot run the transport."""
        return None


# name -> "module:Class"; modules are imported only when their transport is used, so a
# missing optional dependency of one transport never breaks the others.
_REGISTRY: dict[str, str] = {
    "pyfuse3": "transports.pyfuse3_transport:Pyfuse3Transport",
    "devfuse": "transports.devfuse:DevFuseTransport",
    "uring": "transports.uring:UringTransport",
    "qsd": "transports.peers.qsd:QsdTransport",
    "external": "transports.peers.external:ExternalTransport",
    "libfuse": "transports.peers.libfuse:LibfuseTransport",
    "direct": "transports.direct:DirectTransport",
}


def register(name: str, target: str) -> None:
    _REGISTRY[name] = target


def known_transports() -> list[str]:
    return sorted(_REGISTRY)


def transport_class(name: str) -> type[Transport]:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(
            f"unknown transport {name!r}{hint}: known transports are "
            + ", ".join(known_transports())
        )
    module_name, _, cls_name = _REGISTRY[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise TransportUnavailable(
            f"transport {name!r} cannot be loaded ({e}); run `make setup` to install "
            "and build what it needs"
        ) from e
    return getattr(module, cls_name)


@dataclass(frozen=True)
class TransportSpec:
    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    label: str = ""  # from `-t LABEL=SPEC`: what tables call it (else the spec itself)

    def __str__(self) -> str:
        return self.text or self.name

    @property
    def display(self) -> str:
        return self.label or str(self)

    def create(self) -> Transport:
        return transport_class(self.name)(dict(self.settings))


LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}$")


def split_label(text: str) -> tuple[str, str]:
    """`LABEL=SPEC` -> (LABEL, SPEC); a plain spec -> ("", spec).

    A spec's own '=' always comes after its ':' (`uring:depth=16`), so an '=' before
    any ':' marks a label.
    """
    head, eq, rest = text.strip().partition("=")
    if not eq or ":" in head:
        return "", text.strip()
    label = head.strip()
    if not LABEL_RE.match(label):
        raise SpecError(
            f"bad label {label!r} in {text.strip()!r}: a label is 1-32 letters, digits, "
            "'.', '_', '+' or '-' (no spaces), starting with a letter or digit, e.g. "
            "-t libfuse-uring=libfuse:mode=uring"
        )
    if label in _REGISTRY:
        raise SpecError(
            f"label {label!r} is the name of a transport: tables would confuse the two; "
            "choose another label"
        )
    if not rest.strip():
        raise SpecError(f"label {label!r} names no transport: use -t {label}=SPEC")
    return label, rest.strip()


def check_unique(specs: list[TransportSpec]) -> None:
    """Every transport of a campaign must show under its own name in tables.

    The same spec twice under two labels is allowed (an A/A comparison).
    """
    seen: dict[str, TransportSpec] = {}
    for spec in specs:
        other = seen.get(spec.display)
        if other is not None:
            what = "label" if spec.label else "transport"
            raise SpecError(
                f"{what} {spec.display!r} is given twice ({other.text!r} and {spec.text!r}): "
                "a transport is listed twice; give each its own label"
            )
        seen[spec.display] = spec


def parse_spec(text: str) -> TransportSpec:
    """Parse `[LABEL=]NAME[:key=value,...]`, filling defaults; errors list known names/keys."""
    label, text = split_label(text)
    spec = _parse_bare(text)
    return TransportSpec(spec.name, spec.settings, spec.text, label)


def _parse_bare(text: str) -> TransportSpec:
    name, _, rest = text.strip().partition(":")
    cls = transport_class(name)
    settings = {key: opt.default for key, opt in cls.options.items()}
    raw_key = getattr(cls, "raw_option", None)
    if raw_key is not None:
        # One free-form option takes the whole remainder (a command may hold ',' and '=').
        settings[raw_key] = cls.options[raw_key].convert(name, raw_key, rest)
    elif rest:
        for item in rest.split(","):
            key, eq, raw = item.partition("=")
            key = key.strip()
            if not eq:
                raise SpecError(f"{name}: {item!r} is not key=value")
            if key not in cls.options:
                known = ", ".join(sorted(cls.options)) or "none"
                close = difflib.get_close_matches(key, cls.options, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise SpecError(f"{name}: unknown option {key!r}{hint}; known options: {known}")
            settings[key] = cls.options[key].convert(name, key, raw.strip())
    return TransportSpec(name=name, settings=settings, text=text.strip())
