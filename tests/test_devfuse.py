"""The devfuse transport on real mounts: data round trips, fio verify, every way of ending."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from transports.base import SpecError, parse_spec
from transports.builtin.devfuse import DevFuseTransport
from transports.export.backing import parse_backing
from transports.export.image import Export, ExportOptions
from transports.fuse import mounting

pytestmark = [
    pytest.mark.mount,
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse"),
]

IMAGE_SIZE = 64 << 20


class Served:
    def __init__(self, transport: DevFuseTransport, export: Export, mountpoint: str):
        self.transport = transport
        self.export = export
        self.mountpoint = mountpoint
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="serve", daemon=True)

    def _run(self) -> None:
        try:
            self.transport.serve(self.export, self.mountpoint, self.ready.set)
        except BaseException as e:  # surfaced by the test
            self.error = e

    def wait_gone(self, timeout: float = 20) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "serve() did not return"
        assert mounting.find_mount(self.mountpoint) is None


@contextlib.contextmanager
def serving(tmp_path, threads: int = 1, options: ExportOptions | None = None,
            spec: str = "devfuse") -> Iterator[Served]:
    mountpoint = mounting.prepare_mountpoint(str(tmp_path / "disk.img"))
    export = Export(parse_backing(f"memory:{IMAGE_SIZE}"), options or ExportOptions())
    transport = parse_spec(spec).create()
    assert isinstance(transport, DevFuseTransport)
    if threads != 1:
        transport = DevFuseTransport({**parse_spec(spec).settings, "threads": threads})
    served = Served(transport, export, mountpoint)
    served.thread.start()
    try:
        assert served.ready.wait(20), f"not ready: {served.error!r}"
        yield served
    finally:
        served.transport.stop()
        served.thread.join(20)
        # Whatever happened above, leave no mount behind.
        mounting.unmount_if_mounted(mountpoint)
        export.close()
    assert not served.thread.is_alive()
    assert mounting.find_mount(mountpoint) is None


@pytest.fixture
def mounted(tmp_path) -> Iterator[Served]:
    with serving(tmp_path) as served:
        yield served


def test_spec() -> None:
    defaults = {"threads": 1, "datapath": "native", "follow": True, "sched": "auto",
                "idle_guard": True, "cpus": ""}
    assert parse_spec("devfuse").settings == defaults
    assert parse_spec("devfuse:threads=3,datapath=python,follow=off").settings == {
        **defaults, "threads": 3, "datapath": "python", "follow": False}
    with pytest.raises(SpecError):
        parse_spec("devfuse:threads=0")


@pytest.mark.parametrize("cache", ["pagecache", "direct"])
def test_round_trips_at_odd_offsets(tmp_path, cache: str) -> None:
    with serving(tmp_path, options=ExportOptions(cache=cache)) as s:
        assert os.stat(s.mountpoint).st_size == IMAGE_SIZE
        fd = os.open(s.mountpoint, os.O_RDWR)
        try:
            chunks = {}
            for offset, size in [(1, 1), (4095, 2), (12_345, 77_777), (IMAGE_SIZE - 3, 3)]:
                data = os.urandom(size)
                assert os.pwrite(fd, data, offset) == size
                chunks[offset] = data
            for offset, data in chunks.items():
                assert os.pread(fd, len(data), offset) == data
                assert s.export.read(offset, len(data)) == data
            # A big write crosses max_write and is split by the kernel.
            big = os.urandom(3 << 20)
            assert os.pwrite(fd, big, 5_000_001) == len(big)
            assert os.pread(fd, len(big), 5_000_001) == big
            assert os.pread(fd, 10, IMAGE_SIZE) == b""
            with pytest.raises(OSError):
                os.pwrite(fd, b"x", IMAGE_SIZE)  # fixed size: no growing
            os.fsync(fd)
        finally:
            os.close(fd)
    stats = s.transport.statistics()
    assert stats.transport == "devfuse"
    assert stats.requests == stats.requests_device > 10
    assert stats.requests_ring is None and stats.ops_ring is None  # no ring
    assert stats.ops["WRITE"] >= 4 and stats.ops["READ"] >= 4
    assert stats.ops["INIT"] == 1 and stats.exceptions == 0
    assert stats.settings["negotiated"]["minor"] >= 28


def test_direct_io_reaches_server(mounted: Served) -> None:
    fd = os.open(mounted.mountpoint, os.O_RDWR | os.O_DIRECT)
    try:
        before = mounted.transport.statistics().ops.get("READ", 0)
        for _ in range(5):
            os.pread(fd, 4096, 8192)
        assert mounted.transport.statistics().ops["READ"] - before == 5
    finally:
        os.close(fd)


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio not installed")
@pytest.mark.parametrize("threads", [1, 2])
def test_fio_verify(tmp_path, threads: int) -> None:
    with serving(tmp_path, threads=threads) as s:
        proc = subprocess.run(
            [
                "fio",
                "--name=verify",
                f"--filename={s.mountpoint}",
                "--rw=randwrite",
                "--bs=4k",
                "--size=32M",
                "--direct=1",
                "--ioengine=psync",
                "--numjobs=1",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--verify_state_save=0",  # no state file in the working directory
            ],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "verify" not in proc.stderr.lower(), proc.stderr
    stats = s.transport.statistics()
    assert len(stats.per_thread) == threads
    assert stats.ops["WRITE"] >= 8192 and stats.ops["READ"] >= 8192
    assert stats.errors <= stats.ops.get("GETXATTR", 0) + stats.ops.get("LOOKUP", 0)


def test_stop_ends_serve(tmp_path) -> None:
    with serving(tmp_path, threads=2) as s:
        s.transport.stop()
        s.wait_gone()
        assert s.error is None
    s.transport.stop()  # idempotent after the end


def test_outside_lazy_umount_ends_serve(tmp_path) -> None:
    with serving(tmp_path, threads=2) as s:
        subprocess.run(["umount", "-l", s.mountpoint], check=True)
        s.wait_gone()
        assert s.error is None


def test_failing_on_ready_leaves_no_mount(tmp_path) -> None:
    mountpoint = mounting.prepare_mountpoint(str(tmp_path / "disk.img"))
    export = Export(parse_backing("memory:1M"))
    transport = DevFuseTransport({"threads": 1})

    def on_ready() -> None:
        raise RuntimeError("harness broke")

    try:
        with pytest.raises(RuntimeError, match="harness broke"):
            transport.serve(export, mountpoint, on_ready)
    finally:
        mounting.unmount_if_mounted(mountpoint)
        export.close()
    assert mounting.find_mount(mountpoint) is None


def test_stop_before_serve(tmp_path) -> None:
    mountpoint = mounting.prepare_mountpoint(str(tmp_path / "disk.img"))
    export = Export(parse_backing("memory:1M"))
    transport = DevFuseTransport({"threads": 1})
    transport.stop()
    called = []
    try:
        transport.serve(export, mountpoint, lambda: called.append(1))
    finally:
        mounting.unmount_if_mounted(mountpoint)
        export.close()
    assert not called and mounting.find_mount(mountpoint) is None


# -- where the reader runs ------------------------------------------------------------------
def _reader_tids(stats) -> list[int]:
    return [t["tid"] for t in stats.sched_guard["per_thread"]]


def _client_reads(path: str, cpu: int, count: int) -> None:
    """`count` O_DIRECT 4k reads, one at a time, from a thread pinned to `cpu`."""
    def client() -> None:
        os.sched_setaffinity(0, {cpu})
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            for i in range(count):
                assert len(os.pread(fd, 4096, i % 1024 * 4096)) == 4096
        finally:
            os.close(fd)

    t = threading.Thread(target=client)
    t.start()
    t.join(120)
    assert not t.is_alive()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
@pytest.mark.parametrize("datapath", ["native", "python"])
def test_follow_binds_the_reader_to_a_waiting_clients_cpu_and_lets_go_for_a_queue(
    tmp_path, datapath: str
) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    with serving(tmp_path, spec=f"devfuse:datapath={datapath}") as s:
        (tid,) = _reader_tids(s.transport.statistics())
        for cpu in (cpus[-1], cpus[0]):  # it moves with the client
            _client_reads(s.mountpoint, cpu, 400)
            # sched=auto, as root: SCHED_IDLE, unless the starvation guard holds the
            # reader on SCHED_BATCH just now (on a loaded machine it does). The policy is
            # read first: a boost it shows is then in the statistics read after it.
            policy = os.sched_getscheduler(tid)
            stats = s.transport.statistics()
            follow = stats.follow["per_thread"][0]
            assert follow["cpu"] == cpu and os.sched_getaffinity(tid) == {cpu}, follow
            guarded = {t["tid"]: t for t in stats.sched_guard["per_thread"]}[tid]
            assert policy == os.SCHED_IDLE or (
                policy == os.SCHED_BATCH and guarded["boosts"] >= 1), (policy, guarded)
        # 16 requests at a time: the reader rarely waits, and gets its CPUs back. Looked at
        # while the requests queue up: as fio's last requests drain, the reader waits for
        # each one again and may follow once more (on a loaded machine it did).
        proc = subprocess.Popen(
            ["fio", "--name=q", f"--filename={s.mountpoint}", "--rw=randread", "--bs=4k",
             "--direct=1", "--ioengine=libaio", "--iodepth=16", "--size=32M",
             "--runtime=20", "--time_based", "--output-format=terse"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                follow = s.transport.statistics().follow
                if (follow["releases"] >= 1 and follow["per_thread"][0]["cpu"] == -1
                        and os.sched_getscheduler(tid) == os.SCHED_OTHER):
                    break
                time.sleep(0.05)
            assert follow["releases"] >= 1 and follow["per_thread"][0]["cpu"] == -1, follow
            assert os.sched_getaffinity(tid) == set(cpus)
            assert os.sched_getscheduler(tid) == os.SCHED_OTHER  # it must preempt busy clients
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    assert follow["moves"] >= 2 and follow["per_thread"][0]["last_error"] is None


def test_follow_off_and_sched_are_reported(tmp_path) -> None:
    with serving(tmp_path, spec="devfuse:follow=off,sched=batch") as s:
        _client_reads(s.mountpoint, sorted(os.sched_getaffinity(0))[0], 100)
        stats = s.transport.statistics()
    assert stats.effective["follow"] == "off" and stats.follow is None
    assert stats.effective["sched"] == "batch" and stats.effective["idle_guard"] == "off"
    assert stats.requested["follow"] is False and stats.requested["sched"] == "batch"
    assert stats.thread_sched == ["batch"] and stats.sched_guard is None
    as_json = stats.as_dict()  # what did not happen is left out, not written as null
    assert "follow" not in as_json and "sched_guard" not in as_json
    assert as_json["settings"] == stats.effective and as_json["requested"] == stats.requested
