"""Peer transports: another program serves the image on the mountpoint; we watch it.

The program is started with the image's path, must mount it on the mountpoint within
the start timeout, and is stopped with SIGTERM (SIGKILL after 10 s) when we are stopped
or when its mount vanishes: qemu-storage-daemon 7.2, for one, does not exit when its
mount is removed from outside (it stays, spinning a CPU). It is always reaped before
serve() returns, and dies with its parent. Requests never pass through Ringside: peers
have no request counters.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from transports.base import Transport, TransportUnavailable
from transports.export.image import Export
from transports.fuse import mounting
from transports.statistics import PeerStatistics

_POLL_S = 0.1
_PR_SET_PDEATHSIG = 1
_START_TIMEOUT_S = 20.0
# How long a peer gets to exit on SIGTERM before SIGKILL; the runner waits longer for the
# serving process, so that it can still unmount after a peer that used all of it.
PEER_STOP_GRACE_S = 10.0


class PeerTransport(Transport):
    """Base of transports whose serving is done by a program of someone else's."""

    program = "peer"  # for messages
    statistics_class: ClassVar[type[PeerStatistics]] = PeerStatistics

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._mountpoint: str | None = None
        self._image: str | None = None
        self._version = ""

    def _image_path(self, export: Export) -> str:
        """The image file the daemon opens: the backing file, or the export's own memfd.

        A memory backing is handed over as /proc/PID/fd/N: the daemon opens the very
        memfd our transports would serve (filled or sparse alike), and nothing is left
        behind on any filesystem when either process dies.
        """
        if export.backing.kind == "file":
            assert export.backing.path is not None
            return export.backing.path
        return f"/proc/{os.getpid()}/fd/{export.fd}"

    def command(self, image: str, mountpoint: str, export: Export) -> list[str]:
        raise NotImplementedError

    def version(self) -> str:
        return "unknown"

    def prepare(self, export: Export) -> str:
        """Make the image available to the program; return the path it opens."""
        return self._image_path(export)

    def mount_target(self, mountpoint: str) -> str:
        """Where the program mounts: the mountpoint, unless it can only mount a directory."""
        return mountpoint

    def attach(self, target: str, mountpoint: str) -> None:
        """Put what the program mounted on `target` onto the mountpoint (when they differ)."""

    def cleanup(self) -> None:
        """Undo prepare() and attach(); called after the program has been reaped."""

    def read_output(self) -> str:
        """What the program printed (stdout and stderr), once it has exited; else ""."""
        proc = self._proc
        if proc is not None and proc.poll() is not None and proc.stdout is not None:
            try:
                return proc.stdout.read()
            except (OSError, ValueError):
                pass
        return ""

    def serve(self, export: Export, mountpoint: str, on_ready: Callable[[], None]) -> None:
        self._mountpoint = mountpoint
        self._version = self.version()
        try:
            image = self.prepare(export)
            self._image = image
            target = self.mount_target(mountpoint)
            self._proc = subprocess.Popen(
                self.command(image, target, export),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                preexec_fn=functools.partial(_die_with_parent, self.death_signal()),
                start_new_session=True,  # so stopping it reaches anything it started
                env=self.environment(),
            )
            self._wait_for_mount(target)
            self.attach(target, mountpoint)
            on_ready()
            while not self._stop.is_set() and self._proc.poll() is None:
                if mounting.find_mount(mountpoint) is None:
                    break  # unmounted from outside: the daemon would not notice
                self._stop.wait(_POLL_S)
        finally:
            self._terminate()
            mounting.unmount_if_mounted(mountpoint)
            self.cleanup()

    def environment(self) -> dict[str, str] | None:
        """The program's environment (None: ours)."""
        return None

    def death_signal(self) -> int:
        """What the program gets when we die (SIGKILL included): SIGTERM, so it unmounts."""
        return signal.SIGTERM

    def _wait_for_mount(self, target: str) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                out = self._proc.stdout.read() if self._proc.stdout else ""
                raise TransportUnavailable(
                    f"{self.program} exited with {self._proc.returncode} before mounting "
                    f"{target}: {out.strip() or '(no output)'}"
                )
            if mounting.find_mount(target) is not None:
                os.stat(target)
                return
            time.sleep(_POLL_S / 4)
        raise TransportUnavailable(
            f"{self.program} did not mount {target} within {_START_TIMEOUT_S:.0f} s"
        )

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=PEER_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        self._stop.set()

    def server_pids(self) -> list[int]:
        if self._proc is not None and self._proc.poll() is None:
            return [self._proc.pid]
        return []

    def statistics(self) -> PeerStatistics:
        return self.statistics_class(
            transport=self.name,
            requested=dict(self.settings),
            effective=dict(self.settings),  # what it ran with is the peer's own business
            requests=None,  # counted by nobody: the daemon keeps no request counters
            version=self._version,
            image=self._image,
            exit_code=self._proc.returncode if self._proc else None,
        )


def _die_with_parent(sig: int = signal.SIGTERM) -> None:
    # A SIGKILLed `ringside serve` must not leave the daemon (and its mount) behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
