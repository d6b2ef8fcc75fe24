"""The one interface every transport has, and the registry.

Each transport declares its options once (transports/options.py); a spec naming it
(`uring:depth=16,buffers=pinned`) is read by transports/spec.py. A transport moves bytes
between the kernel and the export (through the codec, or through libfuse for pyfuse3);
it never decides what a request means.
"""

from __future__ import annotations

import abc
import ctypes
import difflib
import importlib
import os
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from transports.export.image import Export
from transports.options import Option, SpecError, flag, on_off, positive_int
from transports.statistics import TransportStatistics as TransportStatistics  # re-exported

_PR_SET_NAME = 15


def name_os_thread() -> None:
    """Give the calling thread its Python name in /proc (comm), for per-thread metrics."""
    name = threading.current_thread().name.encode()[:15]
    ctypes.CDLL(None).prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


class TransportUnavailable(RuntimeError):
    """The transport cannot run on this machine; the message names the cause and the fix."""




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
    # The class its statistics() returns: the runner reads the server's JSON back into
    # it and runs the proofs it declares (transports/statistics.py, proofs.py).
    statistics_class: ClassVar[type[TransportStatistics]] = TransportStatistics
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
    "pyfuse3": "transports.builtin.pyfuse3:Pyfuse3Transport",
    "devfuse": "transports.builtin.devfuse:DevFuseTransport",
    "uring": "transports.builtin.uring.transport:UringTransport",
    "qsd": "transports.peers.qsd:QsdTransport",
    "external": "transports.peers.external:ExternalTransport",
    "libfuse": "transports.peers.libfuse:LibfuseTransport",
    "direct": "transports.builtin.direct:DirectTransport",
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
