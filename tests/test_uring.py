"""The uring transport on real mounts: data integrity, ring share, teardown, refusals.

Each test serves a memory export in a thread of the test process (so it can check that
every transport thread was joined) and drives it with plain file I/O or fio. Skipped
only off CI when FUSE-over-io_uring cannot be switched on here; on CI that is a failure.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import ON_CI, REPO, fuse_usable, require, serve_child_code
from transports.base import SpecError, TransportUnavailable, parse_spec
from transports.export.backing import parse_backing
from transports.export.image import Export, ExportOptions
from transports.fuse import mounting

pytestmark = pytest.mark.mount

ENABLE_URING = Path("/sys/module/fuse/parameters/enable_uring")
EXPORT_SIZE = 64 << 20
DATA_OPS = ("READ", "WRITE")


def _uring_reason() -> str | None:
    reason = fuse_usable()
    if reason:
        return reason
    if not ENABLE_URING.exists():
        return "the fuse module has no enable_uring parameter (kernel < 6.14?)"
    if ENABLE_URING.read_text().strip() != "Y":
        try:
            ENABLE_URING.write_text("Y\n")
        except OSError as e:
            return f"enable_uring is N and cannot be set ({e.strerror}): run as root"
    try:
        from transports.native import lib  # noqa: F401
    except ImportError as e:  # transports.native says why and what fixes it
        return str(e)
    return None


@pytest.fixture(scope="module", autouse=True)
def uring_on() -> Iterator[None]:
    require(_uring_reason())
    yield


def _uring_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("uring-")]


class Server:
    def __init__(self, transport, export: Export, path: Path):
        self.transport = transport
        self.export = export
        self.path = path
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-serve", daemon=True)

    def _run(self) -> None:
        try:
            self.transport.serve(self.export, str(self.path), self.ready.set)
        except BaseException as e:
            self.error = e
        finally:
            self.ready.set()

    def stats(self) -> dict:
        return self.transport.statistics().as_dict()

    def wait_returned(self, timeout: float = 30) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "serve() did not return"
        assert self.error is None, f"serve() failed: {self.error!r}"
        assert _uring_threads() == [], f"threads left running: {_uring_threads()}"
        assert mounting.find_mount(str(self.path)) is None


@contextmanager
def serving(
    path: Path, spec: str = "uring", size: int = EXPORT_SIZE, export: Export | None = None
) -> Iterator[Server]:
    """Serve `export` (default: an empty memory image of `size`) through `spec` on `path`
    in a thread; stopped, unmounted and closed however the block ends."""
    mounting.prepare_mountpoint(str(path))
    if export is None:
        export = Export(parse_backing(f"memory:{size}"), ExportOptions())
    server = Server(parse_spec(spec).create(), export, path)
    server.thread.start()
    try:
        server.ready.wait(30)
        if server.error is not None:
            raise server.error
        assert server.ready.is_set(), f"{spec} did not get ready"
        yield server
    finally:
        server.transport.stop()
        server.thread.join(30)
        mounting.unmount_if_mounted(str(path))
        export.close()


def _data_share(stats: dict) -> tuple[int, int]:
    ring = sum(stats["ops_ring"].get(op, 0) for op in DATA_OPS)
    dev = sum(stats["ops_device"].get(op, 0) for op in DATA_OPS)
    return ring, dev


def _fio(path: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    if shutil.which("fio") is None:
        require("fio is not installed: run `make setup`")
    cmd = [
        "fio", "--name=verify", f"--filename={path}", "--direct=1", "--fallocate=none",
        "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0",
        "--bs=4k", *args,
    ]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=240)


# -- data -----------------------------------------------------------------------------------
@pytest.mark.parametrize("buffers", ["mapped", "mlock"])
def test_round_trips_at_odd_offsets(tmp_path, buffers):
    path = tmp_path / "disk.img"
    with serving(path, f"uring:buffers={buffers}") as server:
        pattern = bytes(range(251)) * 600  # 150600 bytes: spans pages, not a multiple of one
        # Far enough apart not to overlap; unaligned starts and ends.
        offsets = [1, 4095 + (1 << 18), 4097 + (1 << 19), 65537 + (1 << 20), (3 << 20) | 3,
                   EXPORT_SIZE - len(pattern) - 7]
        with open(path, "r+b", buffering=0) as f:
            for off in offsets:
                assert os.pwrite(f.fileno(), pattern, off) == len(pattern)
            for off in offsets:
                assert os.pread(f.fileno(), len(pattern), off) == pattern
        for off in offsets:  # the bytes reached the export itself, not only the page cache
            assert server.export.read(off, len(pattern)) == pattern
        # A read across the end comes back short, a write past it fails.
        with open(path, "r+b", buffering=0) as f:
            assert len(os.pread(f.fileno(), 8192, EXPORT_SIZE - 100)) == 100
            with pytest.raises(OSError) as exc:
                os.pwrite(f.fileno(), b"x", EXPORT_SIZE)
            assert exc.value.errno in (errno.ENOSPC, errno.EFBIG)
        stats = server.stats()
        assert stats["requests_ring"] > 0
        assert stats["settings"]["buffers"] == buffers
    server.wait_returned()


FIO_CASES = {
    "qd1": ["--rw=randwrite", "--ioengine=psync", "--iodepth=1", "--size=32M"],
    "qd64": ["--rw=randwrite", "--ioengine=libaio", "--iodepth=64", "--size=64M"],
    # two jobs on disjoint halves, so each verifies only what it wrote
    "qd16x2": ["--rw=randwrite", "--ioengine=libaio", "--iodepth=16", "--numjobs=2",
               "--size=32M", "--offset_increment=32M"],
}


def fio_verify_on_the_ring(server, path: Path, tmp_path: Path, case: str) -> dict:
    """fio verify (FIO_CASES[case]) through a served mount: no error, every job verified,
    the data carried by the ring; returns the server's statistics."""
    proc = _fio(path, tmp_path, *FIO_CASES[case])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "err= 0" in proc.stdout
    jobs = 2 if case == "qd16x2" else 1
    # fio reports the verify pass as reads: every block written was read back.
    assert proc.stdout.count("read: IOPS=") == jobs, proc.stdout
    stats = server.stats()
    ring, dev = _data_share(stats)
    assert ring >= 0.99 * (ring + dev), f"ring {ring}, /dev/fuse {dev}"
    return stats


