"""The legacy FUSE loop without libfuse: read(/dev/fuse) -> codec -> write(/dev/fuse).

Each worker thread owns a Codec and two preallocated buffers. Reads block in the
kernel with the GIL released, and the kernel hands each request to exactly one reader,
so threads share the fd without coordination. A read failing with ENODEV means the
connection is gone (unmounted from outside, or stop()), which ends the worker.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from transports.base import (
    Option,
    Transport,
    TransportUnavailable,
    flag,
    name_os_thread,
    on_off,
    positive_int,
)
from transports.datapath import (
    DATAPATH_OPTION,
    DEFAULT_DATAPATH,
    NativeDataPath,
    NativeImage,
    native_totals,
)
from transports.export.image import Export
from transports.fuse import devloop, mounting
from transports.fuse.codec import Codec, merge_counters
from transports.sched.policy import Follower, ThreadPolicy, follow_totals
from transports.statistics import DevfuseStatistics


class DevFuseError(RuntimeError):
    """The connection failed in a way that is not a normal unmount."""


class DevFuseTransport(Transport):
    name: ClassVar[str] = "devfuse"
    description: ClassVar[str] = "read/write loop on /dev/fuse with Ringside's own codec"
    options: ClassVar[dict[str, Option]] = {
        "threads": Option(positive_int, 1, "worker threads reading /dev/fuse"),
        "datapath": DATAPATH_OPTION,
        "follow": Option(
            on_off, True, "a reader that waits for each request binds itself to the CPU of "
            "the client making them and runs under sched=; when requests queue up it "
            "lets go and runs SCHED_OTHER (on|off; not with cpus=, which it would leave)",
            absent="off",
        ),
    }
    places_own_threads: ClassVar[bool] = True
    statistics_class = DevfuseStatistics

    def __init__(self, settings: dict[str, Any]):
        super().__init__(settings)
        self._threads_wanted: int = int(settings.get("threads", 1))
        self._datapath = str(settings.get("datapath", DEFAULT_DATAPATH))
        self._follow = flag(settings, "follow", True)
        self._sched = ThreadPolicy(settings)  # resolved by serve()
        self._followers: list[Follower] = []
        self._thread_sched: list[tuple[int, str]] = []  # (tid, policy) of each reader
        self._codecs: list[Codec] = []
        self._natives: list[NativeDataPath] = []
        self._mountpoint: str | None = None
        self._conn_minor: int | None = None
        self._stopping = False
        self._failure: BaseException | None = None
        self._connection_end: str | None = None
        self._lock = threading.Lock()

    def check_available(self) -> None:
        if self._follow and self.settings.get("cpus"):
            raise TransportUnavailable(
                f"devfuse: follow=on moves a reader to its client's CPU, wherever that is, "
                f"which cpus={self.settings['cpus']} forbids: add follow=off to the spec"
            )

    def own_placement(self) -> str | None:
        return "readers follow their client's CPU (follow=on)" if self._follow else None

    # -- life cycle -----------------------------------------------------------------------
    def serve(self, export: Export, mountpoint: str, on_ready: Callable[[], None]) -> None:
        self._sched.resolve()
        mountpoint = os.path.abspath(mountpoint)
        fd = mounting.mount_devfuse(mountpoint, max_read=devloop.MAX_WRITE)
        with self._lock:
            self._mountpoint = mountpoint
            entry = mounting.find_mount(mountpoint)
            self._conn_minor = entry.minor if entry is not None else None
        threads: list[threading.Thread] = []
        try:
            codecs = [
                Codec(export, max_write=devloop.MAX_WRITE) for _ in range(self._threads_wanted)
            ]
            self._codecs = codecs
            if self._stopping or not devloop.answer_init(fd, codecs[0]):
                return
            for codec in codecs[1:]:
                codec.adopt(codecs[0].negotiated)
            if self._datapath == "native":
                image = NativeImage(export)
                self._natives = [NativeDataPath(image) for _ in codecs]
            if self._follow:
                self._followers = [Follower(self._sched.policy) for _ in codecs]
            started = threading.Barrier(len(codecs) + 1)
            for i, codec in enumerate(codecs):
                native = self._natives[i] if self._natives else None
                follower = self._followers[i] if self._followers else None
                t = threading.Thread(
                    target=self._worker, args=(fd, codec, native, follower, started),
                    name=f"devfuse-{i}", daemon=True,
                )
                t.start()
                threads.append(t)
            started.wait()
            self._sched.start_guard(self._thread_sched)
            if self._wait_answering(mountpoint, threads):
                on_ready()
            for t in threads:
                while t.is_alive():
                    t.join(0.5)  # a timeout keeps the main thread responsive to signals
        finally:
            self._sched.stop_guard()
            self._unmount_ours()
            for t in threads:
                t.join()
            os.close(fd)
            self._unmount_ours()
            if self._natives:
                self._natives[0].image.close()
        if self._failure is not None:
            raise DevFuseError(f"devfuse worker failed: {self._failure!r}") from self._failure

    def stop(self) -> None:
        self._stopping = True
        self._unmount_ours()

    def connection_end(self) -> str | None:
        return self._connection_end

    def statistics(self) -> DevfuseStatistics:
        per_thread = [c.counters() for c in self._codecs]
        natives = self._natives
        total = merge_counters(per_thread + [n.codec_counters() for n in natives])
        negotiated = self._codecs[0].negotiated if self._codecs else None
        settings = {
            "threads": self._threads_wanted,
            "datapath": self._datapath,
            "follow": "on" if self._follow else "off",
            **self._sched.settings(),
            "max_write": devloop.MAX_WRITE,
            "negotiated": negotiated.as_dict() if negotiated else None,
        }
        return DevfuseStatistics.of_codecs(
            self.name, dict(self.settings), settings, total, device=total,
            per_thread=per_thread,
            thread_sched=[p for _, p in self._thread_sched],
            native=native_totals(natives) if natives else None,
            follow=follow_totals(self._followers) if self._followers else None,
            sched_guard=self._sched.guard_counters(),
        )

    # -- internals ------------------------------------------------------------------------
    def _unmount_ours(self) -> None:
        with self._lock:
            path, minor = self._mountpoint, self._conn_minor
        mounting.unmount_connection(path, minor)

    def _wait_answering(self, mountpoint: str, threads: list[threading.Thread]) -> bool:
        # The first stat of the root goes to the server (GETATTR), so a successful stat
        # proves the workers answer. It fails if the mount vanished meanwhile.
        try:
            os.stat(mountpoint)
        except OSError:
            return False
        entry = mounting.find_mount(mountpoint)
        if entry is None or (self._conn_minor is not None and entry.minor != self._conn_minor):
            return False  # unmounted meanwhile: the stat answered from the file below
        return not self._stopping and all(t.is_alive() for t in threads)

    def _worker(
        self, fd: int, codec: Codec, native: NativeDataPath | None, follower: Follower | None,
        started: threading.Barrier,
    ) -> None:
        name_os_thread()
        try:
            try:
                # idle: a client our reply wakes stays on its CPU, which follow=on then
                # shares with this reader (follow.c says why).
                policy = self._sched.apply()
                self._thread_sched.append((threading.get_native_id(), policy))
            finally:
                started.wait()
            devloop.serve_requests(fd, codec, native, follower)
            with self._lock:
                if self._connection_end is None and not self._stopping:
                    self._connection_end = mounting.connection_end(
                        self._mountpoint, self._conn_minor
                    )
        except BaseException as e:  # report, and take the mount down so serve() returns
            self._failure = e
            self._unmount_ours()
