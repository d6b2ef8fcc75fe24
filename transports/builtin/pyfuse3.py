"""Transport `pyfuse3`: the legacy /dev/fuse read loop of libfuse, driven by pyfuse3 and trio.

pyfuse3's Operations only adapts its callbacks to the export's typed methods. pyfuse3
binds neither fallocate nor lseek, so the kernel answers those itself (EOPNOTSUPP, and
the generic "all data" SEEK_DATA/SEEK_HOLE): `statistics()` says so, as the result of a
run on this transport must.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyfuse3
import trio

from transports.base import Transport
from transports.export.image import ROOT_INODE, Attr, Export
from transports.fuse import mounting
from transports.statistics import Pyfuse3Statistics


def _entry(attr: Attr, timeout: float) -> pyfuse3.EntryAttributes:
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = attr.ino
    entry.st_mode = attr.mode
    entry.st_nlink = attr.nlink
    entry.st_uid = attr.uid
    entry.st_gid = attr.gid
    entry.st_size = attr.size
    entry.st_blocks = attr.blocks
    entry.st_blksize = attr.blksize
    entry.st_atime_ns = attr.atime_ns
    entry.st_mtime_ns = attr.mtime_ns
    entry.st_ctime_ns = attr.ctime_ns
    entry.attr_timeout = timeout
    entry.entry_timeout = timeout
    return entry


def _fuse_errors(method):
    """Turn the export's OSErrors into the FUSEError pyfuse3 replies with."""

    async def wrapper(self, *args):
        self.ops[method.__name__] += 1
        try:
            return await method(self, *args)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None

    wrapper.__name__ = method.__name__
    return wrapper


class _Operations(pyfuse3.Operations):
    def __init__(self, export: Export):
        super().__init__()
        self.export = export
        self.timeout = export.options.attr_timeout
        self.ops: Counter[str] = Counter()

    def _check_inode(self, inode: int) -> None:
        if inode != ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOENT)

    @_fuse_errors
    async def lookup(self, parent_inode, name, ctx=None):
        raise pyfuse3.FUSEError(errno.ENOENT)

    @_fuse_errors
    async def getattr(self, inode, ctx=None):
        self._check_inode(inode)
        return _entry(self.export.getattr(), self.timeout)

    @_fuse_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        self._check_inode(inode)
        new = self.export.setattr(
            size=attr.st_size if fields.update_size else None,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        )
        return _entry(new, self.timeout)

    @_fuse_errors
    async def open(self, inode, flags, ctx):
        self._check_inode(inode)
        reply = self.export.open(flags)
        return pyfuse3.FileInfo(
            fh=ROOT_INODE, direct_io=reply.direct_io, keep_cache=reply.keep_cache
        )

    @_fuse_errors
    async def read(self, fh, off, size):
        return self.export.read(off, size)

    @_fuse_errors
    async def write(self, fh, off, buf):
        return self.export.write(off, buf)

    @_fuse_errors
    async def flush(self, fh):
        self.export.flush()

    @_fuse_errors
    async def fsync(self, fh, datasync):
        self.export.fsync(bool(datasync))

    @_fuse_errors
    async def release(self, fh):
        self.export.release()

    @_fuse_errors
    async def statfs(self, ctx):
        s = self.export.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize, out.f_frsize = s.bsize, s.frsize
        out.f_blocks, out.f_bfree, out.f_bavail = s.blocks, s.bfree, s.bavail
        out.f_files, out.f_ffree, out.f_favail = s.files, s.ffree, s.ffree
        out.f_namemax = s.namelen
        return out


class Pyfuse3Transport(Transport):
    name = "pyfuse3"
    description = "legacy /dev/fuse loop through pyfuse3 (libfuse) and trio"
    options = {}
    statistics_class = Pyfuse3Statistics
    unsupported_ops = ("fallocate", "lseek")

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        self._ops: _Operations | None = None
        self._mountpoint: str | None = None
        self._stopping = threading.Event()

    def serve(self, export: Export, mountpoint: str, on_ready: Callable[[], None]) -> None:
        self._ops = _Operations(export)
        self._mountpoint = mountpoint
        options = set(pyfuse3.default_options)
        options |= {"fsname=ringside", "subtype=ringside"}
        try:
            pyfuse3.init(self._ops, mountpoint, options)
        except RuntimeError as e:
            # libfuse has already printed the reason it got (fusermount3's, as a user).
            fix = "" if os.geteuid() == 0 else (
                ": a user mounts through fusermount3, on a file it owns and can write"
            )
            raise mounting.MountError(
                f"libfuse could not mount {mountpoint} ({e}; the reason is above){fix}"
            ) from None
        try:
            trio.run(self._main, on_ready)
        finally:
            # unmount=False: the loop only ends once the mount is gone or stop() detached it;
            # the lazy unmount below covers an exception in the loop itself.
            pyfuse3.close(unmount=False)
            mounting.unmount_if_mounted(mountpoint)

    async def _main(self, on_ready: Callable[[], None]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._announce_when_ready, on_ready)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()

    async def _announce_when_ready(self, on_ready: Callable[[], None]) -> None:
        # stat() from a worker thread: the trio thread must stay free to answer it.
        await trio.to_thread.run_sync(os.stat, self._mountpoint)
        on_ready()

    def stop(self) -> None:
        if self._mountpoint and not self._stopping.is_set():
            self._stopping.set()
            mounting.unmount(self._mountpoint, lazy=True)

    def statistics(self) -> Pyfuse3Statistics:
        # pyfuse3 names handlers after the opcodes, in lower case.
        ops = {name.upper(): n for name, n in self._ops.ops.items()} if self._ops else {}
        return Pyfuse3Statistics(
            transport=self.name,
            requested=dict(self.settings),
            effective=dict(self.settings),  # no option of its own: nothing to resolve
            requests=sum(ops.values()),
            requests_device=sum(ops.values()),
            ops=ops,
            ops_device=ops,
            unsupported_ops=list(self.unsupported_ops),
            libfuse="pyfuse3 " + pyfuse3.__version__,
        )
