"""The data path: who answers READ and WRITE, Python's codec or the compiled helper.

`python` (the codec and the export's Python methods answer every request) shows a
Python server's costs; `native` answers READ and WRITE inside the compiled helper
(native.c: straight between the backing and the transport's buffers, the reply and the
wait for the next request in the same call) and leaves every other request, and every
READ/WRITE it does not serve as the export would (past the end, growing, read-only), to
Python. The transport is the same either way: only who does the data work changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from transports import native
from transports.base import Option
from transports.export.image import Export
from transports.statistics import NativeTotals

DATAPATHS = ("python", "native")
# Measured (README, "The data path"): native is at least as fast at every point and
# cheaper in server CPU per I/O; python stays one option away for a Python server's costs.
DEFAULT_DATAPATH = "native"
DATAPATH_OPTION = Option(
    str, DEFAULT_DATAPATH, "who answers READ and WRITE: python (the codec and the export) "
    "or native (the compiled helper, between the backing and the buffers)",
    choices=DATAPATHS, absent="python",
)
NATIVE_COUNTERS = ("reads", "writes", "read_bytes", "write_bytes", "errors", "deferred")


class NativeImage:
    """The export's image as the compiled helper reads it (struct rs_image), kept current
    by the export (its size after a resize, the end of mapped reads)."""

    def __init__(self, export: Export):
        self.struct = native.ffi.new("struct rs_image *")
        self._export = export
        export.watch(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        export, image = self._export, self.struct
        image.fd = export.fd
        image.writable = int(not export.options.read_only)
        image.size = export.size
        image.map = native.ffi.cast("char *", export.mapped_address())

    def close(self) -> None:
        self._export.unwatch(self.refresh)


class NativeDataPath:
    """One worker's native path (struct rs_native): its counters need no lock."""

    def __init__(self, image: NativeImage):
        self.image = image  # keeps the struct alive while the helper points at it
        self.struct = native.ffi.new("struct rs_native *")
        self.struct.image = image.struct

    def counters(self) -> dict[str, int]:
        n = self.struct
        return {name: int(getattr(n, name)) for name in NATIVE_COUNTERS}

    def dev_reader(
        self, fd: int, inbuf: memoryview, outbuf: memoryview, follower: Any = None
    ) -> Callable[[memoryview], int]:
        """A readinto(buf) for the /dev/fuse loop: the helper reads requests into `inbuf`,
        answers READ/WRITE (replies built in `outbuf`) and returns the length of the
        first request it leaves there; a failed read(2) or reply raises OSError, as
        FileIO.readinto would. `follower` (transports.sched.policy.Follower) sees every
        request."""
        serve, state = native.lib.rs_dev_serve, self.struct
        follow = follower.struct if follower is not None else native.ffi.NULL
        in_ptr, out_ptr = native.ffi.from_buffer(inbuf), native.ffi.from_buffer(outbuf)
        in_len, out_len = len(inbuf), len(outbuf)

        def readinto(_buf: memoryview) -> int:
            n = serve(fd, state, follow, in_ptr, in_len, out_ptr, out_len)
            if n < 0:
                raise OSError(-n, os.strerror(-n))
            return n

        return readinto

    def codec_counters(self) -> dict[str, Any]:
        """What it served, in the shape of Codec.counters(), for merge_counters."""
        n = self.struct
        reads, writes = int(n.reads), int(n.writes)
        ops = {name: count for name, count in (("READ", reads), ("WRITE", writes)) if count}
        return {"requests": reads + writes, "errors": int(n.errors), "exceptions": 0,
                "ops": ops}


def native_totals(paths: list[NativeDataPath]) -> NativeTotals:
    """The counters of several workers summed, plus `served` (READ + WRITE answered)."""
    total = dict.fromkeys(NATIVE_COUNTERS, 0)
    for path in paths:
        for name, value in path.counters().items():
            total[name] += value
    total["served"] = total["reads"] + total["writes"]
    return total

