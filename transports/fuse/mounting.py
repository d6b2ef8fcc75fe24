"""Mountpoints: preparing them, mounting /dev/fuse on them, and undoing mounts.

Shared by every transport and by the harness, so that stale-mount recovery and lazy
unmounting behave the same everywhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

FUSECTL = "/sys/fs/fuse/connections"
MNT_DETACH = 2
MS_NOSUID = 2
MS_NODEV = 4


class MountError(RuntimeError):
    """A mountpoint that cannot be used or a mount that failed; the message names the fix."""


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    path: str
    fstype: str
    source: str
    minor: int  # the fuse connection number, for /sys/fs/fuse/connections/N


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1 : i + 4]) == 3 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[MountEntry]:
    entries = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            fstype, source = right.split()[:2]
            minor = int(fields[2].split(":")[1])
            entries.append(MountEntry(int(fields[0]), _unescape(fields[4]), fstype, source, minor))
    return entries


def find_mount(path: str) -> MountEntry | None:
    """The topmost mount whose mountpoint is exactly `path`, if any."""
    path = os.path.abspath(path)
    found = None
    for entry in mounts():
        if entry.path == path:
            found = entry
    return found


def fuse_mounts() -> list[MountEntry]:
    return [m for m in mounts() if m.fstype.startswith("fuse")]


_STALE_PROBES = 3


def is_stale(path: str) -> bool:
    """True when a FUSE mount on `path` has no server behind it any more."""
    for _ in range(_STALE_PROBES):
        try:
            # statfs always reaches the server; stat may be answered from cached attributes.
            os.statvfs(path)
        except OSError as e:
            if e.errno in (errno.ECANCELED, errno.EINTR):
                # A request caught in the teardown of a dead server's io_uring fails with
                # ECANCELED; the next one sees the aborted connection.
                continue
            return e.errno in (errno.ENOTCONN, errno.ECONNABORTED)
        return False
    return False


def connection_end(path: str, minor: int | None) -> str:
    """How the kernel ended our connection, asked the moment /dev/fuse said so (ENODEV)
    and before we unmount: "aborted" (fusectl; the mount stays, answering ENOTCONN) or
    "unmounted" (from outside). The kernel only tells them apart by errno for servers
    that negotiated FUSE_ABORT_ERROR, which would change what clients see."""
    entry = find_mount(path)
    if entry is not None and (minor is None or entry.minor == minor):
        return "aborted"
    return "unmounted"


@contextmanager
def fusectl() -> Iterator[str | None]:
    """/sys/fs/fuse/connections (per-connection `abort` files) for the duration of the
    block: as found when it is mounted, else mounted here (root only) and unmounted
    after, however the block ends, so the machine is left as it was. None when it is not
    mounted and cannot be."""
    mounted_here = False
    if find_mount(FUSECTL) is None:
        if os.geteuid() != 0 or not os.path.isdir(FUSECTL):
            yield None
            return
        proc = subprocess.run(["mount", "-t", "fusectl", "none", FUSECTL],
                              capture_output=True, check=False)
        if proc.returncode != 0:
            yield None
            return
        mounted_here = True
    try:
        yield FUSECTL
    finally:
        if mounted_here:
            unmount(FUSECTL, lazy=True)


def unmount(path: str, lazy: bool = True) -> None:
    """Unmount `path` (lazily by default, so a busy or dead mount still goes away)."""
    if os.geteuid() == 0:
        if _libc.umount2(os.fsencode(path), MNT_DETACH if lazy else 0) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mountpoint
                raise OSError(err, f"umount {path}: {os.strerror(err)}")
        return
    args = ["fusermount3", "-u"] + (["-z"] if lazy else []) + ["--", path]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0 and find_mount(path) is not None:
        raise OSError(errno.EPERM, f"fusermount3 -u {path}: {proc.stderr.strip()}")


def unmount_if_mounted(path: str) -> bool:
    """Lazily unmount every FUSE mount stacked on `path`; True if there was one."""
    did = False
    for _ in range(8):
        entry = find_mount(path)
        if entry is None or not entry.fstype.startswith("fuse"):
            return did
        unmount(path, lazy=True)
        did = True
    return did


def unmount_mount_id(path: str, mount_id: int) -> bool:
    """Lazily unmount `path` while its topmost mount is `mount_id`; True if it did.

    Never a later mount on the same path: whoever undoes a mount names the one it made.
    """
    entry = find_mount(path)
    if entry is None or entry.mount_id != mount_id:
        return False
    unmount(path, lazy=True)
    return True


def unmount_connection(path: str | None, minor: int | None) -> None:
    """Lazily unmount `path` while it is our connection's mount (fuse minor `minor`).

    Never someone else's: a later server may already have mounted on the same path.
    """
    if path is None:
        return
    for _ in range(8):
        entry = find_mount(path)
        if entry is None or not entry.fstype.startswith("fuse"):
            return
        if minor is not None and entry.minor != minor:
            return
        try:
            unmount(path, lazy=True)
        except OSError:
            return


def prepare_mountpoint(path: str, log=print) -> str:
    """Return the absolute mountpoint, a regular file, free to mount on.

    Creates a missing file; recovers a stale mount left by a killed server (with a
    message); refuses a directory or a mountpoint in use by a live server.
    """
    path = os.path.abspath(path)
    entry = find_mount(path)
    if entry is not None:
        if entry.fstype.startswith("fuse") and is_stale(path):
            log(f"ringside: {path} had a stale FUSE mount (its server died); unmounting it lazily")
            unmount_if_mounted(path)
        else:
            raise MountError(
                f"{path} is in use: a {entry.fstype} mount is on it. Stop the server that "
                f"serves it, or unmount it with `umount {path}` (or `fusermount3 -u {path}`)"
            )
    try:
        st = os.stat(path)
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            raise MountError(
                f"cannot create mountpoint {path}: directory {parent} does not exist"
            ) from None
        try:
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise MountError(
                f"cannot create mountpoint {path}: {e.strerror}; name a file in a directory "
                "you can write"
            ) from None
        os.close(fd)
        return path
    except OSError as e:
        raise MountError(f"cannot use mountpoint {path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise MountError(
            f"mountpoint {path} is a directory: Ringside exports one image as a regular file "
            f"(as qemu-storage-daemon does); name a file, e.g. {os.path.join(path, 'disk.img')}"
        )
    if not stat.S_ISREG(st.st_mode):
        raise MountError(f"mountpoint {path} is not a regular file: name a regular file")
    return path


def mount_options(fd: int, rootmode: int, max_read: int, allow_other: bool = False) -> str:
    opts = [
        f"fd={fd}",
        f"rootmode={rootmode:o}",
        f"user_id={os.getuid()}",
        f"group_id={os.getgid()}",
        "default_permissions",
        f"max_read={max_read}",
    ]
    if allow_other:
        opts.append("allow_other")
    return ",".join(opts)


def mount_devfuse(mountpoint: str, max_read: int, subtype: str = "ringside") -> int:
    """Open /dev/fuse and mount it on `mountpoint`; return the connection fd.

    As root this is mount(2); otherwise fusermount3 mounts and passes the fd back.
    """
    rootmode = stat.S_IFMT(os.stat(mountpoint).st_mode)
    if os.geteuid() == 0:
        try:
            fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise MountError(
                f"cannot open /dev/fuse: {e.strerror}; load the module with `modprobe fuse`"
            ) from e
        data = mount_options(fd, rootmode, max_read)
        rc = _libc.mount(
            b"ringside",
            os.fsencode(mountpoint),
            f"fuse.{subtype}".encode(),
            MS_NOSUID | MS_NODEV,
            data.encode(),
        )
        if rc != 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise MountError(f"mount {mountpoint}: {os.strerror(err)}")
        return fd
    return _mount_with_fusermount(mountpoint, rootmode, max_read, subtype)


def _mount_with_fusermount(mountpoint: str, rootmode: int, max_read: int, subtype: str) -> int:
    if shutil.which("fusermount3") is None:
        raise MountError("fusermount3 is missing: install it with `apt-get install fuse3`")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        opts = f"rootmode={rootmode:o},default_permissions,max_read={max_read},subtype={subtype}"
        env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
        proc = subprocess.run(
            ["fusermount3", "-o", opts, "--", mountpoint],
            env=env,
            pass_fds=(theirs.fileno(),),
            capture_output=True,
            text=True,
        )
        theirs.close()
        if proc.returncode != 0:
            raise MountError(
                f"fusermount3 could not mount {mountpoint}: {proc.stderr.strip()} "
                "(a user mounts through fusermount3, on a file it owns and can write)"
            )
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        if not fds:
            raise MountError("fusermount3 mounted but passed back no /dev/fuse fd")
        os.set_inheritable(fds[0], False)
        return fds[0]
    finally:
        ours.close()
        theirs.close()