@pytest.mark.parametrize("buffers", ["mapped", "mlock"])
@pytest.mark.parametrize("case", sorted(FIO_CASES))
def test_fio_verify(tmp_path, buffers, case):
    path = tmp_path / "disk.img"
    with serving(path, f"uring:buffers={buffers}") as server:
        stats = fio_verify_on_the_ring(server, path, tmp_path, case)
        assert stats["requests"] == stats["requests_ring"] + stats["requests_device"]
        assert sum(q["requests"] for q in stats["per_queue"]) == stats["requests_ring"]
    server.wait_returned()


# -- statistics -----------------------------------------------------------------------------
def test_statistics_report_effective_settings(tmp_path):
    path = tmp_path / "disk.img"
    with serving(path, "uring:depth=4,affinity=off") as server:
        with open(path, "rb") as f:
            f.read(4096)
    server.wait_returned()
    stats = server.stats()
    cpus = Path("/sys/devices/system/cpu/possible").read_text().strip()
    from transports.builtin.uring.queue import parse_cpu_list

    queues = len(parse_cpu_list(cpus))
    assert stats["transport"] == "uring"
    assert stats["settings"]["depth"] == 4
    assert stats["settings"]["affinity"] == "off"
    # sched=auto: SCHED_IDLE, guarded, wherever the guard may act (root may)
    assert stats["settings"]["sched"] == "idle"
    assert stats["settings"]["idle_guard"] == "on"
    assert {q["sched"] for q in stats["per_queue"]} == {"idle"}
    assert stats["sched_guard"]["checks"] > 0
    assert stats["settings"]["datapath"] == "native"
    assert stats["settings"]["buffers"] == "mapped"
    assert stats["settings"]["queues"] == queues == len(stats["per_queue"])
    assert stats["settings"]["negotiated"]["uring"] is True
    assert stats["enable_uring"] == "Y"
    assert stats["first_request_via_ring"] is True
    assert stats["requests_device"] >= 1  # FUSE_INIT always comes through /dev/fuse
    assert stats["ops_device"].get("INIT") == 1
    for q in stats["per_queue"]:
        assert q["ring"]["setup_flags"] == hex(0x400 | 0x80 | 0x8)  # SQE128|SUBMIT_ALL|CQSIZE
        assert q["ring"]["fixed_file"] is True
        assert q["dead_entries"] == 4  # after teardown every entry completed
        assert set(q["entry_errors"]) <= {"ENOTCONN", "ECONNABORTED"}
    assert "mlock" not in stats["pinning"] or stats["settings"]["buffers"] == "mlock"


