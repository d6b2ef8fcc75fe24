"""Transport `direct`: no FUSE at all. The backing itself is put on the mountpoint.

The ceiling row of a comparison: fio runs the very same job file on the same path, but
reads the backing without any server in between, so a FUSE transport's throughput can be
read as a share of what the backing gives. The mountpoint gets a bind mount of:

- a file backing: the image file itself (writes reach the image, as through any server);
- a memory backing: a copy of the export's memfd in a private tmpfs. The kernel refuses
  to bind-mount the memfd (/proc/self/fd/N): its inode lives on an internal mount that is
  in no mount namespace (EINVAL on Linux 6.18). The copy holds the same bytes in the
  same kind of shmem pages (holes stay holes; the tmpfs gets the huge-page policy of
  memfds, /sys/kernel/mm/transparent_hugepage/shmem_enabled); writes stay in the copy.
  The tmpfs is detached once its file is bound, so the bind mount is its last reference.

Undoing the mount: serve() unmounts before it returns (stop() may come from a signal
handler); a mount removed from outside ends serve() too. A guard process, started once the
mount is made, waits for the serving process to end however it ends (SIGKILL included)
and then removes that same mount (by its mount id), so nothing of a killed server stays.

Root only: bind mounts need CAP_SYS_ADMIN. O_DIRECT is the runner's affair: it probes
the mounted file and runs fio without it where the backing refuses it, and says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import select
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from transports import sysinfo
from transports.base import Transport, TransportUnavailable
from transports.export.image import Export
from transports.fuse import mounting
from transports.statistics import DirectStatistics

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_MS_RDONLY = 1
_MS_REMOUNT = 32
_MS_BIND = 4096
_SHMEM_ENABLED = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"
_IMAGE_NAME = "disk.img"
_PAGE = os.sysconf("SC_PAGE_SIZE")
_GUARD_EXIT_S = 10.0
_LOOK_S = 0.5  # between two looks for our mount (as the runner's own watch)
_GUARD_ARMED = b"armed\n"


class DirectTransport(Transport):
    name = "direct"
    description = "no FUSE: the backing itself bind-mounted on the mountpoint (the ceiling)"
    options = {}
    statistics_class = DirectStatistics
    # No server thread carries the I/O: there is nothing to place.
    places_own_threads = True
    serves_fuse = False

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        self._wake_w: int | None = None  # wakes _wait() from stop()
        self._stopping = False
        self._mount_id: int | None = None
        self._tmpfs: str | None = None  # our private tmpfs while it is still attached
        self._workdir: str | None = None
        self._guard: subprocess.Popen | None = None
        self._guard_pipe: int | None = None
        self._ended: str | None = None
        self._served_from = ""
        self._huge = ""

    def check_available(self) -> None:
        if os.geteuid() != 0:
            raise TransportUnavailable(
                "the direct transport needs root: it bind-mounts the backing onto the "
                "mountpoint (mount(2) needs CAP_SYS_ADMIN); run as root"
            )

    # -- serving ------------------------------------------------------------------------
    def serve(self, export: Export, mountpoint: str, on_ready: Callable[[], None]) -> None:
        self.check_available()
        wake_r, self._wake_w = os.pipe()
        try:
            source = self._source(export)
            self._bind(source, mountpoint, export.options.read_only)
            self._detach_tmpfs()
            self._start_guard(mountpoint)
            on_ready()
            self._wait(mountpoint, wake_r)
        finally:
            if self._mount_id is not None:
                mounting.unmount_mount_id(mountpoint, self._mount_id)
            self._detach_tmpfs()
            self._end_guard()
            wake_w, self._wake_w = self._wake_w, None  # before closing: stop() may come late
            os.close(wake_r)
            if wake_w is not None:
                os.close(wake_w)

    def _source(self, export: Export) -> str:
        """The file to bind: the image file, or a copy of the memfd in a private tmpfs."""
        if export.backing.kind == "file":
            assert export.backing.path is not None
            self._served_from = export.backing.path
            return export.backing.path
        self._workdir = tempfile.mkdtemp(prefix="ringside-direct-")
        self._huge = shmem_huge_policy()
        size = max(_PAGE, -(-export.size // _PAGE) * _PAGE)  # size=0 would mean no limit
        _mount(b"tmpfs", self._workdir, b"tmpfs", 0,
               f"mode=0700,size={size},huge={self._huge}".encode())
        self._tmpfs = self._workdir
        image = os.path.join(self._workdir, _IMAGE_NAME)
        copy_extents(export.fd, image, export.size)
        self._served_from = (f"a copy of the memory backing in a private tmpfs "
                             f"(huge={self._huge})")
        return image

    def _bind(self, source: str, mountpoint: str, read_only: bool) -> None:
        _mount(os.fsencode(source), mountpoint, None, _MS_BIND, None)
        entry = mounting.find_mount(mountpoint)
        if entry is None:
            raise mounting.MountError(f"bind-mounted {source} on {mountpoint} but no mount is "
                                      "there")
        self._mount_id = entry.mount_id
        if read_only:  # as the FUSE transports answer EROFS to a read-only export's writes
            _mount(b"none", mountpoint, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY, None)

    def _detach_tmpfs(self) -> None:
        if self._tmpfs is not None:
            mounting.unmount(self._tmpfs, lazy=True)
            self._tmpfs = None
        if self._workdir is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._workdir)  # never rmtree: a mount could still be below
            self._workdir = None

    def _wait(self, mountpoint: str, wake: int) -> None:
        """Until stop(), or until our mount is removed from outside.

        A look every _LOOK_S rather than poll(POLLPRI) on the mount table: that wakes on
        every mount anyone makes, and this process's CPU time is measured.
        """
        while not self._stopping:
            entry = mounting.find_mount(mountpoint)
            if entry is None or entry.mount_id != self._mount_id:
                self._ended = "unmounted"
                return
            select.select([wake], [], [], _LOOK_S)

    def stop(self) -> None:
        self._stopping = True
        wake = self._wake_w
        if wake is not None:
            with contextlib.suppress(OSError):
                os.write(wake, b"x")

    def connection_end(self) -> str | None:
        return self._ended

    # -- the guard ----------------------------------------------------------------------
    def _start_guard(self, mountpoint: str) -> None:
        # The guard reads its stdin until EOF: when this process ends, however it ends.
        read_end, self._guard_pipe = os.pipe()
        try:
            self._guard = subprocess.Popen(
                [sys.executable, "-m", "transports.builtin.direct", "--guard", mountpoint,
                 str(self._mount_id)],
                stdin=read_end,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a signal to our group must not stop it first
            )
        finally:
            os.close(read_end)
        # Armed before we say ready: its start-up must not fall in the measured window.
        assert self._guard.stdout is not None
        with self._guard.stdout:
            armed = self._guard.stdout.readline()
        if armed != _GUARD_ARMED:
            raise TransportUnavailable(
                f"the guard that undoes the mount on {mountpoint} did not start (exit code "
                f"{self._guard.wait()}): run `{sys.executable} -m transports.builtin.direct` to "
                "see why"
            )

    def _end_guard(self) -> None:
        if self._guard_pipe is not None:
            os.close(self._guard_pipe)
            self._guard_pipe = None
        if self._guard is not None:
            try:
                self._guard.wait(timeout=_GUARD_EXIT_S)
            except subprocess.TimeoutExpired:
                self._guard.kill()
                self._guard.wait()

    def statistics(self) -> DirectStatistics:
        return DirectStatistics(
            transport=self.name,
            requested=dict(self.settings),
            effective=dict(self.settings),
            requests=None,  # no server: nothing carries requests
            served_from=self._served_from,
            guard_exit_code=None if self._guard is None else self._guard.returncode,
        )


def _mount(source: bytes, target: str, fstype: bytes | None, flags: int,
           data: bytes | None) -> None:
    if _libc.mount(source, os.fsencode(target), fstype, flags, data) != 0:
        err = ctypes.get_errno()
        raise mounting.MountError(
            f"mount {source.decode()} on {target}: {os.strerror(err)}"
            + (" (run as root)" if err == errno.EPERM else "")
        )


def shmem_huge_policy() -> str:
    """The tmpfs `huge=` matching the policy memfds get (shmem_enabled's choice)."""
    text = sysinfo.read_text(_SHMEM_ENABLED) or ""
    chosen = re.search(r"\[([a-z_]+)\]", text)
    value = chosen.group(1) if chosen else "never"
    # deny and force are shmem_enabled's overrides of every mount, not mount options.
    return {"deny": "never", "force": "always"}.get(value, value)


def copy_extents(fd: int, path: str, size: int) -> None:
    """Copy the image into a new file at `path`, data extents only (holes stay holes)."""
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(out, size)
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            os.lseek(out, start, os.SEEK_SET)
            while start < end:
                n = os.sendfile(out, fd, start, min(1 << 30, end - start))
                if n == 0:
                    raise OSError(errno.EIO, f"the backing ended at {start} while copying")
                start += n
            offset = end
    finally:
        os.close(out)


def _guard_main(mountpoint: str, mount_id: int) -> int:
    """Wait for the serving process to end (EOF on stdin), then undo its mount."""
    os.write(1, _GUARD_ARMED)
    os.close(1)
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    mounting.unmount_mount_id(mountpoint, mount_id)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--guard":
        sys.exit(_guard_main(sys.argv[2], int(sys.argv[3])))
    sys.exit("usage: python -m transports.builtin.direct --guard MOUNTPOINT MOUNT_ID")
