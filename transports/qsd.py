"""Peer transport `qsd`: qemu-storage-daemon's own FUSE export of the same backing.

The daemon does the serving; this transport starts it, watches its mount, and stops it.
qemu-storage-daemon 7.2 does not exit when its mount is removed from outside (it stays,
spinning a CPU), so a vanished mount is answered with SIGTERM, and the daemon is always
reaped before serve() returns. A memory backing becomes a sparse image on tmpfs.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from transports import mounting
from transports.base import Transport, TransportUnavailable
from transports.export import Export

_POLL_S = 0.1
_PR_SET_PDEATHSIG = 1
_START_TIMEOUT_S = 20.0


class QsdTransport(Transport):
    name = "qsd"
    description = "qemu-storage-daemon's FUSE export (the peer this project compares against)"
    options = {}
    # Requests never pass through Ringside: no counters of ours, by construction.
    carries_requests = False

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._mountpoint: str | None = None
        self._image: str | None = None
        self._version = ""

    def check_available(self) -> None:
        if shutil.which("qemu-storage-daemon") is None:
            raise TransportUnavailable(
                "qemu-storage-daemon is missing: install it with "
                "`apt-get install qemu-system-common`"
            )

    def _image_path(self, export: Export) -> tuple[str, bool]:
        """The image file the daemon opens, and whether it is ours to delete."""
        if export.backing.kind == "file":
            return export.backing.path, False
        tmpdir = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
        fd, path = tempfile.mkstemp(prefix="ringside-qsd-", suffix=".img", dir=tmpdir)
        os.ftruncate(fd, export.size)
        os.close(fd)
        return path, True

    def command(self, image: str, mountpoint: str, export: Export) -> list[str]:
        opts = export.options
        # Like our own transports: the host page cache of the backing is used, and the
        # client's O_DIRECT still reaches the daemon.
        return [
            "qemu-storage-daemon",
            "--blockdev",
            f"driver=file,node-name=file0,filename={image},"
            f"read-only={'on' if opts.read_only else 'off'}",
            "--blockdev",
            f"driver=raw,node-name=disk0,file=file0,read-only={'on' if opts.read_only else 'off'}",
            "--export",
            f"type=fuse,id=exp0,node-name=disk0,mountpoint={mountpoint},"
            f"writable={'off' if opts.read_only else 'on'},"
            f"growable={'on' if opts.growable else 'off'}",
        ]

    def serve(self, export: Export, mountpoint: str, on_ready: Callable[[], None]) -> None:
        self._mountpoint = mountpoint
        self._version = _qsd_version()
        image, ours = self._image_path(export)
        self._image = image
        try:
            self._proc = subprocess.Popen(
                self.command(image, mountpoint, export),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                preexec_fn=_die_with_parent,
            )
            self._wait_for_mount()
            if ours:
                # The daemon holds the image open: unlinking now means a killed run
                # cannot leave a tmpfs image behind.
                os.unlink(image)
                ours = False
            on_ready()
            while not self._stop.is_set() and self._proc.poll() is None:
                if mounting.find_mount(mountpoint) is None:
                    break  # unmounted from outside: the daemon would not notice
                self._stop.wait(_POLL_S)
        finally:
            self._terminate()
            mounting.unmount_if_mounted(mountpoint)
            if ours:
                os.unlink(image)

    def _wait_for_mount(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                out = self._proc.stdout.read() if self._proc.stdout else ""
                raise TransportUnavailable(
                    f"qemu-storage-daemon exited with {self._proc.returncode}: {out.strip()}"
                )
            if mounting.find_mount(self._mountpoint) is not None:
                os.stat(self._mountpoint)
                return
            time.sleep(_POLL_S / 4)
        raise TransportUnavailable(
            f"qemu-storage-daemon did not mount {self._mountpoint} within {_START_TIMEOUT_S:.0f} s"
        )

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        self._stop.set()

    def server_pids(self) -> list[int]:
        if self._proc is not None and self._proc.poll() is None:
            return [self._proc.pid]
        return []

    def statistics(self) -> dict[str, Any]:
        return {
            "transport": self.name,
            "settings": dict(self.settings),
            "requests": None,  # counted by nobody: the daemon keeps no request counters
            "version": self._version,
            "image": self._image,
            "exit_code": self._proc.returncode if self._proc else None,
        }


def _die_with_parent() -> None:
    # A SIGKILLed `ringside serve` must not leave the daemon (and its mount) behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _qsd_version() -> str:
    out = subprocess.run(
        ["qemu-storage-daemon", "--version"], capture_output=True, text=True
    ).stdout
    return out.splitlines()[0].strip() if out else "unknown"
