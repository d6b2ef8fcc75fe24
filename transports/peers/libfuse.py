"""Peer transport `libfuse`: libfuse's own C server, example/passthrough_hp, as a peer.

`libfuse:mode=legacy` serves through /dev/fuse, `libfuse:mode=uring` through
FUSE-over-io_uring (`-o io_uring`), from a libfuse >= 3.18 meson build directory
(Debian 12's libfuse 3.14 has no io_uring): `build=DIR`, else $RINGSIDE_LIBFUSE_BUILD,
else the newest build `ringside peers fetch libfuse` made from Debian's fuse3 source
in the checkout's cache (transports.peers.builds). The result records which build served
and how it was chosen. Ringside never ships libfuse.

passthrough_hp mirrors a directory, and Ringside's export is one file mounted on a
file. So the program mounts a private directory that mirrors the image's directory,
and the image file in it is bind-mounted onto the mountpoint. The program unmounts its
directory when it stops (on our SIGTERM, or its own when we die); the bind mount is
ours to undo (a `ringside serve` killed with SIGKILL leaves it stale, and the next serve
or run on that file removes it, as after any killed server); a private tmpfs is detached
as soon as the program holds it open, so it can never be left behind. A memory backing
is served from a copy in that private tmpfs (same shmem pages as a memfd; writes stay in
the copy, which dies with the run); a file backing from its own directory, so writes
reach the image.

Settings chosen for measuring a server, not the program's defaults where they differ:
--nopassthrough, since kernel passthrough (the default) would hand reads and writes to
the backing file inside the kernel and the server would serve none of them; and
--foreground, so the server stays our child. Everything else is passthrough_hp's own
default (splice for legacy replies, caching, threads) unless set here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import json
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any

from transports import sysinfo
from transports.base import Option, TransportUnavailable, on_off
from transports.export.image import Export
from transports.fuse import mounting
from transports.peers import builds
from transports.peers.peer import PeerTransport
from transports.statistics import LibfuseStatistics

ENV_BUILD = "RINGSIDE_LIBFUSE_BUILD"
MIN_VERSION = (3, 18)
SERVER = "example/passthrough_hp"
IMAGE_NAME = "disk.img"
FETCH_COMMAND = "ringside peers fetch libfuse"
BUILD_HINT = (
    f"`{FETCH_COMMAND}` builds libfuse from Debian's fuse3 source into the checkout's "
    "cache, where the transport finds it; or give libfuse:build=DIR or set "
    f"{ENV_BUILD}=DIR for a libfuse >= 3.18 meson build of your own"
)

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_MS_BIND = 4096


@dataclass(frozen=True)
class LibfuseBuild:
    directory: str
    version: str
    io_uring: bool  # built with FUSE-over-io_uring (meson found liburing with SQE128)
    chosen_by: str = "given directory"  # build=, $RINGSIDE_LIBFUSE_BUILD, or the cache
    stamp: dict[str, Any] | None = None  # a cached build's record of what it was built from

    @property
    def server(self) -> str:
        return os.path.join(self.directory, SERVER)


def _version_tuple(version: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def find_build(directory: str | None) -> LibfuseBuild:
    """The libfuse build in `directory`; TransportUnavailable naming the fix otherwise."""
    if not directory:
        raise TransportUnavailable(f"no libfuse build is configured: {BUILD_HINT}")
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise TransportUnavailable(f"libfuse build directory {directory} does not exist: "
                                   + BUILD_HINT)
    info = os.path.join(directory, "meson-info", "intro-projectinfo.json")
    try:
        with open(info) as f:
            version = str(json.load(f)["version"])
    except (OSError, ValueError, KeyError):
        raise TransportUnavailable(
            f"{directory} is not a meson build directory of libfuse (no {info}): " + BUILD_HINT
        ) from None
    if _version_tuple(version) < MIN_VERSION:
        raise TransportUnavailable(
            f"libfuse {version} in {directory} is too old: FUSE-over-io_uring came in "
            f"{'.'.join(map(str, MIN_VERSION))}; " + BUILD_HINT
        )
    server = os.path.join(directory, SERVER)
    if not os.access(server, os.X_OK):
        raise TransportUnavailable(
            f"{server} is missing: build the examples (`meson configure {directory} "
            f"-Dexamples=true && ninja -C {directory}`)"
        )
    config = sysinfo.read_text(os.path.join(directory, "fuse_config.h")) or ""
    return LibfuseBuild(directory, version, re.search(r"^#define HAVE_URING\b", config, re.M)
                        is not None)


def configured_build() -> str | None:
    return os.environ.get(ENV_BUILD) or None


def resolve_build(setting: str | None) -> LibfuseBuild:
    """The build to serve from: `setting` (build=), else $RINGSIDE_LIBFUSE_BUILD, else the
    newest complete build in the cache; TransportUnavailable naming the fix otherwise."""
    if setting:
        return dataclasses.replace(find_build(setting), chosen_by="build= setting")
    if directory := configured_build():
        return dataclasses.replace(find_build(directory), chosen_by=f"${ENV_BUILD}")
    cached = builds.newest("libfuse")
    if cached is None:
        raise TransportUnavailable(
            f"no libfuse build: none in {builds.CACHE_DIR}, no build= setting, {ENV_BUILD} "
            f"not set; {BUILD_HINT}"
        )
    found = find_build(str(cached.build_dir))
    return dataclasses.replace(
        found, chosen_by=f"newest complete build in {builds.CACHE_DIR} (`ringside peers list`)",
        stamp=cached.stamp,
    )


def _nonnegative(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be 0 (the program's default) or more")
    return value


class LibfuseTransport(PeerTransport):
    name = "libfuse"
    description = "libfuse's C server passthrough_hp (legacy /dev/fuse or io_uring), as a peer"
    program = "passthrough_hp"
    statistics_class = LibfuseStatistics
    options = {
        "mode": Option(str, "legacy", "legacy (/dev/fuse) or uring (-o io_uring)",
                       choices=("legacy", "uring")),
        "build": Option(str, "", f"libfuse meson build directory (default: ${ENV_BUILD}, "
                        "else the newest `ringside peers fetch libfuse` build)"),
        "threads": Option(_nonnegative, 0, "--num-threads (0: passthrough_hp's default)"),
        "depth": Option(_nonnegative, 0, "-o io_uring_q_depth (0: libfuse's default, 8)"),
        "splice": Option(on_off, True, "splice replies from the image (passthrough_hp's "
                         "default); off: --nosplice"),
    }

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        self._build: LibfuseBuild | None = None
        self._workdir: str | None = None
        self._tmpfs: str | None = None  # our tmpfs holding a memory backing's copy
        self._source: str | None = None
        self._target: str | None = None
        self._output = ""
        self._argv: list[str] = []

    # -- availability -----------------------------------------------------------------
    def build(self) -> LibfuseBuild:
        if self._build is None:
            self._build = resolve_build(self.settings.get("build") or None)
        return self._build

    def own_placement(self) -> str | None:
        if self.settings.get("mode") == "uring":
            return "each ring thread bound to its queue's CPU (libfuse's design)"
        return None

    def check_available(self) -> None:
        build = self.build()
        if self.settings.get("mode") == "uring":
            if not build.io_uring:
                raise TransportUnavailable(
                    f"libfuse {build.version} in {build.directory} was built without io_uring "
                    "(meson found no liburing with SQE128 support, or no libnuma): `apt-get "
                    "install liburing-dev libnuma-dev`, then `meson setup --reconfigure "
                    f"{build.directory} -Denable-io-uring=true && ninja -C {build.directory}`"
                )
            state = sysinfo.enable_uring()
            if state != "Y":
                raise TransportUnavailable(
                    f"enable_uring is {state or 'absent'}: run `echo Y > "
                    f"{sysinfo.ENABLE_URING}` as root; passthrough_hp would fall back to "
                    "/dev/fuse without saying so"
                )
        if os.geteuid() != 0:
            raise TransportUnavailable(
                "the libfuse peer needs root: it bind-mounts passthrough_hp's file onto the "
                "mountpoint (passthrough_hp serves a directory, the export is a file)"
            )

    def version(self) -> str:
        build = self.build()
        return f"libfuse {build.version} passthrough_hp ({build.directory})"

    # -- serving ------------------------------------------------------------------------
    def prepare(self, export: Export) -> str:
        self.check_available()
        self._workdir = tempfile.mkdtemp(prefix="ringside-libfuse-")
        self._target = os.path.join(self._workdir, "mnt")
        os.mkdir(self._target)
        if export.backing.kind == "file":
            assert export.backing.path is not None
            self._source = os.path.dirname(export.backing.path)
            return export.backing.path
        self._source = os.path.join(self._workdir, "src")
        os.mkdir(self._source)
        self._mount(b"tmpfs", self._source, b"tmpfs", 0, b"mode=0700")
        self._tmpfs = self._source
        image = os.path.join(self._source, IMAGE_NAME)
        _copy(export.fd, image, export.size)
        return image

    def mount_target(self, mountpoint: str) -> str:
        assert self._target is not None
        return self._target

    def command(self, image: str, mountpoint: str, export: Export) -> list[str]:
        s = self.settings
        argv = [self.build().server, "--foreground", "--nopassthrough"]
        if not s.get("splice", True):
            argv.append("--nosplice")
        if s.get("threads"):
            argv += ["--num-threads", str(s["threads"])]
        opts = ["fsname=ringside-libfuse"]
        if s.get("mode") == "uring":
            opts.append("io_uring")
            if s.get("depth"):
                opts.append(f"io_uring_q_depth={s['depth']}")
        if export.options.read_only:
            opts.append("ro")
        argv += ["-o", ",".join(opts), str(self._source), mountpoint]
        self._argv = argv
        return argv

    def environment(self) -> dict[str, str]:
        # libfuse (master) prints what FUSE_INIT settled, "FUSE_INIT: io_uring=on" among it.
        return dict(os.environ, FUSE_INIT_STATUS="1")

    def attach(self, target: str, mountpoint: str) -> None:
        name = os.path.basename(self._image or IMAGE_NAME)
        served = os.path.join(target, name)
        if not os.path.isfile(served):
            raise TransportUnavailable(f"passthrough_hp mounted {target} but shows no {name}")
        self._mount(os.fsencode(served), mountpoint, None, _MS_BIND, None)
        # The program unmounts its directory itself when it stops (also when we are
        # killed: it gets SIGTERM then). The tmpfs lives on while it holds it open.
        if self._tmpfs is not None:
            mounting.unmount(self._tmpfs, lazy=True)
            self._tmpfs = None

    def cleanup(self) -> None:
        self._output = self.read_output() or self._output
        for path in (self._target, self._tmpfs):
            if path is not None:
                mounting.unmount(path, lazy=True)
        self._tmpfs = None
        # rmdir, never rmtree: a directory still mounted must not be emptied through FUSE.
        for path in (self._target, self._source, self._workdir):
            if path is not None and path.startswith(self._workdir or "\0"):
                try:
                    os.rmdir(path)
                except OSError:
                    pass

    def _mount(self, source: bytes, target: str, fstype: bytes | None, flags: int,
               data: bytes | None) -> None:
        if _libc.mount(source, os.fsencode(target), fstype, flags, data) != 0:
            err = ctypes.get_errno()
            raise mounting.MountError(f"mount {source.decode()} on {target}: {os.strerror(err)}")

    def statistics(self) -> LibfuseStatistics:
        stats = super().statistics()
        assert isinstance(stats, LibfuseStatistics)
        lines = self._output.splitlines()
        init = [line.split(":", 1)[1].strip() for line in lines if line.startswith("FUSE_INIT:")]
        stats.argv = self._argv
        stats.build = self._build_record()
        # The runner requires the rings' completions to cover the fio I/Os (uring) or no
        # ring at all (legacy): FUSE_INIT status alone proves no traffic.
        stats.ring_expected = self.settings.get("mode") == "uring"
        stats.init_status = init
        stats.io_uring_at_init = next(
            (x.split("=", 1)[1] for x in init if x.startswith("io_uring=")), None
        )
        stats.served_from = (
            "a copy of the memory backing in a private tmpfs"
            if self._source and self._workdir and self._source.startswith(self._workdir)
            else self._image
        )
        stats.output_tail = "\n".join(lines[-20:])
        return stats


    def _build_record(self) -> dict[str, Any] | None:
        """Which libfuse served, and how it was chosen (a cached build: its source too)."""
        build = self._build
        if build is None:
            return None
        record: dict[str, Any] = {"directory": build.directory, "version": build.version,
                                  "io_uring": build.io_uring, "chosen_by": build.chosen_by}
        if build.stamp is not None:
            record["source"] = build.stamp.get("source")
        return record


def _copy(fd: int, path: str, size: int) -> None:
    """Copy the image into `path` in the kernel (sendfile: any two regular files)."""
    with open(path, "wb") as out:
        offset = 0
        while offset < size:
            n = os.sendfile(out.fileno(), fd, offset, min(1 << 30, size - offset))
            if n == 0:
                break
            offset += n
        if offset < size:
            out.truncate(size)
