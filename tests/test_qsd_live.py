"""qemu-storage-daemon built from source, serving for real: the cached builds
`ringside peers fetch qsd` made (precondition `qsd_build`) and the one with the
FUSE-over-io_uring series (`qsd_io_uring_build`). CI builds no QEMU: these skip there.
(Integrity and faults run these builds too: tests/conftest.py QSD_BUILD_TRANSPORTS.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from transports.base import TransportUnavailable, parse_spec
from transports.peers import qsd_build

pytestmark = pytest.mark.mount


def run(spec: str, tmp_path: Path, scenario: str = "randrw-4k-qd16-2jobs") -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", scenario, "-t", spec, "--backing",
         "memory:64M", "--runtime", "2", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(Path(proc.stdout.split()[-1]).read_text())


def path_check(data: dict) -> dict:
    return next(c for c in data["checks"] if c["name"] == "qsd_path")


@pytest.mark.needs("qsd_build")
def test_the_release_build_serves_legacy_and_records_itself(tmp_path):
    build = qsd_build.resolve("cached")
    assert build.stamp["source"]["write_copy_fix"]["present"] is True  # 10.x has the fix
    data = run("qsd:build=cached", tmp_path)
    used = data["transport_stats"]["build"]
    assert used["name"] == build.name and used["binary"] == build.binary
    assert used["patches"] is None and used["version"].startswith("qemu-storage-daemon")
    check = path_check(data)
    assert check["ok"] and not check["io_uring"]
    assert check["main_loop_share"] >= 0.99 and check["fio_bytes"] > 0


@pytest.mark.needs("qsd_build")
def test_a_build_without_the_option_refuses_io_uring_before_mounting():
    build = qsd_build.resolve("cached")
    with pytest.raises(TransportUnavailable) as e:
        parse_spec("qsd:build=cached,io_uring=on").create().check_available()
    assert build.binary in str(e.value) and "io-uring option" in str(e.value)


@pytest.mark.needs("qsd_io_uring_build", "fuse_over_io_uring")
@pytest.mark.parametrize("io_uring", ["on", "off"])
def test_the_series_build_proves_the_path_its_requests_took(tmp_path, io_uring):
    data = run(f"qsd:build=cached-io-uring,io_uring={io_uring}", tmp_path)
    used = data["transport_stats"]["build"]
    applied = used["patches"]["applied"]
    assert applied and all(len(p["sha256"]) == 64 and p["subject"] for p in applied)
    assert data["transport_stats"]["io_uring"] is (io_uring == "on")
    check = path_check(data)
    ios = data["summary"]["total_ios"]
    assert check["ok"], check["reason"]
    if io_uring == "on":
        assert check["ring_completions"] >= 0.99 * ios > 0
        assert check["main_loop_share"] <= 0.25
    else:
        assert check["main_loop_share"] >= 0.99 and ios > 0
