"""Fixtures that mount for real and always clean up: lazy unmount, reap children."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from preconditions import apply as apply_preconditions

from harness.guests.inside import slowdown
from harness.point.serving import READY_PREFIX
from transports.fuse import mounting

REPO = Path(__file__).resolve().parent.parent
ON_CI = os.environ.get("CI") == "true"
# Inside an emulated guest (`make test-guest`) a Python child takes 20-40 s to start.
SLOW = slowdown()

# Every transport the semantics suite runs on. A transport listed here that cannot run is a
# failure on CI (never a silent skip); elsewhere it is skipped with the reason.
SERVED_TRANSPORTS = [
    "pyfuse3",
    "devfuse",
    "devfuse:threads=2",
    "devfuse:datapath=python",
    "uring",
    "uring:buffers=mlock",
    "uring:datapath=python",
]
# Protocol 7.46's buffer modes (Linux 7.3+): listed everywhere, run where the kernel offers
# FUSE_HAS_IO_URING_BUFPOOL (a 7.3 guest), skipped with the reason elsewhere, CI included
# (its host kernel cannot run them; `ringside guest --kernel 7.3` can).
POOL_TRANSPORTS = [
    "uring:buffers=pool",
    "uring:buffers=pinned",
    "uring:buffers=pool,zerocopy=on",
    "uring:buffers=pinned,zerocopy=on",
    "uring:buffers=pool,datapath=python",
    "uring:buffers=pinned,zerocopy=on,datapath=python",
]
# Peers serve the same backing with their own server (qemu-storage-daemon's semantics, not
# our export's): they share the life-cycle tests, not the semantics suite.
# qemu-storage-daemon built from source (`ringside peers fetch qsd`, with the FUSE-over-
# io_uring series for the second): met where a build is cached, skipped elsewhere (CI).
QSD_BUILD_TRANSPORTS = ["qsd:build=cached", "qsd:build=cached-io-uring,io_uring=on"]
PEER_TRANSPORTS = ["qsd", *QSD_BUILD_TRANSPORTS]


def fuse_usable() -> str | None:
    """None when FUSE can be mounted here, else the reason."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing: run `modprobe fuse`"
    if os.geteuid() != 0 and not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not accessible to this user"
    return None


def pytest_itemcollected(item: pytest.Item) -> None:
    # A guest boots under qemu as root (minutes each): `-m "not mount"` leaves it out too.
    if item.get_closest_marker("guest") and not item.get_closest_marker("mount"):
        item.add_marker(pytest.mark.mount)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Last, after `-m`/`-k` have deselected: only the tests that will run make their
    # preconditions needed (a `-m "not mount"` run does not check what only mounts need).
    apply_preconditions(config, items)


def require(reason: str | None) -> None:
    if reason:
        if ON_CI:
            pytest.fail(f"CI must be able to mount: {reason}")
        pytest.skip(reason)


def bufpool_reason() -> str | None:
    """None when this kernel offers FUSE-over-io_uring buffer pools (7.46), else why not."""
    reason = fuse_usable()
    if reason:
        return reason
    enable = Path("/sys/module/fuse/parameters/enable_uring")
    if enable.exists() and enable.read_text().strip() != "Y":
        try:
            enable.write_text("Y\n")
        except OSError as e:
            return f"enable_uring is N and cannot be set ({e.strerror})"
    from transports.fuse.init_probe import kernel_offer

    try:
        offer = kernel_offer()
    except Exception as e:  # noqa: BLE001 - any failure to probe is the reason to skip
        return f"could not read FUSE_INIT from a throwaway mount: {e!r}"
    if not offer.bufpool:
        return (
            f"{offer.describe()} offers no FUSE_HAS_IO_URING_BUFPOOL: a 7.46 mode; run it "
            "in a 7.3 guest (`ringside guest --kernel 7.3 -- make test`)"
        )
    return None


def require_transport(spec: str) -> None:
    """Skip a 7.46 buffer mode on a kernel without pools (on CI too: see POOL_TRANSPORTS)."""
    if spec in POOL_TRANSPORTS or "buffers=pool" in spec or "buffers=pinned" in spec:
        reason = bufpool_reason()
        if reason:
            pytest.skip(reason)


@pytest.fixture(autouse=True)
def _no_mount_left_behind(tmp_path_factory) -> Iterator[None]:
    # Only our own mounts count: every test mounts below pytest's base temp directory.
    base = str(tmp_path_factory.getbasetemp())

    def ours() -> set[str]:
        return {m.path for m in mounting.fuse_mounts() if m.path.startswith(base)}

    before = ours()
    yield
    left = sorted(ours() - before)
    for path in left:
        mounting.unmount_if_mounted(path)
    assert not left, f"test left FUSE mounts behind: {left}"


