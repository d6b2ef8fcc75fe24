"""Peer transport `qsd`: qemu-storage-daemon's own FUSE export of the same backing."""

from __future__ import annotations

import shutil
import subprocess

from transports.base import TransportUnavailable
from transports.export.image import Export
from transports.peers.peer import PeerTransport


class QsdTransport(PeerTransport):
    name = "qsd"
    description = "qemu-storage-daemon's FUSE export (the peer this project compares against)"
    program = "qemu-storage-daemon"
    options = {}

    def check_available(self) -> None:
        if shutil.which("qemu-storage-daemon") is None:
            raise TransportUnavailable(
                "qemu-storage-daemon is missing: install it with "
                "`apt-get install qemu-system-common`"
            )

    def command(self, image: str, mountpoint: str, export: Export) -> list[str]:
        ro = "on" if export.options.read_only else "off"
        # Like our own transports: the host page cache of the backing is used, and the
        # client's O_DIRECT still reaches the daemon.
        return [
            "qemu-storage-daemon",
            "--blockdev",
            f"driver=file,node-name=file0,filename={image},read-only={ro}",
            "--blockdev",
            f"driver=raw,node-name=disk0,file=file0,read-only={ro}",
            "--export",
            f"type=fuse,id=exp0,node-name=disk0,mountpoint={mountpoint},"
            f"writable={'off' if export.options.read_only else 'on'},"
            f"growable={'on' if export.options.growable else 'off'}",
        ]

    def version(self) -> str:
        out = subprocess.run(
            ["qemu-storage-daemon", "--version"], capture_output=True, text=True
        ).stdout
        return out.splitlines()[0].strip() if out else "unknown"
