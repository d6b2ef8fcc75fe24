"""`ringside doctor` names what is missing and how to fix it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"


def doctor() -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", "doctor"], cwd=REPO, capture_output=True, text=True
    )


def test_doctor_reports_every_capability():
    proc = doctor()
    for name in (
        "/dev/fuse",
        "/dev/fuse for users",
        "user tools",
        "enable_uring",
        "fio",
        "liburing binding",
        "RLIMIT_MEMLOCK",
        "qemu-storage-daemon",
        "possible CPUs",
        "fusectl",
        "kernel.io_uring_disabled",
        "FUSE buffer pools (7.46)",
        "uring sched=auto",
    ):
        assert name in proc.stdout


@pytest.mark.mount  # root: it switches the machine's enable_uring off for a moment
@pytest.mark.skipif(
    not os.access(ENABLE_URING, os.W_OK), reason="needs root to toggle enable_uring"
)
def test_doctor_names_a_switched_off_capability_and_its_fix():
    with open(ENABLE_URING) as f:
        before = f.read().strip()
    try:
        with open(ENABLE_URING, "w") as f:
            f.write("N")
        proc = doctor()
        assert proc.returncode == 1
        line = next(ln for ln in proc.stdout.splitlines() if "enable_uring" in ln)
        assert line.startswith("MISSING")
        assert f"echo Y > {ENABLE_URING}" in proc.stdout
        assert "missing for the default suite: enable_uring" in proc.stdout
    finally:
        with open(ENABLE_URING, "w") as f:
            f.write(before)
    assert doctor().returncode == 0