class Served:
    """A `ringside serve` child process and its mounted file."""

    def __init__(self, proc: subprocess.Popen, path: Path, stats_path: Path, ready_line: str):
        self.proc = proc
        self.path = path
        self.stats_path = stats_path
        self.ready_line = ready_line
        self.output = ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.output += out or ""
        return self.proc.returncode

    def stats(self) -> dict:
        return json.loads(self.stats_path.read_text())


def serve_command(spec: str, path: Path, backing: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "harness",
        "serve",
        str(path),
        "--transport",
        spec,
        "--backing",
        backing,
        *extra,
    ]


def read_until_ready(proc: subprocess.Popen, timeout: float) -> tuple[str | None, list[str]]:
    """Read a serving child's output up to its ready line: (that line or None, all lines)."""
    deadline = time.monotonic() + timeout * SLOW
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(READY_PREFIX):
            return line, lines
    return None, lines


@contextmanager
def served(
    spec: str, path: Path, backing: str = "memory:64M", *extra: str, timeout: float = 30
) -> Iterator[Served]:
    require(fuse_usable())
    stats_path = path.with_name(path.name + ".stats.json")
    proc = subprocess.Popen(
        serve_command(spec, path, backing, "--stats-out", str(stats_path), *extra),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Served(proc, path, stats_path, "")
    try:
        ready, lines = read_until_ready(proc, timeout)
        server.ready_line, server.output = ready or "", "".join(lines)
        if not server.ready_line:
            server.stop(signal.SIGKILL, timeout=5)
            pytest.fail(
                f"`ringside serve -t {spec}` did not get ready:\n{''.join(lines)}{server.output}"
            )
        yield server
    finally:
        if proc.poll() is None:
            server.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        mounting.unmount_if_mounted(str(path))


@pytest.fixture(params=SERVED_TRANSPORTS + POOL_TRANSPORTS)
def transport_spec(request) -> str:
    require_transport(request.param)
    return request.param


@pytest.fixture(params=SERVED_TRANSPORTS + POOL_TRANSPORTS + PEER_TRANSPORTS)
def any_transport_spec(request) -> str:
    require_transport(request.param)
    return request.param


@pytest.fixture
def mountfile(tmp_path: Path) -> Path:
    return tmp_path / "disk.img"


# The committed reference campaign's points the figure and notebook tests draw from: its
# real results at a sweep of iodepth and one of numjobs, a quarter of it (each point is a
# panel of most figures, and panels are what drawing costs).
REFERENCE_POINTS = (
    "randread-4k-depth-jobs@iodepth=1,numjobs=1",
    "randread-4k-depth-jobs@iodepth=16,numjobs=1",
    "randread-4k-depth-jobs@iodepth=1,numjobs=2",
)


@pytest.fixture(scope="session")
def reference_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference campaign's runs at REFERENCE_POINTS, with its manifest (a campaign
    named by $RINGSIDE_CAMPAIGN: whole). Missing, it is skipped; on CI, a failure."""
    from harness.analysis.campaign_results import DEFAULT_CAMPAIGN, ENV_CAMPAIGN, load_campaign

    if os.environ.get(ENV_CAMPAIGN):
        return Path(os.environ[ENV_CAMPAIGN])
    campaign = REPO / DEFAULT_CAMPAIGN
    if not campaign.is_dir():
        message = f"the reference campaign {campaign} is missing"
        if ON_CI:
            pytest.fail(message + ": it must be committed (results/reference/)")
        pytest.skip(message)
    runs = load_campaign(campaign).runs
    missing = sorted(set(REFERENCE_POINTS) - set(runs["point"]))
    assert not missing, f"{campaign} has no {missing}: name its points in REFERENCE_POINTS"
    subset = tmp_path_factory.mktemp("reference") / campaign.name
    subset.mkdir()
    for file in runs.loc[runs["point"].isin(REFERENCE_POINTS), "file"].unique():
        for twin in Path(file).parent.glob(Path(file).stem + ".*"):  # the result, its job
            shutil.copy(twin, subset / twin.name)
    manifest = json.loads((campaign / "campaign.json").read_text())
    manifest["runs"] = [r for r in manifest["runs"] if r["point"] in REFERENCE_POINTS]
    (subset / "campaign.json").write_text(json.dumps(manifest))
    return subset


def serve_child_code(spec: str) -> str:
    """`python -c` code that serves a 1M memory export through `spec` on argv[1] in this
    process (no harness in between) and exits 3 printing the refusal, if refused."""
    return f"""
import sys
from transports.base import TransportUnavailable, parse_spec
from transports.export.backing import parse_backing
from transports.export.image import Export
t = parse_spec({spec!r}).create()
try:
    t.serve(Export(parse_backing("memory:1M")), sys.argv[1], lambda: None)
except TransportUnavailable as e:
    print("UNAVAILABLE:", e)
    sys.exit(3)
print("served")
"""
