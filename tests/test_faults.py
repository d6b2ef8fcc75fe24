"""Faults on every transport, as users and kernels cause them, and bad input to a live loop.

Each fault hits a real `ringside run` (or campaign) while fio has I/O in flight on a real
mount: the server killed with SIGKILL, the connection aborted through fusectl, the file
unmounted from outside, the harness interrupted with SIGINT. Every time the run must fail
with a message naming the cause, no mount and no process may be left, and the next run on
the same mountpoint must work. A full backing filesystem must reach the client as ENOSPC
or EIO while the server keeps serving and keeps every byte written before.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_run import processes_mentioning

from conftest import REPO, SLOW, fuse_usable, require, served
from harness.results import load
from transports.export.backing import parse_backing
from transports.export.image import Export
from transports.fuse import abi, devloop, mounting
from transports.fuse.codec import Codec

pytestmark = pytest.mark.mount

MiB = 1 << 20
FUSECTL = Path(mounting.FUSECTL)
# Reads and writes from two jobs, sixteen in flight each, when the fault hits.
LOADED_SCENARIO = "randrw-4k-qd16-2jobs"
QUICK_SCENARIO = "randread-4k-qd1"
RINGSIDE = [sys.executable, "-m", "harness"]
# The faulted run asks for 30 s of fio; ending within this shows nobody waited it out.
# (Inside an emulated guest everything takes SLOW times longer, fio's runtime too.)
FAULT_RUNTIME_S = int(30 * SLOW)
FAULT_DEADLINE_S = 15.0 * SLOW


def ringside(*args: str, tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    # TMPDIR puts the runner's own temp files below pytest's temp dir.
    return subprocess.run(
        [*RINGSIDE, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout * SLOW,
        env=dict(os.environ, TMPDIR=str(tmp)),
    )


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    timeout *= SLOW
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"{what}: the command ended early ({proc.returncode}):\n{out}{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def serve_processes(mountpoint: Path) -> list[int]:
    """`ringside serve` processes serving on `mountpoint` (not qemu-storage-daemon)."""
    needle = b"harness\0serve\0" + os.fsencode(mountpoint) + b"\0"
    pids = []
    for pid in processes_mentioning(str(mountpoint)):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle in f.read():
                    pids.append(pid)
        except OSError:
            continue
    return pids


def assert_nothing_left(mountpoint: Path, *needles: str) -> None:
    assert mounting.find_mount(str(mountpoint)) is None, "the mount was left behind"
    for needle in (str(mountpoint), *needles):
        assert not processes_mentioning(needle), f"a process naming {needle} was left"


def kill_leftovers(*needles: str) -> None:
    for needle in needles:
        for pid in processes_mentioning(needle):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def fusectl() -> Iterator[Path]:
    """/sys/fs/fuse/connections, mounted for the test when it was not (and unmounted after,
    however the test ends)."""
    require(fuse_usable())
    with mounting.fusectl() as connections:
        if connections is None:
            require("fusectl is not mounted and only root can mount it")
        yield Path(connections)


def test_fusectl_is_left_as_found_even_when_the_block_fails():
    if os.geteuid() != 0:
        require("mounting fusectl needs root")
    before = mounting.find_mount(mounting.FUSECTL) is not None
    with pytest.raises(RuntimeError, match="the block fails"):
        with mounting.fusectl() as connections:
            assert connections == mounting.FUSECTL
            assert mounting.find_mount(connections) is not None
            raise RuntimeError("the block fails")
    assert (mounting.find_mount(mounting.FUSECTL) is not None) == before


# -- faults while fio runs -----------------------------------------------------------------
def abort_connection(mountpoint: Path) -> None:
    entry = mounting.find_mount(str(mountpoint))
    assert entry is not None
    (FUSECTL / str(entry.minor) / "abort").write_text("1")


def kill_server(mountpoint: Path) -> None:
    (pid,) = serve_processes(mountpoint)
    os.kill(pid, signal.SIGKILL)


def unmount_from_outside(mountpoint: Path) -> None:
    subprocess.run(["umount", "-l", str(mountpoint)], check=True)


FAULTS = {
    # fault -> (how, what the run's error must say)
    "sigkill": (kill_server, "killed by SIGKILL"),
    "fusectl-abort": (abort_connection, "aborted"),
    "outside-unmount": (unmount_from_outside, "from outside"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_during_fio_fails_the_run_and_the_next_run_works(
    any_transport_spec, fault, tmp_path, fusectl
):
    spec = any_transport_spec
    mountpoint, out = tmp_path / "disk.img", tmp_path / "out"
    jobs = f"{out}/"  # fio's argument is its job file in out/
    inject, expected = FAULTS[fault]
    proc = subprocess.Popen(
        [*RINGSIDE, "run", LOADED_SCENARIO, "-t", spec, "--runtime", str(FAULT_RUNTIME_S),
         "--backing", "memory:64M", "--mountpoint", str(mountpoint), "--out", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, TMPDIR=str(tmp_path)),
    )
    try:
        wait_for(lambda: processes_mentioning(jobs), 30, "fio start", proc)
        time.sleep(0.5)  # requests in flight on every path
        started = time.monotonic()
        inject(mountpoint)
        _, err = proc.communicate(timeout=60 * SLOW)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(jobs, str(mountpoint))
        mounting.unmount_if_mounted(str(mountpoint))
    assert proc.returncode == 1, err
    assert expected in err, err
    assert "Traceback" not in err
    assert elapsed < FAULT_DEADLINE_S, f"the run went on {elapsed:.1f} s after the fault"
    # The runner cleaned up before it exited: nothing to wait for.
    assert_nothing_left(mountpoint, jobs)
    assert not list(out.glob("*.json")) and not list(out.glob("*.fio")), "a broken run left files"

    again = ringside("run", QUICK_SCENARIO, "-t", spec, "--runtime", "1", "--backing",
                     "memory:64M", "--mountpoint", str(mountpoint), "--out", str(out),
                     tmp=tmp_path, timeout=120 * SLOW)
    assert again.returncode == 0, again.stderr
    assert len(list(out.glob("*.json"))) == 1
    assert_nothing_left(mountpoint, jobs)


def test_sigint_mid_campaign_keeps_finished_runs_and_marks_the_cut_one(
    any_transport_spec, tmp_path
):
    require(fuse_usable())
    directory = tmp_path / "cut"
    proc = subprocess.Popen(
        [*RINGSIDE, "campaign", QUICK_SCENARIO, "-t", any_transport_spec, "--reps", "3",
         "--warmup", "0", "--runtime", "1", "--backing", "memory:64M", "--out", str(tmp_path),
         "--id", "cut", "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, TMPDIR=str(tmp_path)),
    )

    def second_run_in_fio() -> bool:
        results = [p for p in directory.glob("*.json") if p.name != "campaign.json"]
        return len(results) == 1 and bool(processes_mentioning(f"{directory}/"))

    try:
        wait_for(second_run_in_fio, 60, "the second run's fio", proc)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60 * SLOW)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(str(tmp_path))
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    manifest = json.loads((directory / "campaign.json").read_text())
    assert manifest["status"] == "interrupted"
    statuses = [r["status"] for r in manifest["runs"]]
    assert statuses == ["done", "interrupted", "pending"], statuses
    assert manifest["runs"][1]["error"]  # says what cut it
    assert len(load(directory)) == 1  # the finished run is kept and loads
    assert len(list(directory.glob("*.fio"))) == 1  # no job file without its result
    assert not [m.path for m in mounting.fuse_mounts() if m.path.startswith(str(tmp_path))]
    assert not processes_mentioning(str(tmp_path)), "a server or fio outlived the campaign"


@contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs of our own on `path`, always unmounted afterwards."""
    if os.geteuid() != 0:
        require("mounting a tmpfs needs root")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "ringside-test", str(path)],
                   check=True)
    try:
        yield path
    finally:
        mounting.unmount(str(path), lazy=True)


