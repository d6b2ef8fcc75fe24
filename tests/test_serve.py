"""`ringside serve` as a user drives it: signals, stale mounts, bad input."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import PEER_TRANSPORTS, REPO, served
from transports.base import parse_spec
from transports.export.backing import parse_backing
from transports.export.image import Export, ExportOptions
from transports.fuse import mounting

pytestmark = pytest.mark.mount


def ringside(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _wait_unmounted(path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while mounting.find_mount(str(path)) is not None:
        assert time.monotonic() < deadline, f"{path} is still mounted"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_exits_cleanly_on_signal(any_transport_spec, mountfile, sig):
    transport_spec = any_transport_spec
    with served(transport_spec, mountfile, "memory:16M") as server:
        assert mounting.find_mount(str(mountfile)) is not None
        with open(mountfile, "r+b") as f:
            f.write(b"hello")
        assert server.stop(sig) == 0
        assert "unmounted" in server.output
    assert mounting.find_mount(str(mountfile)) is None
    stats = server.stats()
    if transport_spec not in PEER_TRANSPORTS:
        assert stats["requests"] > 0
    assert stats["export"]["size"] == 16 << 20


def test_every_transport_serves_the_filled_image(any_transport_spec, mountfile):
    # Peers get the export's own memfd: the same bytes as ours, not a copy or a hole.
    with Export(parse_backing("memory:8M"), ExportOptions(fill=True)) as reference:
        expected = reference.read(5 << 20, 64 << 10)
    assert expected.count(0) < len(expected) // 64
    with served(any_transport_spec, mountfile, "memory:8M", "--fill", "data"):
        fd = os.open(mountfile, os.O_RDONLY | os.O_DIRECT)
        try:
            buf = mmap.mmap(-1, 64 << 10)
            assert os.preadv(fd, [buf], 5 << 20) == 64 << 10
            assert bytes(buf) == expected
        finally:
            os.close(fd)


def test_serve_stops_when_unmounted_from_outside(any_transport_spec, mountfile):
    with served(any_transport_spec, mountfile, "memory:16M") as server:
        subprocess.run(["umount", "-l", str(mountfile)], check=True)
        assert server.proc.wait(timeout=20) == 0
    assert mounting.find_mount(str(mountfile)) is None


def test_stale_mount_of_killed_server_is_recovered(any_transport_spec, mountfile):
    transport_spec = any_transport_spec
    with served(transport_spec, mountfile, "memory:16M") as server:
        server.stop(signal.SIGKILL)
        peer = parse_spec(transport_spec).create() if transport_spec in PEER_TRANSPORTS else None
        if peer is not None and peer.death_signal() == signal.SIGTERM:
            # The peer daemon dies with its parent and unmounts by itself.
            _wait_unmounted(mountfile)
            return
        # The killed server could not unmount (a peer killed with its parent, too: its
        # connection is aborted as its ring goes): the file now answers ENOTCONN.
        assert mounting.find_mount(str(mountfile)) is not None
        deadline = time.monotonic() + 10
        while not mounting.is_stale(str(mountfile)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mounting.is_stale(str(mountfile))
        with served(transport_spec, mountfile, "memory:16M") as second:
            assert "stale FUSE mount" in second.output
            with open(mountfile, "rb") as f:
                assert f.read(4) == bytes(4)
    assert mounting.find_mount(str(mountfile)) is None


def test_mountpoint_in_use_is_refused(any_transport_spec, mountfile):
    with served(any_transport_spec, mountfile, "memory:16M"):
        proc = ringside("serve", str(mountfile), "--transport", "pyfuse3")
        assert proc.returncode == 2
        assert "in use" in proc.stderr and "umount" in proc.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--transport", "nosuch"], "unknown transport 'nosuch'"),
        (["--transport", "pyfuse"], "did you mean 'pyfuse3'"),
        (["--transport", "pyfuse3:depth=3"], "unknown option 'depth'"),
        (["--backing", "memory:12Q"], "cannot parse size '12Q'"),
        (["--backing", "disk:/x"], "use file:PATH or memory:SIZE"),
        (["--backing", "file:/nonexistent/dir/x.img"], "does not exist"),
        (["--backing", "file:/nonexistent/dir/x.img", "--size", "1M"], "cannot create"),
    ],
)
def test_bad_input_names_the_cause(mountfile, args, expected):
    proc = ringside("serve", str(mountfile), *args)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not mountfile.exists() or mounting.find_mount(str(mountfile)) is None


def test_directory_mountpoint_is_refused(tmp_path):
    proc = ringside("serve", str(tmp_path))
    assert proc.returncode == 2
    assert "is a directory" in proc.stderr


def test_unreadable_backing_is_refused(tmp_path, mountfile):
    image = tmp_path / "dir.img"
    image.mkdir()
    proc = ringside("serve", str(mountfile), "--backing", f"file:{image}")
    assert proc.returncode == 2
    assert "is a directory" in proc.stderr
    assert os.path.exists(image)
