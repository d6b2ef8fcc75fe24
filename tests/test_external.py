"""`external:COMMAND`: a user's own server measured like every transport (here: our own
devfuse server started as a foreign command, so the test needs nothing else installed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, fuse_usable, require, served
from transports.base import SpecError, parse_spec
from transports.fuse import mounting

pytestmark = pytest.mark.mount

FOREIGN = f"external:{sys.executable} -m harness serve {{mountpoint}} -t devfuse " \
          "--backing file:{image}"


def test_external_serves_and_stops(mountfile):
    with served(FOREIGN, mountfile, "memory:16M") as server:
        with open(mountfile, "r+b") as f:
            f.write(b"from a foreign server")
            f.seek(0)
            assert f.read(21) == b"from a foreign server"
        assert server.stop() == 0
    assert mounting.find_mount(str(mountfile)) is None
    stats = server.stats()
    assert stats["transport"] == "external" and stats["requests"] is None
    left = subprocess.run(["pgrep", "-f", f"harness serve {mountfile}"], capture_output=True,
                          text=True)
    assert left.stdout.strip() == ""


def test_external_run_writes_a_result(tmp_path):
    require(fuse_usable())
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", "randread-4k-qd1", "-t", FOREIGN,
         "--backing", "memory:32M", "--runtime", "1", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(Path(proc.stdout.split()[-1]).read_text())
    assert data["transport"]["name"] == "external"
    assert data["summary"]["directions"]["read"]["iops"] > 0
    # The measured process is the foreign server itself, not our watcher.
    assert data["server"]["measured_pids"] != [data["server"]["pid"]]


@pytest.mark.parametrize("text, message", [
    ("external:", "give the command"),
    ("external:my-server {image}", "must contain {mountpoint}"),
])
def test_external_spec_errors(text, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(text)


def test_external_command_keeps_commas_and_equals():
    spec = parse_spec("external:srv -o a=1,b=2 {mountpoint}")
    assert spec.settings["command"] == "srv -o a=1,b=2 {mountpoint}"


def test_external_that_never_mounts_fails_clearly(mountfile):
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "serve", str(mountfile), "-t",
         "external:echo no mount here {mountpoint}; exit 3"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "exited with 3 before mounting" in proc.stderr and "no mount here" in proc.stderr