# -- a full backing filesystem --------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path) -> Iterator[Path]:
    """An 8 MiB tmpfs of our own, always unmounted after the test."""
    with _tmpfs(tmp_path / "small", "size=8M,mode=0755") as path:
        yield path


def _aligned(size: int) -> mmap.mmap:
    buf = mmap.mmap(-1, size)  # page aligned, as O_DIRECT wants
    buf.write(os.urandom(size))
    return buf


# A peer's own limitation is recorded, not hidden: the FUSE-over-io_uring series' export
# (Hanna Czenczek's coroutine export as the series' tree has it) answers no FUSE_STATFS, so
# statvfs on its mount fails with ENOSYS (QEMU 7.2's and 10.2.2's libfuse answers it).
NO_STATFS = {"qsd:build=cached-io-uring,io_uring=on"}


def test_full_backing_filesystem_reports_enospc_and_keeps_data(
    any_transport_spec, mountfile, small_fs
):
    image = small_fs / "image.raw"
    chunk = _aligned(MiB)
    written: list[int] = []  # offsets of the chunks that were accepted
    with served(any_transport_spec, mountfile, f"file:{image}", "--size", "32M") as server:
        fd = os.open(mountfile, os.O_RDWR | os.O_DIRECT)
        try:
            failure = None
            for i in range(32):  # 32 MiB image on 8 MiB of space
                try:
                    n = os.pwrite(fd, chunk, i * MiB)
                except OSError as e:
                    failure = e
                    break
                assert n == MiB
                written.append(i * MiB)
            assert failure is not None, "writes past the free space succeeded"
            assert failure.errno in (errno.ENOSPC, errno.EIO), failure
            assert 0 < len(written) < 32
            # The page-cache path too: the error reaches write() or, at the latest, fsync().
            with pytest.raises(OSError) as err:
                with open(mountfile, "r+b") as f:
                    f.seek(30 * MiB)
                    f.write(os.urandom(MiB))
                    f.flush()
                    os.fsync(f.fileno())
            assert err.value.errno in (errno.ENOSPC, errno.EIO)
            # Still serving: metadata, reads, and overwrites of space already allocated.
            assert os.stat(mountfile).st_size == 32 * MiB
            try:
                os.statvfs(mountfile)
            except OSError as e:
                if not (e.errno == errno.ENOSYS and any_transport_spec in NO_STATFS):
                    raise
            expected = {off: chunk[:] for off in written}
            for off in written:
                assert os.pread(fd, MiB, off) == expected[off]
            again = _aligned(MiB)
            assert os.pwrite(fd, again, written[0]) == MiB
            expected[written[0]] = again[:]
            assert os.pread(fd, MiB, written[0]) == expected[written[0]]
        finally:
            os.close(fd)
        assert server.stop() == 0, server.output
    assert mounting.find_mount(str(mountfile)) is None
    with open(image, "rb") as f:
        for off, data in expected.items():
            f.seek(off)
            assert f.read(MiB) == data, f"bytes at {off} were lost"


