"""The `libfuse` peer: libfuse's passthrough_hp, refused clearly without a usable build.

The live tests need a libfuse >= 3.18 build the transport finds by itself: the newest in
the checkout's cache (`ringside peers fetch libfuse`, which `make test` and CI run), or
$RINGSIDE_LIBFUSE_BUILD (precondition `libfuse_build`); the refusals are always tested.
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

from conftest import ON_CI, REPO, served
from harness import doctor
from transports import proofs
from transports.base import TransportUnavailable, parse_spec
from transports.fuse import mounting
from transports.peers import builds
from transports.peers.libfuse import ENV_BUILD, find_build, resolve_build
from transports.statistics import LibfuseStatistics, PeerStatistics


def fake_build(tmp_path: Path, version: str, uring: bool) -> Path:
    """A directory shaped like a meson build of libfuse (no libfuse code in it)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
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


def cached_build(cache: Path, version: str, *, stamp_version: str | None = None,
                 stamped: bool = True) -> Path:
    """A cache entry as `ringside peers fetch` leaves it (fake build, real stamp format)."""
    root = cache / f"libfuse-{version}"
    root.mkdir(parents=True)
    fake_build(root / builds.BUILD_SUBDIR, version, uring=True)
    if stamped:
        builds.write_stamp(root, {"program": "libfuse", "version": stamp_version or version,
                                  "source": {"sha256": "ab" * 32}})
    return root


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """No $RINGSIDE_LIBFUSE_BUILD and an empty peers cache: only what the test puts there."""
    monkeypatch.delenv(ENV_BUILD, raising=False)
    cache = tmp_path / "peers"
    monkeypatch.setattr(builds, "CACHE_DIR", cache)
    return cache


def test_refuses_without_a_build(empty_cache):
    with pytest.raises(TransportUnavailable, match=f"no libfuse build: none in {empty_cache}"
                       ".*ringside peers fetch libfuse"):
        check("libfuse:mode=legacy")


def test_uses_the_newest_complete_cached_build(empty_cache):
    cached_build(empty_cache, "3.18.1")
    cached_build(empty_cache, "3.19.0")
    cached_build(empty_cache, "3.9.9")  # older, though it sorts last as text
    cached_build(empty_cache, "3.20.0", stamped=False)  # half-built: no stamp
    cached_build(empty_cache, "3.21.0", stamp_version="3.17.0")  # another version's stamp
    build = resolve_build(None)
    assert build.version == "3.19.0" and build.directory.endswith("libfuse-3.19.0/build")
    assert "newest complete build in" in build.chosen_by and build.stamp["source"]
    found, not_builds = builds.scan("libfuse")
    assert [b.version for b in found] == ["3.9.9", "3.18.1", "3.19.0"]
    assert sorted(p.name for p in not_builds) == ["libfuse-3.20.0", "libfuse-3.21.0"]


def test_a_given_build_overrides_the_cache(empty_cache, tmp_path, monkeypatch):
    cached_build(empty_cache, "3.19.0")
    own = fake_build(tmp_path / "own", "3.18.2", uring=True)
    monkeypatch.setenv(ENV_BUILD, str(own))
    assert (resolve_build(None).version, resolve_build(None).chosen_by) == (
        "3.18.2", f"${ENV_BUILD}")
    given = resolve_build(str(empty_cache / "libfuse-3.19.0" / "build"))
    assert (given.version, given.chosen_by, given.stamp) == ("3.19.0", "build= setting", None)


def test_only_stamped_caches_count(empty_cache):
    cached_build(empty_cache, "3.18.3", stamped=False)
    with pytest.raises(TransportUnavailable, match="no libfuse build"):
        resolve_build(None)
    (empty_cache / "libfuse-3.18.3" / builds.STAMP).write_text("{not json")
    assert builds.newest("libfuse") is None


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


def test_doctor_says_how_to_build_one(empty_cache, tmp_path, monkeypatch):
    cap = doctor.check_libfuse()
    assert not cap.ok and cap.state == "none found" and "ringside peers fetch libfuse" in cap.fix
    cached_build(empty_cache, "3.18.3")
    cap = doctor.check_libfuse()
    assert cap.ok and "libfuse 3.18.3 with io_uring in" in cap.state
    assert "newest complete build" in cap.state
    monkeypatch.setenv(ENV_BUILD, str(fake_build(tmp_path / "own", "3.19.0", uring=True)))
    assert "libfuse 3.19.0 with io_uring in" in doctor.check_libfuse().state


# -- live: a real libfuse build ---------------------------------------------------------
needs_build = pytest.mark.needs("libfuse_build")


@needs_build
def test_the_real_cached_build_is_whole_and_chosen(monkeypatch):
    cached = builds.newest("libfuse")
    if cached is None:  # the precondition was met by $RINGSIDE_LIBFUSE_BUILD alone
        (pytest.fail if ON_CI else pytest.skip)("no build in the cache: `make peers`")
    monkeypatch.delenv(ENV_BUILD, raising=False)
    build = resolve_build(None)
    assert build.directory == str(cached.build_dir) and build.io_uring
    assert build.version == cached.version == cached.stamp["version"]
    assert len(cached.stamp["source"]["sha256"]) == 64


def _ours(prefix: str = "/tmp/ringside-libfuse-") -> list[str]:
    return [m.path for m in mounting.mounts() if m.path.startswith(prefix)]


@pytest.mark.mount
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
    # Only libfuse after 3.18 prints FUSE_INIT's outcome (None: not said); that the rings
    # carried the requests is proven by their completions (test_run_proves_...).
    assert stats["io_uring_at_init"] in (("on", None) if mode == "uring"
                                         else ("off:disabled", None))


@pytest.mark.mount
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


@pytest.mark.mount
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
        used = data["transport_stats"]["build"]
        assert used["directory"] == str(resolve_build(None).directory) and used["chosen_by"]
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
    from harness.point.runner import CheckError, check_statistics

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
    from harness.point.runner import request_coverage

    peer = peer_stats(ring_expected=True)
    covered = request_coverage(peer, 1000, ring_requests=1003)
    assert covered["requests_per_io"] == pytest.approx(1.003) and covered["warning"] is None
    assert "absorbed" in request_coverage(peer, 1000, ring_requests=10)["warning"]
    assert "coverage unknown" in request_coverage(peer, 1000)["warning"]