def test_spec_options_are_validated():
    assert parse_spec("uring").settings == {
        "depth": 8, "buffers": "mapped", "zerocopy": False, "datapath": "native", "affinity": True,
        "sched": "auto", "idle_guard": True, "cpus": "",
    }
    with pytest.raises(SpecError, match="positive"):
        parse_spec("uring:depth=0")
    with pytest.raises(SpecError, match="mapped, mlock, pool, pinned"):
        parse_spec("uring:buffers=huge")
    with pytest.raises(SpecError, match="on or off"):
        parse_spec("uring:affinity=maybe")
    with pytest.raises(SpecError, match="pin= is called affinity= now.*affinity=off"):
        parse_spec("uring:pin=off")
    with pytest.raises(SpecError, match="auto, normal, batch, idle"):
        parse_spec("uring:sched=fifo")
    with pytest.raises(SpecError, match="python, native"):
        parse_spec("uring:datapath=c")


@pytest.mark.parametrize("sched", ["batch", "idle,idle_guard=off"])
def test_sched_applies_to_queue_threads(tmp_path, sched):
    path = tmp_path / "disk.img"
    with serving(path, f"uring:sched={sched}") as server:
        with open(path, "rb") as f:
            assert f.read(4096) == bytes(4096)
        stats = server.stats()
    server.wait_returned()
    policy = sched.partition(",")[0]
    assert stats["settings"]["sched"] == policy
    assert stats["settings"]["idle_guard"] == "off"
    assert "sched_guard" not in stats
    assert {q["sched"] for q in stats["per_queue"]} == {policy}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # only the queue threads changed


def _policies(tids: list[int]) -> set[int]:
    return {os.sched_getscheduler(tid) for tid in tids}


def test_idle_guard_moves_a_starved_queue_thread_to_batch_and_back(tmp_path):
    """A CPU hog per CPU in this process's scheduling group (the test's session) starves
    SCHED_IDLE queue threads: the guard must move them to SCHED_BATCH, so reads go on, and
    back to SCHED_IDLE once the hogs are gone."""
    path = tmp_path / "disk.img"
    hog = "while True: pass"
    with serving(path, "uring:sched=idle") as server:
        tids = [t["tid"] for t in server.stats()["sched_guard"]["per_thread"]]
        assert tids and _policies(tids) == {os.SCHED_IDLE}
        hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(os.cpu_count() or 1)]
        try:
            reads = 0
            deadline = time.monotonic() + 60
            with open(path, "rb", buffering=0) as f:
                # Only the guard sets SCHED_BATCH; sampled, as a hold may end meanwhile.
                while os.SCHED_BATCH not in _policies(tids):
                    assert time.monotonic() < deadline, "no queue thread was found starved"
                    f.seek(reads % 256 * 4096)
                    assert f.read(4096) == bytes(4096)
                    reads += 1
            assert server.stats()["sched_guard"]["boosts"] >= 1
        finally:
            for p in hogs:
                p.kill()
                p.wait()
        # After the longest hold a boost can have got (holds double while starvation recurs).
        deadline = time.monotonic() + 30
        while _policies(tids) != {os.SCHED_IDLE}:
            assert time.monotonic() < deadline, "the guard did not restore SCHED_IDLE"
            time.sleep(0.05)
        guard = server.stats()["sched_guard"]
    assert guard["restores"] >= 1 and guard["boosted_ms"] > 0
    assert not [t for t in guard["per_thread"] if t["last_error"]]


