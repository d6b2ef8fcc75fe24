"""Protocol 7.46 buffer modes of the uring transport: pool, pinned, zero-copy.

Two halves. On a kernel without FUSE_HAS_IO_URING_BUFPOOL (the 6.18 host, CI) every
pool mode must refuse before mounting, naming the kernel, its protocol minor and the way
out; those tests skip on a 7.3 kernel. On a kernel with pools (a 7.3 guest: `ringside
guest --kernel 7.3 -- .venv/bin/python -m pytest tests/test_uring_pools.py`) the modes
run for real: data integrity with fio verify, the kernel's pin seen in fdinfo, the
zero-copy share, no payload through the pool at 1 MiB, the memlock refusal. Those skip
on the host with the reason. The semantics, integrity and fault suites cover the same
modes through conftest.POOL_TRANSPORTS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_uring import (  # noqa: F401 (uring_on: a fixture, used by being imported)
    FIO_CASES,
    _data_share,
    _fio,
    fio_verify_on_the_ring,
    serving,
    uring_on,
)

from conftest import POOL_TRANSPORTS, REPO, bufpool_reason, fuse_usable, require, serve_child_code
from transports.fuse import mounting

# Every test here mounts: a pool mode's round trips, or the throwaway mount that probes
# the kernel's offer before a refusal.
pytestmark = pytest.mark.mount

POOL_MODES = [spec.partition(":")[2] for spec in POOL_TRANSPORTS]


def _kernel_has_pools() -> bool:
    return bufpool_reason() is None


@pytest.fixture
def pools() -> None:
    reason = bufpool_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def no_pools() -> None:
    require(fuse_usable())
    if _kernel_has_pools():
        pytest.skip("this kernel offers buffer pools: the refusal cannot be shown here")


def _harness(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


# -- a kernel without pools: refused before mounting ---------------------------------------
@pytest.mark.parametrize("mode", POOL_MODES)
def test_pool_modes_refuse_before_mounting_on_a_kernel_without_pools(no_pools, tmp_path, mode):
    from transports.fuse.init_probe import kernel_offer

    offer = kernel_offer()
    path = tmp_path / "disk.img"
    proc = _harness("serve", str(path), "-t", f"uring:{mode}", "--backing", "memory:16M")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    msg = proc.stderr
    assert "Traceback" not in msg
    assert f"Linux {os.uname().release}" in msg
    assert f"FUSE protocol 7.{offer.minor}" in msg and "FUSE_HAS_IO_URING_BUFPOOL" in msg
    assert "ringside guest --kernel 7.3" in msg and "buffers=mlock" in msg
    assert "throwaway mount" in msg  # says how it knows
    assert mounting.find_mount(str(path)) is None
    assert not [m for m in mounting.fuse_mounts() if "ringside-init-probe" in m.path]


def test_pinned_run_refuses_on_a_kernel_without_pools(no_pools, tmp_path):
    proc = _harness("run", "randread-4k-qd1", "-t", "uring:buffers=pinned", "--runtime", "1",
                    "--backing", "memory:16M", "--out", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr
    assert "ringside guest --kernel 7.3" in proc.stderr and "buffers=mlock" in proc.stderr
    assert not list((tmp_path / "out").glob("*.json")), "a refused run wrote a result"


def test_zerocopy_needs_a_pool(tmp_path):
    require(fuse_usable())
    path = tmp_path / "disk.img"
    proc = _harness("serve", str(path), "-t", "uring:buffers=mapped,zerocopy=on",
                    "--backing", "memory:16M")
    assert proc.returncode == 1
    assert "zerocopy=on needs a pool: use buffers=pool or buffers=pinned" in proc.stderr
    assert mounting.find_mount(str(path)) is None


# -- a kernel with pools (7.3 guest) --------------------------------------------------------
def _direct_io(path: Path, size: int, chunk: int) -> None:
    """Write then read back `size` bytes in `chunk` pieces with O_DIRECT: every piece is
    one READ or WRITE request with page payload."""
    import mmap

    buf = mmap.mmap(-1, chunk)
    pattern = bytes((i * 7 + 3) & 0xFF for i in range(251))
    buf.write((pattern * (chunk // len(pattern) + 1))[:chunk])
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        for off in range(0, size, chunk):
            assert os.pwritev(fd, [buf], off) == chunk
        back = mmap.mmap(-1, chunk)
        for off in range(0, size, chunk):
            assert os.preadv(fd, [back], off) == chunk
            assert back[:] == buf[:], f"data differs at {off}"
    finally:
        os.close(fd)


@pytest.mark.parametrize("mode", POOL_MODES)
def test_pool_mode_round_trip_and_counters(pools, tmp_path, mode):
    path = tmp_path / "disk.img"
    with serving(path, f"uring:{mode}") as server:
        _direct_io(path, 8 << 20, 128 << 10)
        stats = server.stats()
    server.wait_returned()
    settings = stats["settings"]
    assert settings["buffers"] == mode.split(",")[0].split("=")[1]
    assert stats["kernel_offer"]["protocol"].startswith("7.")
    ring, dev = _data_share(stats)
    assert ring >= 0.99 * (ring + dev)
    totals = stats["buffers"]
    for q in stats["per_queue"]:
        r = q["ring"]
        assert r["buffer_mode"] in ("pool", "registered pool")
        assert r["pool_slots"] == settings["depth"] and r["slot_size"] == settings["payload_buffer"]
        assert 0 <= r["slots_hwm"] <= r["pool_slots"] and r["slots_in_use"] == 0
    if "zerocopy=on" in mode:
        assert totals["zero_copy_share"] >= 0.99, totals
        # 64 writes and 64 reads of 128 KiB, all through READ_FIXED / WRITE_FIXED
        assert totals["zc_bytes"] >= 2 * (8 << 20), totals
        assert totals["copied_bytes"] == 0, totals
    else:
        assert totals["zc_requests"] == 0 and totals["fixed_ios"] == 0
        assert totals["copied_bytes"] >= 2 * (8 << 20), totals
        assert totals["slots_hwm"] >= 1
    if "pinned" in mode:
        for q in stats["per_queue"]:
            reg = q["registration"]
            assert reg["pool_registered"], reg
            assert any(int(addr, 16) == int(reg["pool_address"], 16) and n >= reg["pool_bytes"]
                       for _i, addr, n in reg["user_bufs"]), reg
        assert "kernel" in stats["pinning"]


@pytest.mark.parametrize("mode", POOL_MODES)
@pytest.mark.parametrize("case", sorted(FIO_CASES))
def test_pool_mode_fio_verify(pools, tmp_path, mode, case):
    path = tmp_path / "disk.img"
    depth = ",depth=64" if case == "qd64" else ""
    with serving(path, f"uring:{mode}{depth}") as server:
        stats = fio_verify_on_the_ring(server, path, tmp_path, case)
        if "zerocopy=on" in mode:
            assert stats["buffers"]["zero_copy_share"] >= 0.99, stats["buffers"]
    server.wait_returned()


@pytest.mark.parametrize("buffers", ["pool", "pinned"])
def test_zero_copy_1m_reads_move_no_payload_through_the_pool(pools, tmp_path, buffers):
    path = tmp_path / "disk.img"
    with serving(path, f"uring:buffers={buffers},zerocopy=on") as server:
        before = server.stats()["buffers"]
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            import mmap

            buf = mmap.mmap(-1, 1 << 20)
            for off in range(0, 32 << 20, 1 << 20):
                assert os.preadv(fd, [buf], off) == 1 << 20
        finally:
            os.close(fd)
        after = server.stats()["buffers"]
    server.wait_returned()
    assert after["zc_requests"] - before["zc_requests"] >= 32
    assert after["zc_bytes"] - before["zc_bytes"] == 32 << 20
    assert after["copied_bytes"] == before["copied_bytes"], (before, after)




def test_pinned_refuses_under_a_lowered_memlock_limit(pools, tmp_path):
    if shutil.which("setpriv") is None or shutil.which("prlimit") is None:
        require("setpriv / prlimit (util-linux) are missing")
    path = tmp_path / "disk.img"
    path.touch()
    cmd = [sys.executable, "-c", serve_child_code("uring:buffers=pinned"), str(path)]
    if os.geteuid() == 0:  # CAP_IPC_LOCK lifts the limit: drop it, as for a user
        cmd = ["setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", *cmd]
    limit = 1 << 20
    proc = subprocess.run(["prlimit", f"--memlock={limit}:{limit}", *cmd], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    msg = proc.stdout
    assert "buffers=pinned needs" in msg and "memory pinned by io_uring" in msg
    assert "RLIMIT_MEMLOCK is 1048576 bytes" in msg and "ulimit -l" in msg
    assert mounting.find_mount(str(path)) is None


def test_pinned_without_cap_ipc_lock_is_charged_and_proven(pools, tmp_path):
    """As a server without CAP_IPC_LOCK (an ordinary user's case) io_uring charges the
    pools to RLIMIT_MEMLOCK: the result's pinned check must see VmPin cover them."""
    if shutil.which("setpriv") is None or shutil.which("prlimit") is None:
        require("setpriv / prlimit (util-linux) are missing")
    limit = 64 << 20
    cmd = [sys.executable, "-m", "harness", "run", "randread-4k-qd1", "-t",
           "uring:buffers=pinned", "--runtime", "1", "--backing", "memory:64M",
           "--out", str(tmp_path / "out")]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", *cmd]
    proc = subprocess.run(["prlimit", f"--memlock={limit}:{limit}", *cmd], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (result,) = (tmp_path / "out").glob("*.json")
    import json

    data = json.loads(result.read_text())
    checks = {c["name"]: c for c in data["checks"]}
    pinned = checks["pinned"]
    assert pinned["ok"] and pinned["charged"], pinned
    assert pinned["pinned_bytes"] >= pinned["needed_bytes"] > 0, pinned
    assert pinned["queues_registered"] == pinned["queues"] > 0
