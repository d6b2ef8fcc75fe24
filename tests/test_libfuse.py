"""The `libfuse` peer: libfuse's passthrough_hp, refused clearly without a usable build.

The live tests need a libfuse >= 3.18 build ($RINGSIDE_LIBFUSE_BUILD), which Ringside
never ships or builds; without one they are skipped, the refusals are always tested.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, served
from transports import proofs
from transports.base import TransportUnavailable, parse_spec
from transports.fuse import mounting
from transports.peers.libfuse import ENV_BUILD, find_build
from transports.statistics import LibfuseStatistics, PeerStatistics

BUILD = os.environ.get(ENV_BUILD)


def fake_build(tmp_path: Path, version: str, uring: bool) -> Path:
    """A directory shaped like a meson build of libfuse (no libfuse code in it)."""
    (tmp_path / "meson-info").mkdir()
    (tmp_path / "meson-info" / "intro-projectinfo.json").write_text(
        json.dumps({"version": version, "descriptive_name": "libfuse3"})
    )
    (tmp_path / "example").mkdir()
    server = tmp_path / "example" / "passthrough_hp"
    server.write_text("#!/bin/sh\nexit 1\n")
    server.chmod(0o755)
    (tmp_path / "fuse_config.h").write_text("#define HAVE_URING\n" if uring else "\n")
    return tmp_path


def check(spec: str) -> None:
    parse_spec(spec).create().check_available()


def test_refuses_without_a_build(monkeypatch):
    monkeypatch.delenv(ENV_BUILD, raising=False)
    with pytest.raises(TransportUnavailable, match="no libfuse build is configured.*meson setup"):
        check("libfuse:mode=legacy")


def test_refuses_a_directory_that_is_not_a_build(tmp_path):
    with pytest.raises(TransportUnavailable, match="not a meson build directory"):
        check(f"libfuse:build={tmp_path}")
    with pytest.raises(TransportUnavailable, match="does not exist"):
        check(f"libfuse:build={tmp_path / 'nowhere'}")


def test_refuses_libfuse_older_than_3_18(tmp_path):
    build = fake_build(tmp_path, "3.14.0", uring=False)
    with pytest.raises(TransportUnavailable, match=r"libfuse 3.14.0 .* too old.*3\.18"):
        check(f"libfuse:build={build}")


def test_uring_mode_needs_a_build_with_io_uring(tmp_path):
    build = fake_build(tmp_path, "3.18.1", uring=False)
    assert find_build(str(build)).io_uring is False
    with pytest.raises(TransportUnavailable, match="without io_uring.*-Denable-io-uring=true"):
        check(f"libfuse:build={build},mode=uring")
    if os.geteuid() == 0:
        check(f"libfuse:build={build},mode=legacy")


def test_doctor_says_how_to_build_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != ENV_BUILD}
    out = subprocess.run([sys.executable, "-m", "harness", "doctor"], cwd=REPO, env=env,
                         capture_output=True, text=True).stdout
    assert "libfuse build" in out and f"{ENV_BUILD} is not set" in out and "meson setup" in out
    env[ENV_BUILD] = str(fake_build(tmp_path, "3.19.0", uring=True))
    out = subprocess.run([sys.executable, "-m", "harness", "doctor"], cwd=REPO, env=env,
                         capture_output=True, text=True).stdout
    assert "libfuse 3.19.0 with io_uring in" in out


# -- live: a real libfuse build ---------------------------------------------------------
needs_build = pytest.mark.skipif(not BUILD, reason=f"{ENV_BUILD} names no libfuse build")


def _ours(prefix: str = "/tmp/ringside-libfuse-") -> list[str]:
    return [m.path for m in mounting.mounts() if m.path.startswith(prefix)]


@needs_build
@pytest.mark.parametrize("mode", ["legacy", "uring"])
def test_serves_the_image_and_leaves_nothing(mountfile, mode):
    before = set(_ours())
    with served(f"libfuse:mode={mode}", mountfile, "memory:16M") as server:
        assert mounting.find_mount(str(mountfile)).fstype.startswith("fuse")
        assert os.stat(mountfile).st_size == 16 << 20
        with open(mountfile, "r+b") as f:
            f.write(b"through libfuse")
            f.flush()
            os.fsync(f.fileno())
            f.seek(0)
            assert f.read(15) == b"through libfuse"
        assert server.stop() == 0
    assert mounting.find_mount(str(mountfile)) is None
    assert set(_ours()) == before
    stats = server.stats()
    assert stats["ring_expected"] is (mode == "uring")
    assert stats["io_uring_at_init"] in (("on",) if mode == "uring" else ("off:disabled", None))


@needs_build
def test_a_killed_serve_leaves_no_program_and_no_private_mount(mountfile):
    before = set(_ours())
    dirs = set(glob.glob("/tmp/ringside-libfuse-*"))
    with served("libfuse:mode=uring", mountfile, "memory:16M") as server:
        program = int(server.ready_line.rsplit("server pids ", 1)[1].split(")")[0])
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        deadline = time.monotonic() + 20
        while os.path.exists(f"/proc/{program}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{program}"), "passthrough_hp outlived its parent"
        assert set(_ours()) == before  # its directory is unmounted, our tmpfs was detached
        # The bind mount on the mountpoint is stale now: the next server recovers it.
        assert mounting.is_stale(str(mountfile))
    assert mounting.find_mount(str(mountfile)) is None
    # What a killed serve cannot remove: its private directory, empty (the image's copy
    # lived in the detached tmpfs and went with the program).
    for work in set(glob.glob("/tmp/ringside-libfuse-*")) - dirs:
        assert sorted(os.listdir(work)) == ["mnt", "src"]
        for sub in ("mnt", "src"):
            assert os.listdir(os.path.join(work, sub)) == []
            os.rmdir(os.path.join(work, sub))
        os.rmdir(work)


@needs_build
def test_run_proves_which_path_carried_the_requests(tmp_path):
    for mode in ("uring", "legacy"):
        proc = subprocess.run(
            [sys.executable, "-m", "harness", "run", "randread-4k-qd1", "-t",
             f"libfuse:mode={mode}", "--backing", "memory:32M", "--runtime", "1",
             "--out", str(tmp_path)],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        data = json.loads(Path(proc.stdout.split()[-1]).read_text())
        check = next(c for c in data["checks"] if c["name"] == "peer_ring")
        ios = data["summary"]["total_ios"]
        if mode == "uring":
            assert check["ring_completions"] >= 0.99 * ios > 0
        else:
            assert check["ring_completions"] == 0
        assert data["derived"]["server_cpu_us_per_io"] > 0


def peer_stats(**fields) -> LibfuseStatistics:
    return LibfuseStatistics("libfuse", {}, {}, requests=None, **fields)


def peer_ring_check(stats: LibfuseStatistics, window: dict, ios: int) -> dict | None:
    """The peer_ring check as the runner runs it, or None when libfuse declares none."""
    from harness.runner import CheckError, check_statistics

    if proofs.peer_ring not in stats.checks():
        return None
    (result,) = proofs.run_proofs(stats, proofs.ProofContext(window, ios))
    if result["ok"]:
        assert check_statistics(stats, proofs.ProofContext(window, ios)) == [result]
    else:
        with pytest.raises(CheckError, match="^peer_ring check failed: "):
            check_statistics(stats, proofs.ProofContext(window, ios))
    return result


def test_peer_ring_check_needs_the_rings_to_carry_the_io():
    assert peer_ring_check(peer_stats(), {"ring_completions": 5}, 10) is None  # no claim
    uring = peer_stats(ring_expected=True)
    assert peer_ring_check(uring, {"ring_completions": 1003}, 1000)["ok"]
    short = peer_ring_check(uring, {"ring_completions": 900}, 1000)
    assert not short["ok"] and "900 completions for 1000 fio I/Os" in short["reason"]
    assert not peer_ring_check(uring, {"ring_completions": None}, 1000)["ok"]
    assert not peer_ring_check(uring, {}, 0)["ok"]  # no fio I/O: nothing proven
    legacy = peer_stats(ring_expected=False)
    assert peer_ring_check(legacy, {"ring_completions": None}, 1000)["ok"]
    assert not peer_ring_check(legacy, {"ring_completions": 12}, 1000)["ok"]
    # qsd and external declare no proof: nothing says how they serve.
    assert PeerStatistics("qsd", {}, {}, requests=None).checks() == []


def test_an_io_uring_peers_rings_count_its_requests_for_coverage():
    from harness.runner import request_coverage

    peer = peer_stats(ring_expected=True)
    covered = request_coverage(peer, 1000, ring_requests=1003)
    assert covered["requests_per_io"] == pytest.approx(1.003) and covered["warning"] is None
    assert "absorbed" in request_coverage(peer, 1000, ring_requests=10)["warning"]
    assert "coverage unknown" in request_coverage(peer, 1000)["warning"]
