"""A machine without udev: /dev/fuse stays 0600. `make setup`'s host step fixes it the way
Debian's udev rule would, doctor says so, and the suite reports the lack once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.mount  # root: it changes /dev/fuse's mode

HOST_SETUP = REPO / ".ci" / "host-setup.sh"


def udev_running() -> bool:
    if os.path.exists("/run/udev/control"):
        return True
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in ("systemd-udevd", "udevd"):
                return True
        except OSError:
            continue
    return False


@contextmanager
def dev_fuse_mode(mode: int) -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("changing /dev/fuse's mode needs root")
    before = os.stat("/dev/fuse").st_mode & 0o7777
    os.chmod("/dev/fuse", mode)
    try:
        yield
    finally:
        os.chmod("/dev/fuse", before)


def doctor_line(name: str) -> str:
    """doctor's line for capability `name`, with its fix line when it has one."""
    out = subprocess.run([sys.executable, "-m", "harness", "doctor"], cwd=REPO,
                         capture_output=True, text=True).stdout.splitlines()
    i = next(i for i, line in enumerate(out) if f" {name} " in line)
    fix = out[i + 1] if i + 1 < len(out) and out[i + 1].lstrip().startswith("fix:") else ""
    return out[i] + "\n" + fix


def test_host_setup_gives_dev_fuse_to_users_without_udev():
    if udev_running():
        pytest.skip("udev runs here: the host step leaves /dev/fuse to its rules")
    with dev_fuse_mode(0o600):
        before = doctor_line("/dev/fuse for users")
        assert "mode 0600" in before and "chmod 0666 /dev/fuse" in before
        out = subprocess.run(["bash", str(HOST_SETUP)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        lines = [ln for ln in out.stdout.splitlines() if "/dev/fuse" in ln]
        assert lines == ["/dev/fuse was 600 with no udev running: set 0666, as Debian's "
                         "udev rule would"]
        assert os.stat("/dev/fuse").st_mode & 0o777 == 0o666
        assert "ordinary users can open it" in doctor_line("/dev/fuse for users")
        again = subprocess.run(["bash", str(HOST_SETUP)], capture_output=True, text=True)
        assert "/dev/fuse" not in again.stdout  # nothing to do the second time


def test_host_setup_leaves_fusectl_as_it_found_it():
    """fusectl is mounted only for the moment a connection is aborted, never left by setup."""
    from transports.fuse import mounting

    before = mounting.find_mount(mounting.FUSECTL) is not None
    out = subprocess.run(["bash", str(HOST_SETUP)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (mounting.find_mount(mounting.FUSECTL) is not None) == before


def test_a_missing_precondition_fails_once_with_its_fix():
    with dev_fuse_mode(0o600):
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
             "tests/test_unprivileged.py", "tests/test_machine_preconditions.py"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )
    out = proc.stdout
    assert proc.returncode == 1, out
    summary = out.strip().splitlines()[-1]
    assert "1 failed" in summary and "skipped" in summary, summary
    passed = [ln for ln in out.splitlines() if ln.endswith("PASSED") or " PASSED " in ln]
    # Only the other preconditions' checks pass: no unprivileged test ran into the symptom.
    assert passed and all("test_machine_preconditions[" in ln for ln in passed), passed
    assert "FAILED tests/test_machine_preconditions.py::test_machine_preconditions" \
           "[dev_fuse_for_users]" in out
    assert "chmod 0666 /dev/fuse" in out
    assert "machine precondition 'dev_fuse_for_users' unmet" in out