# -- malformed requests reach a live /dev/fuse loop -------------------------------------------
# The kernel never sends malformed requests, so they cannot come through a mount; the
# devfuse loop (shared with uring's /dev/fuse thread) is fed them over a SEQPACKET socket,
# which keeps message boundaries as /dev/fuse does. qsd and pyfuse3 parse requests in
# libfuse/QEMU, not in Ringside's codec: nothing of ours to feed there. The ring loop only
# takes entries from the kernel; test_codec fuzzes the codec in the ring's layout.
class LiveLoop:
    def __init__(self, export: Export):
        self.ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._theirs = theirs
        self.codec = Codec(export)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.unique = 1 << 40
        init = abi.INIT_IN_COMPAT.pack(abi.KERNEL_VERSION, abi.KERNEL_MINOR_VERSION, 0, 0)
        error, _ = self.call(abi.INIT, init + bytes(abi.INIT_IN.size - len(init)))
        assert error == 0

    def _run(self) -> None:
        try:
            devloop.serve_requests(self._theirs.fileno(), self.codec)
        except BrokenPipeError:
            pass  # our end closed: the way this loop is stopped
        except BaseException as e:
            self.failure = e

    def send(self, raw: bytes) -> None:
        self.ours.send(raw)

    def request(self, opcode: int, op: bytes, unique: int) -> bytes:
        length = abi.IN_HEADER.size + len(op)
        return abi.IN_HEADER.pack(length, opcode, unique, 1, 0, 0, 0, 0, 0) + op

    def replies_until(self, unique: int) -> list[tuple[int, int, bytes]]:
        """Replies (error, unique, data) up to and including the one for `unique`."""
        got = []
        self.ours.settimeout(10)
        while True:
            msg = self.ours.recv(2 * MiB)
            length, error, uniq = abi.OUT_HEADER.unpack_from(msg)
            assert length == len(msg), "reply length must match what was sent"
            assert -512 < error <= 0
            got.append((error, uniq, msg[abi.OUT_HEADER.size :]))
            if uniq == unique:
                return got

    def call(self, opcode: int, op: bytes) -> tuple[int, bytes]:
        self.unique += 2
        self.send(self.request(opcode, op, self.unique))
        error, _, data = self.replies_until(self.unique)[-1]
        return error, data

    def close(self) -> None:
        self.ours.close()
        self.thread.join(10)
        self._theirs.close()