# -- mlocked memory --------------------------------------------------------------------------
def test_mlock_buffers_are_locked(tmp_path):
    path = tmp_path / "disk.img"
    with serving(path, "uring:buffers=mlock,depth=2") as server:
        stats = server.stats()
    server.wait_returned()
    s = stats["settings"]
    needed = s["queues"] * s["depth"] * (s["header_buffer"] + s["payload_buffer"])
    assert stats["memlock"]["needed_bytes"] == needed
    assert stats["locked_bytes"] >= needed  # VmLck proves mlock took
    assert "mlock" in stats["pinning"]




@pytest.mark.needs("user_tools")
def test_mlock_fails_under_a_lowered_memlock_limit(tmp_path):
    path = tmp_path / "disk.img"
    path.touch()
    cmd = [sys.executable, "-c", serve_child_code("uring:buffers=mlock"), str(path)]
    if os.geteuid() == 0:
        # root's CAP_IPC_LOCK lifts the limit; drop it so the limit applies as it does
        # for an unprivileged user.
        cmd = ["setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", *cmd]
    limit = 1 << 20
    proc = subprocess.run(
        ["prlimit", f"--memlock={limit}:{limit}", *cmd],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    msg = proc.stdout
    assert "RLIMIT_MEMLOCK is 1048576 bytes" in msg
    assert "needs" in msg and "bytes of locked memory" in msg
    assert "ulimit -l" in msg and "CAP_IPC_LOCK" in msg
    assert mounting.find_mount(str(path)) is None  # refused before mounting


# -- teardown -------------------------------------------------------------------------------
def test_stop_joins_every_thread(tmp_path):
    path = tmp_path / "disk.img"
    with serving(path) as server:
        with open(path, "r+b") as f:
            f.write(b"x" * 10000)
        assert len(_uring_threads()) == server.stats()["settings"]["queues"] + 1
        server.transport.stop()
        server.wait_returned()
    stats = server.stats()
    assert stats["teardown"]["threads_not_joined"] == []
    assert not stats["teardown"]["aborted_via_fusectl"]


def test_outside_lazy_unmount_ends_serve(tmp_path):
    path = tmp_path / "disk.img"
    with serving(path) as server:
        with open(path, "rb") as f:
            f.read(100)
        subprocess.run(["umount", "-l", str(path)], check=True)
        server.wait_returned()
    assert server.stats()["teardown"]["threads_not_joined"] == []


def test_stop_while_a_client_holds_the_file_open(tmp_path, monkeypatch):
    import transports.builtin.uring.transport as uring

    monkeypatch.setattr(uring, "_STOP_GRACE", 1.0)
    path = tmp_path / "disk.img"
    with serving(path) as server:
        f = open(path, "rb")  # keeps the connection alive past the lazy unmount
        try:
            f.read(10)
            started = time.monotonic()
            server.transport.stop()
            server.wait_returned(timeout=30)
            assert time.monotonic() - started < 20
            assert server.stats()["teardown"]["aborted_via_fusectl"]
        finally:
            try:
                f.close()
            except OSError:
                pass


# -- refusals -------------------------------------------------------------------------------
@contextmanager
def enable_uring_set_to(value: str) -> Iterator[None]:
    old = ENABLE_URING.read_text().strip()
    try:
        ENABLE_URING.write_text(value + "\n")
    except OSError as e:
        if ON_CI:
            pytest.fail(f"cannot toggle enable_uring on CI: {e}")
        pytest.skip(f"cannot toggle enable_uring: {e}")
    try:
        yield
    finally:
        ENABLE_URING.write_text(old + "\n")


def test_enable_uring_off_is_a_clear_refusal(tmp_path):
    path = tmp_path / "disk.img"
    path.touch()
    t = parse_spec("uring").create()
    export = Export(parse_backing("memory:1M"))
    try:
        with enable_uring_set_to("N"):
            with pytest.raises(TransportUnavailable, match=r"enable_uring is N: run `echo Y >"):
                t.serve(export, str(path), lambda: None)
    finally:
        export.close()
    assert mounting.find_mount(str(path)) is None


def test_init_without_uring_unmounts_and_names_the_cause(tmp_path):
    """The kernel's own answer decides: with enable_uring=N, FUSE_INIT lacks the flag."""
    path = tmp_path / "disk.img"
    mounting.prepare_mountpoint(str(path))
    t = parse_spec("uring").create()
    t.check_available = lambda: None  # get past the up-front check to the INIT exchange
    export = Export(parse_backing("memory:1M"))
    try:
        with enable_uring_set_to("N"):
            with pytest.raises(TransportUnavailable, match="not negotiated: enable_uring is N"):
                t.serve(export, str(path), lambda: None)
    finally:
        export.close()
        mounting.unmount_if_mounted(str(path))
    assert mounting.find_mount(str(path)) is None
    assert _uring_threads() == []
    assert t.statistics().settings["negotiated"]["uring_offered"] is False


def test_refused_register_fails_serve_cleanly(tmp_path, monkeypatch):
    """Buffers below the negotiated payload size: the kernel refuses REGISTER (EINVAL)."""
    import transports.builtin.uring.transport as uring

    monkeypatch.setattr(uring, "payload_size", lambda max_write, max_pages: 8192)
    path = tmp_path / "disk.img"
    mounting.prepare_mountpoint(str(path))
    t = parse_spec("uring:depth=2").create()
    export = Export(parse_backing("memory:1M"))
    try:
        with pytest.raises(uring.UringError, match="refused REGISTER of 2 of 2 entries"):
            t.serve(export, str(path), lambda: pytest.fail("must not get ready"))
    finally:
        export.close()
        mounting.unmount_if_mounted(str(path))
    assert mounting.find_mount(str(path)) is None
    assert _uring_threads() == []


def test_abort_under_load_ends_everything(tmp_path, monkeypatch):
    """stop() while fio keeps the file busy: the lazy unmount cannot end the connection,
    so after the grace period it is aborted with entries in every state."""
    import transports.builtin.uring.transport as uring

    monkeypatch.setattr(uring, "_STOP_GRACE", 0.5)
    path = tmp_path / "disk.img"
    with serving(path) as server:
        fio = subprocess.Popen(
            ["fio", "--name=load", f"--filename={path}", "--direct=1", "--fallocate=none",
             "--rw=randrw", "--bs=4k", "--ioengine=libaio", "--iodepth=32", "--numjobs=2",
             "--size=32M", "--time_based", "--runtime=30"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            deadline = time.monotonic() + 10
            while server.stats()["requests_ring"] < 2000 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert fio.poll() is None, fio.stdout.read()
            server.transport.stop()
            server.wait_returned(timeout=30)
            assert fio.wait(timeout=30) != 0  # its I/O failed once the connection was gone
        finally:
            if fio.poll() is None:
                fio.kill()
                fio.wait()
    stats = server.stats()
    assert stats["teardown"]["aborted_via_fusectl"]
    assert stats["teardown"]["threads_not_joined"] == []
    assert not stats["teardown"]["forced_wake"]
    for q in stats["per_queue"]:
        assert q["dead_entries"] == stats["settings"]["depth"]
