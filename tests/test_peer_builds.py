"""`ringside peers fetch`'s pieces without building: version choice, the stamp that makes
a directory a build, refusal of half-built ones, a failed build's report, no network.
(CI's `make peers` fetches and builds for real; tests/test_libfuse.py uses that build.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.commands import peers as peers_command
from harness.peer_builds import BuildError, libfuse, meson
from harness.peer_builds import cache as cache_dir
from harness.peer_builds.debian_source import choose_version, upstream_of
from transports.peers import builds

UNREACHABLE = "http://127.0.0.1:9/debian"  # connection refused at once: no network


@pytest.fixture(autouse=True)
def no_apt_retries(tmp_path_factory, monkeypatch):
    """apt retries a refused connection 3 times with backoff (7 s): once is enough here."""
    conf = tmp_path_factory.mktemp("apt") / "apt.conf"
    conf.write_text('Acquire::Retries "0";\n')
    monkeypatch.setenv("APT_CONFIG", str(conf))


def test_upstream_versions_and_their_order():
    assert upstream_of("3.18.3-1") == "3.18.3" and upstream_of("1:3.18.3-2+b1") == "3.18.3"
    assert upstream_of("3.18.3") == "3.18.3"
    ordered = ["3.9.0", "3.18.0~rc1", "3.18.0", "3.18.3", "3.18.10", "4.0"]
    assert sorted(reversed(ordered), key=builds.version_key) == ordered


def test_version_choice_lists_what_the_archive_has():
    available = ["3.17.4-1", "3.18.3-1", "3.18.3-2"]
    assert choose_version(None, available, "sid") == "3.18.3-2"
    assert choose_version("3.18.3", available, "sid") == "3.18.3-2"
    assert choose_version("3.18.3-1", available, "sid") == "3.18.3-1"
    with pytest.raises(BuildError) as e:
        choose_version("3.99.0", available, "Debian sid fuse3")
    assert str(e.value) == ("Debian sid fuse3 has no version 3.99.0; it has: 3.17.4 (Debian "
                            "3.17.4-1), 3.18.3 (Debian 3.18.3-1), 3.18.3 (Debian 3.18.3-2)")
    with pytest.raises(BuildError, match="has no such source package"):
        choose_version(None, [], "sid")


def stamped(cache: Path, version: str, stamp_version: str | None = None) -> Path:
    root = builds.root_of("libfuse", version, cache)
    (root / "build").mkdir(parents=True)
    builds.write_stamp(root, {"program": "libfuse", "version": stamp_version or version})
    return root


def test_a_directory_is_a_build_only_with_its_own_stamp(tmp_path):
    stamped(tmp_path, "3.18.3")
    stamped(tmp_path, "3.18.1", stamp_version="3.17.0")  # renamed by hand, or reused
    (tmp_path / "libfuse-3.19.0" / "build").mkdir(parents=True)  # half-built, no stamp
    (tmp_path / "libfuse-3.19.1").mkdir()
    (tmp_path / "libfuse-3.19.1" / builds.STAMP).write_text('{"program": "qsd", "version": '
                                                           '"3.19.1"}')
    found, not_builds = builds.scan("libfuse", tmp_path)
    assert [b.version for b in found] == ["3.18.3"]
    assert [p.name for p in not_builds] == ["libfuse-3.18.1", "libfuse-3.19.0", "libfuse-3.19.1"]
    assert builds.newest("libfuse", tmp_path).root.name == "libfuse-3.18.3"
    assert not list(tmp_path.glob(f"*/.{builds.STAMP}.tmp"))


def test_if_missing_uses_the_cache_without_the_network(tmp_path):
    root = stamped(tmp_path, "3.18.3")
    log: list[str] = []
    assert libfuse.fetch(mirror=UNREACHABLE, cache=tmp_path, if_missing=True, log=log.append
                         ).root == root
    assert libfuse.fetch("3.18.3", mirror=UNREACHABLE, cache=tmp_path, if_missing=True).root == root
    assert log == []
    # Another version, or no complete build: it has to fetch, and says why it cannot.
    with pytest.raises(BuildError, match=r"cannot read Debian sid.*no network"):
        libfuse.fetch("3.17.0", mirror=UNREACHABLE, cache=tmp_path, if_missing=True,
                      log=log.append)


def test_a_fetch_removes_what_an_interrupted_one_left(tmp_path):
    leftover = tmp_path / f"{libfuse.BUILDING_PREFIX}3.18.3-abcd"
    (leftover / "build").mkdir(parents=True)
    log: list[str] = []
    with pytest.raises(BuildError, match="no network"):
        libfuse.fetch(mirror=UNREACHABLE, cache=tmp_path, log=log.append)
    assert not leftover.exists() and "left by an interrupted fetch" in log[0]
    assert builds.scan("libfuse", tmp_path) == ([], [])


def test_a_complete_build_replaces_a_directory_that_is_not_one(tmp_path):
    root = builds.root_of("libfuse", "3.18.3", tmp_path)
    (root / "build").mkdir(parents=True)
    (root / "build" / "old").write_text("half")
    work = stamped(tmp_path / "w", "3.18.3")
    log: list[str] = []
    cache_dir.move_into_place("libfuse", work, root, log.append)
    assert builds.read_stamp(root, "libfuse") and not (root / "build" / "old").exists()
    assert "not a build" in log[0] and not work.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["libfuse-3.18.3", "w"]


def test_a_build_without_its_server_is_refused(tmp_path):
    with pytest.raises(BuildError, match="the build made no example/passthrough_hp"):
        libfuse._check_build(tmp_path, "3.18.3", tmp_path / "log")


def test_a_failed_build_shows_its_log_tail_and_path(tmp_path):
    fake = tmp_path / "meson"
    fake.write_text("#!/bin/sh\nfor i in $(seq 1 40); do echo line $i; done\n"
                    "echo 'ERROR: Dependency \"liburing\" not found'\nexit 1\n")
    fake.chmod(0o755)
    (tmp_path / "src").mkdir()
    log_path = tmp_path / "build.log"
    with pytest.raises(BuildError) as e:
        meson.build(str(fake), tmp_path / "src", tmp_path / "b", ["-Dtests=false"], log_path)
    message = str(e.value)
    assert message.startswith(f"`{fake} setup` failed (exit 1)")
    assert 'ERROR: Dependency "liburing" not found' in message and "line 40" in message
    assert "line 10\n" not in message and message.endswith(f"full log: {log_path}")
    assert "line 1\n" in log_path.read_text()


def test_the_meson_minimum_comes_from_the_project(tmp_path):
    (tmp_path / "meson.build").write_text("project('x', ['c'],\n  version: '1',\n"
                                          "  meson_version: '>= 0.60.0',\n)\n")
    assert meson.required_version(tmp_path) == "0.60.0"
    with pytest.raises(BuildError, match="not a meson project"):
        meson.required_version(tmp_path / "none")


def test_list_shows_builds_the_default_and_what_is_not_a_build(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(builds, "CACHE_DIR", tmp_path)
    monkeypatch.delenv("RINGSIDE_LIBFUSE_BUILD", raising=False)
    peers_command.run_list(None)
    assert "no libfuse build in" in capsys.readouterr().out
    for version in ("3.18.1", "3.18.3"):
        root = stamped(tmp_path, version)
        stamp = json.loads((root / builds.STAMP).read_text())
        stamp["source"] = {"package": "fuse3", "debian_version": f"{version}-1",
                           "archive": "http://m.example/debian sid", "sha256": "ab" * 32}
        builds.write_stamp(root, stamp)
    (tmp_path / "libfuse-3.19.0").mkdir()
    peers_command.run_list(None)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("libfuse 3.18.1: ") and not lines[0].endswith("[default]")
    assert lines[1].startswith("libfuse 3.18.3: ") and lines[1].endswith("[default]")
    assert "fuse3 3.18.3-1 from http://m.example/debian sid" in lines[1]
    assert "libfuse-3.19.0: not a build" in lines[2]
    monkeypatch.setenv("RINGSIDE_LIBFUSE_BUILD", os.fspath(tmp_path / "own"))
    peers_command.run_list(None)
    out = capsys.readouterr().out
    assert "[default]" not in out and "uses $RINGSIDE_LIBFUSE_BUILD=" in out