@pytest.fixture(scope="module")
def live_loop() -> Iterator[LiveLoop]:
    export = Export(parse_backing("memory:1M"))
    loop = LiveLoop(export)
    yield loop
    loop.close()
    export.close()
    assert not loop.thread.is_alive()
    assert loop.failure is None, repr(loop.failure)


_OPS = sorted(abi.OPCODE_NAMES) + [0, 7, 53, 4096, 0xFFFFFFFF]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.one_of(
        st.binary(min_size=1, max_size=300),  # anything at all, even a torn header
        st.tuples(st.sampled_from(_OPS), st.binary(max_size=200), st.integers(-64, 64)).map(
            # a plausible header with a wrong length and any op body
            lambda t: struct.pack("<IIQ", max(0, 40 + len(t[1]) + t[2]), t[0], 7)
            + bytes(24) + t[1]
        ),
    )
)
def test_malformed_requests_get_error_replies_and_the_loop_keeps_serving(live_loop, raw):
    live_loop.send(raw)
    # Whatever the malformed request got, the next good request is answered properly.
    error, data = live_loop.call(abi.GETATTR, abi.GETATTR_IN.pack(0, 0))
    assert error == 0 and len(data) == abi.ATTR_OUT.size
    assert live_loop.thread.is_alive(), repr(live_loop.failure)
    assert live_loop.codec.exceptions == 0, live_loop.codec.last_exception


def test_malformed_requests_are_answered_with_errors(live_loop):
    short_read = live_loop.request(abi.READ, b"\x01" * 10, 99)
    live_loop.send(short_read)
    (error, unique, _), = live_loop.replies_until(99)
    assert unique == 99 and error == -errno.EINVAL
    live_loop.send(live_loop.request(4096, b"", 101))
    assert live_loop.replies_until(101)[-1][:2] == (-errno.ENOSYS, 101)
    live_loop.send(b"\x05\x00")  # a torn header: answered, as far as it can be, with EIO
    assert live_loop.replies_until(0)[-1][0] == -errno.EIO
    assert live_loop.call(abi.STATFS, b"")[0] == 0


# -- bad input: typos and unusable backings through every command -------------------------
def command_target(command: str, tmp_path: Path) -> list[str]:
    """What `command` needs besides the transport: a mountpoint, or a scenario and --out."""
    if command == "serve":
        return [str(tmp_path / "disk.img")]
    return [QUICK_SCENARIO, "--out", str(tmp_path / "o")]


@pytest.mark.parametrize("command", ["serve", "run", "campaign"])
@pytest.mark.parametrize(
    "spec, expected",
    [
        ("uring:depht=8", "unknown option 'depht' (did you mean 'depth'?); known options: "
                          "affinity, buffers, datapath, depth, zerocopy; "
                          "placement: cpus, idle_guard, sched"),
        ("uring:buffers=pined", "'pined' is not one of mapped, mlock, pool, pinned"),
        ("uring:depth=-1", "bad value depth='-1'"),
        ("uring:depth", "'depth' is not key=value"),
        ("devfuse:thread=2", "did you mean 'threads'?"),
        ("pyfuse3:depth=1", "known options: none; placement: cpus, idle_guard, sched"),
        ("qsd:depth=1", "known options: build, io_uring; placement: cpus, idle_guard, sched"),
        ("urnig", "did you mean 'uring'?"),
    ],
)
def test_transport_spec_typos_name_the_known_keys(command, spec, expected, tmp_path):
    proc = ringside(command, *command_target(command, tmp_path), "-t", spec, tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def read_only_fs(tmp_path) -> Iterator[Path]:
    """A tmpfs holding one image, remounted read-only: opening it for writing gives EROFS."""
    with _tmpfs(tmp_path / "ro", "size=4M") as path:
        with open(path / "image.raw", "wb") as f:
            f.truncate(MiB)
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path


@pytest.mark.parametrize("command", ["serve", "run", "campaign"])
def test_backing_that_cannot_be_opened(command, read_only_fs, tmp_path):
    image = read_only_fs / "image.raw"
    proc = ringside(command, *command_target(command, tmp_path), "-t", "devfuse",
                    "--backing", f"file:{image}", tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot open backing file {image}: Read-only file system" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert mounting.find_mount(str(tmp_path / "disk.img")) is None
    # Read-only is what it can do: offered as the fix, and it works.
    if command == "serve":
        with served("devfuse", tmp_path / "disk.img", f"file:{image}", "--read-only") as s:
            with open(s.path, "rb") as f:
                assert f.read(16) == bytes(16)

