"""The one interface every transport has, and the registry.

Each transport declares its options once (transports/options.py); a spec naming it
(`uring:depth=16,buffers=pinned`) is read by transports/spec.py. A transport moves bytes
between the kernel and the export (through the codec, or through libfuse for pyfuse3);
it never decides what a request means.
"""

from __future__ import annotations

import abc
import ctypes
import dataclasses
import difflib
import importlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from transports.export.image import Export
from transports.options import Option, SpecError, flag, on_off, positive_int

_PR_SET_NAME = 15


def name_os_thread() -> None:
    """Give the calling thread its Python name in /proc (comm), for per-thread metrics."""
    name = threading.current_thread().name.encode()[:15]
    ctypes.CDLL(None).prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


class TransportUnavailable(RuntimeError):
    """The transport cannot run on this machine; the message names the cause and the fix."""


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
    # True when the transport gives its own threads the spec's placement (sched=, cpus=)
    # as it starts them; otherwise the serving process places every thread of the
    # server's process tree from outside (transports/placement.py).
    places_own_threads: ClassVar[bool] = False

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

    def own_placement(self) -> str | None:
        """Where threads run by this server's own design (not the spec's placement), for
        tables to name; None when it has no such design."""
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
}


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


# The spec lives in transports/spec.py; these names are kept for the callers.
from transports.spec import Spec, check_unique, split_label  # noqa: E402

TransportSpec = Spec
parse_spec = Spec.parse
__all__ = [
    "Option", "SpecError", "TransportSpec", "Spec", "check_unique", "flag", "on_off",
    "parse_spec", "positive_int", "split_label",
]
