"""Peer transport `qsd`: qemu-storage-daemon's own FUSE export of the same backing.

`qsd:build=` picks the daemon (transports/peers/qsd_build.py: Debian's installed one by
default, a build `ringside peers fetch qsd` made, or a path); `qsd:io_uring=on` asks its
FUSE export for FUSE-over-io_uring (`io-uring=on`, the option of Brian Song's series),
refused before mounting by a build whose export has no such option. The result records
the build (version, and a cached build's source and patches) and must prove the path the
requests took (transports/proofs.py: qsd_path).
"""

from __future__ import annotations

import signal
from typing import Any

from transports import sysinfo
from transports.base import Option, TransportUnavailable, on_off
from transports.export.image import Export
from transports.peers import qsd_build
from transports.peers.peer import PeerTransport
from transports.statistics import QsdStatistics


class QsdTransport(PeerTransport):
    name = "qsd"
    description = "qemu-storage-daemon's FUSE export (the peer this project compares against)"
    program = "qemu-storage-daemon"
    statistics_class = QsdStatistics
    options = {
        "build": Option(str, "", "the daemon: Debian's installed one (default), "
                        f"{qsd_build.CACHED}, {qsd_build.CACHED_IO_URING}, a cached build's "
                        "name (`ringside peers list`) or a path"),
        "io_uring": Option(on_off, False, "FUSE-over-io_uring: the export's io-uring=on "
                           "(a build with the FUSE-over-io_uring series)"),
    }

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        self._build: qsd_build.QsdBuild | None = None
        self._argv: list[str] = []
        self._output = ""

    def build(self) -> qsd_build.QsdBuild:
        if self._build is None:
            self._build = qsd_build.resolve(self.settings.get("build") or None)
        return self._build

    def check_available(self) -> None:
        build = self.build()
        found = build.probe()
        if not found.fuse:
            raise TransportUnavailable(f"qemu-storage-daemon {build.describe()} has no FUSE "
                                       f"export ({found.detail})")
        if self.settings.get("io_uring"):
            if not found.io_uring_option:
                raise TransportUnavailable(
                    f"qsd:io_uring=on needs a FUSE export with the io-uring option, and "
                    f"{found.version} at {build.describe()} has none (it says: "
                    f"{found.detail.split(': ')[-1]}); build one with the FUSE-over-io_uring "
                    "series: `ringside peers fetch qsd --patches FILE...` (README), then "
                    f"qsd:build=NAME or {qsd_build.CACHED_IO_URING}")
            if not found.io_uring_works:
                raise TransportUnavailable(
                    f"{build.describe()} has the io-uring option but refuses it: "
                    f"{found.detail.split('io-uring=on: ')[-1]}")
            state = sysinfo.enable_uring()
            if state != "Y":
                raise TransportUnavailable(
                    f"enable_uring is {state or 'absent'}: run `echo Y > "
                    f"{sysinfo.ENABLE_URING}` as root; the daemon would halt its export "
                    "at FUSE_INIT")

    def command(self, image: str, mountpoint: str, export: Export) -> list[str]:
        self.check_available()
        ro = "on" if export.options.read_only else "off"
        fuse = (f"type=fuse,id=exp0,node-name=disk0,mountpoint={mountpoint},"
                f"writable={'off' if export.options.read_only else 'on'},"
                f"growable={'on' if export.options.growable else 'off'}")
        if self.settings.get("io_uring"):
            fuse += ",io-uring=on"
        # Like our own transports: the host page cache of the backing is used, and the
        # client's O_DIRECT still reaches the daemon.
        self._argv = [
            self.build().binary,
            "--blockdev", f"driver=file,node-name=file0,filename={image},read-only={ro}",
            "--blockdev", f"driver=raw,node-name=disk0,file=file0,read-only={ro}",
            "--export", fuse,
        ]
        return self._argv

    def version(self) -> str:
        build = self.build()
        return f"{build.probe().version} ({build.describe()})"

    def death_signal(self) -> int:
        # With io_uring=on, the series' export asked to stop while a client has requests
        # in flight waits forever for its ring entries, whose commands hold /dev/fuse
        # open, so the kernel never aborts the connection and the client hangs too
        # (measured: fio stuck 25 s and counting). Killed, the daemon's ring goes, the
        # connection is aborted and the client's I/O fails at once.
        return signal.SIGKILL if self.settings.get("io_uring") else signal.SIGTERM

    def cleanup(self) -> None:
        self._output = self.read_output() or self._output

    def statistics(self) -> QsdStatistics:
        stats = super().statistics()
        assert isinstance(stats, QsdStatistics)
        stats.argv = self._argv
        stats.io_uring = bool(self.settings.get("io_uring"))
        stats.serving_tid = self._proc.pid if self._proc is not None else None
        if self._build is not None:
            stats.build = self._build.record()
        stats.output_tail = "\n".join(self._output.splitlines()[-20:])
        return stats
