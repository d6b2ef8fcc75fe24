"""Transport `direct`: fio on the backing itself, no FUSE (the ceiling row), end to end.

Real mounts throughout: bind mounts of real backings, a real ramfs where O_DIRECT is
refused, real fio. Every test undoes what it mounted, whatever happened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_run import processes_mentioning

from conftest import REPO, read_until_ready, serve_command
from harness.analysis.campaign_results import load_campaign
from harness.analysis.compare import choose_baseline, compare
from harness.analysis.synthetic import write_campaign
from harness.analysis.tables import render
from harness.point import fio
from harness.results import read_result
from transports.base import parse_spec, transport_class
from transports.export.backing import fill_image
from transports.fuse import mounting

RINGSIDE = Path(sys.executable).parent / "ringside"
SCENARIO = str(REPO / "scenarios" / "randread-4k-qd16.toml")


def ringside(*args: str, tmp: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    cmd = [str(RINGSIDE)] if RINGSIDE.exists() else [sys.executable, "-m", "harness"]
    return subprocess.run([*cmd, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, TMPDIR=str(tmp)))


def mounts_under(path: Path) -> list[mounting.MountEntry]:
    return [m for m in mounting.mounts() if m.path.startswith(str(path) + "/")]


def guards_of(path: Path) -> list[int]:
    """Live guard processes of mounts below `path` (`python -m transports.builtin.direct`)."""
    return [pid for pid in processes_mentioning(str(path)) if _is_guard(pid)]


def _is_guard(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"transports.builtin.direct" in f.read().split(b"\0")
    except OSError:
        return False


FIXTURES = "fixture-mounts"  # below tmp: filesystems the tests mount on purpose


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, with every mount below it undone (deepest first), and none but the
    fixtures' own allowed to be left by the code under test."""
    yield tmp_path
    left = mounts_under(tmp_path)
    for entry in sorted(left, key=lambda m: -len(m.path)):
        mounting.unmount(entry.path, lazy=True)
    for pid in guards_of(tmp_path):
        os.kill(pid, signal.SIGKILL)
    stray = [m.path for m in left if not m.path.startswith(str(tmp_path / FIXTURES))]
    assert not stray, f"mounts left behind: {stray}"


def mount_fs(tmp: Path, fstype: str, options: str = "") -> Path:
    """A real filesystem of `fstype` below tmp; the `tmp` fixture unmounts it."""
    root = tmp / FIXTURES / fstype
    root.mkdir(parents=True)
    proc = subprocess.run(["mount", "-t", fstype, *(["-o", options] if options else []),
                           fstype, str(root)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a {fstype} here: {proc.stderr.strip()}")
    return root


@pytest.fixture
def ramfs(tmp: Path) -> Path:
    """A real ramfs: it refuses O_DIRECT."""
    return mount_fs(tmp, "ramfs")


def only_result(out: Path) -> dict:
    (path,) = out.glob("*.json")
    return read_result(path)


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# The whole runs bind-mount the image: root only. The rest (the O_DIRECT rule, compare) runs
# as any user.
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="direct bind-mounts: needs root")


# -- whole runs ----------------------------------------------------------------------------
@pytest.mark.mount
@needs_root
@pytest.mark.parametrize("backing", ["memory", "file"])
def test_a_direct_run_measures_the_backing_and_leaves_nothing(tmp: Path, backing: str) -> None:
    spec = ["--backing", "memory:64M"] if backing == "memory" else [
        "--backing", f"file:{tmp / 'image.raw'}", "--size", "64M"]
    out = tmp / "out"
    proc = ringside("run", SCENARIO, "-t", "direct", *spec, "--runtime", "1", "--out",
                    str(out), tmp=tmp)
    assert proc.returncode == 0, proc.stderr
    data = only_result(out)
    assert data["summary"]["directions"]["read"]["total_ios"] > 0
    assert data["coverage"]["warning"] is None
    assert data["coverage"]["not_applicable"].startswith("no FUSE")
    stats = data["transport_stats"]
    assert stats["transport"] == "direct" and stats["fuse"] is False
    assert stats["requests"] is None and stats["guard_exit_code"] == 0
    if backing == "memory":
        assert "private tmpfs" in stats["served_from"]
    else:
        assert stats["served_from"] == str(tmp / "image.raw")
    # Whatever this machine's backing takes, the job file and the record agree.
    o_direct = stats["o_direct"]
    job = (out / data["fio_jobfile"]).read_text()
    assert o_direct["asked"] is True
    assert o_direct["used"] == o_direct["accepted"]
    assert ("direct=1" in job) == o_direct["used"]
    assert (o_direct["note"] is None) == o_direct["used"]
    # Nothing per I/O is nonsense for a server that serves nothing.
    assert 0 <= data["derived"]["server_cpu_us_per_io"] < 1
    assert not mounts_under(tmp) and not guards_of(tmp)


@pytest.mark.mount
@needs_root
def test_a_backing_that_refuses_o_direct_runs_direct_0_and_says_so(tmp: Path,
                                                                    ramfs: Path) -> None:
    out = tmp / "out"
    proc = ringside("campaign", "randread-4k-qd1", "-t", "direct", "-t", "devfuse",
                    "--reps", "1", "--warmup", "0", "--runtime", "1", "--no-progress",
                    "--backing", f"file:{ramfs / 'image.raw'}", "--size", "16M",
                    "--out", str(out), "--id", "c", tmp=tmp)
    assert proc.returncode == 0, proc.stderr
    results = {d["transport"]["name"]: d for d in map(read_result, (out / "c").glob("*__*.json"))}
    record = results["direct"]["transport_stats"]["o_direct"]
    assert record["asked"] and not record["accepted"] and not record["used"]
    assert "Invalid argument" in record["refusal"]
    job = (out / "c" / results["direct"]["fio_jobfile"]).read_text()
    assert "direct=0" in job and "direct=1" not in job
    # A FUSE export on the same backing still takes O_DIRECT: its run is as asked.
    assert "o_direct" not in results["devfuse"]["transport_stats"]
    assert "direct=1" in (out / "c" / results["devfuse"]["fio_jobfile"]).read_text()

    shown = ringside("compare", str(out / "c"), tmp=tmp)
    assert shown.returncode == 0, shown.stderr
    assert "randread-4k-qd1 on direct, 1 of 1 runs: fio ran with direct=0" in shown.stdout
    assert "% of direct" in shown.stdout
    assert "baseline devfuse" in shown.stdout  # never the ceiling, unless asked

    # A single run says so as it happens (a campaign's progress bar leaves it to compare).
    single = ringside("run", "randread-4k-qd1", "-t", "direct", "--runtime", "1",
                      "--backing", f"file:{ramfs / 'image.raw'}", "--out", str(tmp / "one"),
                      tmp=tmp)
    assert single.returncode == 0, single.stderr
    assert "randread-4k-qd1 on direct: fio ran with direct=0" in single.stderr


@pytest.mark.mount
@needs_root
def test_a_server_killed_mid_run_leaves_no_mount(tmp: Path) -> None:
    mountpoint = tmp / "disk.img"
    out = tmp / "out"
    result: dict[str, subprocess.CompletedProcess] = {}
    runner = threading.Thread(target=lambda: result.update(run=ringside(
        "run", SCENARIO, "-t", "direct", "--backing", "memory:64M", "--runtime", "30",
        "--mountpoint", str(mountpoint), "--out", str(out), tmp=tmp)))
    runner.start()
    try:
        assert wait_for(lambda: (out.exists() and any(out.glob("*.fio"))), 60)
        (server,) = [pid for pid in _pids_with(b"serve", os.fsencode(mountpoint))]
        os.kill(server, signal.SIGKILL)
    finally:
        runner.join(120)
    proc = result["run"]
    assert proc.returncode != 0
    assert "killed by SIGKILL" in proc.stderr or "was removed during the run" in proc.stderr
    assert mounting.find_mount(str(mountpoint)) is None
    assert not guards_of(tmp) and not list(out.glob("*.json"))


def _pids_with(*words: bytes) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if all(w in argv for w in words):
                pids.append(int(entry))
    return pids


# -- `ringside serve -t direct` ----------------------------------------------------------------
def _serve(mountpoint: Path, backing: str, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(serve_command("direct", mountpoint, backing, *extra), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready, lines = read_until_ready(proc, 30)
    if ready is None:
        proc.kill()
        proc.wait()
        pytest.fail("`ringside serve -t direct` did not get ready:\n" + "".join(lines))
    return proc, ready


@pytest.mark.mount
@needs_root
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_serve_undoes_its_mount_however_it_ends(tmp: Path, sig: int) -> None:
    mountpoint = tmp / "disk.img"
    stats = tmp / "stats.json"
    proc, _ = _serve(mountpoint, "memory:16M", "--fill", "data", "--stats-out", str(stats))
    try:
        entry = mounting.find_mount(str(mountpoint))
        assert entry is not None and entry.fstype == "tmpfs"
        # The served file holds the export's filled bytes.
        expected = os.memfd_create("expected")
        fill_image(expected, 1 << 20)
        with open(mountpoint, "rb") as f:
            assert f.read(1 << 20) == os.pread(expected, 1 << 20, 0)
        os.close(expected)
        assert os.stat(mountpoint).st_size == 16 << 20
        assert guards_of(tmp)
        proc.send_signal(sig)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # SIGKILL: nobody in the server could unmount; its guard did.
    assert wait_for(lambda: mounting.find_mount(str(mountpoint)) is None)
    assert wait_for(lambda: not guards_of(tmp))
    if sig == signal.SIGTERM:
        assert proc.returncode == 0
        assert json.loads(stats.read_text())["guard_exit_code"] == 0
    # The private tmpfs was detached as soon as its file was bound.
    assert not [m.path for m in mounting.mounts() if "ringside-direct-" in m.path]


@pytest.mark.mount
@needs_root
def test_a_sparse_memory_backing_stays_sparse_and_read_only_refuses_writes(tmp: Path) -> None:
    mountpoint = tmp / "disk.img"
    proc, _ = _serve(mountpoint, "memory:16M", "--fill", "none", "--read-only")
    try:
        assert os.stat(mountpoint).st_blocks == 0  # holes copied as holes
        with pytest.raises(OSError) as e:
            os.open(mountpoint, os.O_WRONLY)
        assert e.value.errno == 30  # EROFS, as a FUSE transport answers a read-only export
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert mounting.find_mount(str(mountpoint)) is None


@pytest.mark.mount
@needs_root
def test_an_unmount_from_outside_ends_serve(tmp: Path) -> None:
    mountpoint = tmp / "disk.img"
    image = tmp / "image.raw"
    proc, _ = _serve(mountpoint, f"file:{image}", "--size", "1M")
    try:
        mounting.unmount(str(mountpoint), lazy=True)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "removed from outside" in out
    assert wait_for(lambda: not guards_of(tmp))


# -- O_DIRECT: the probe and the rule ----------------------------------------------------------
@pytest.mark.mount
@needs_root
def test_the_probe_tells_a_backing_that_takes_o_direct_from_one_that_does_not(
    tmp: Path, ramfs: Path
) -> None:
    shmem = mount_fs(tmp, "tmpfs", "size=1M")  # takes O_DIRECT since Linux 6.6, as memfds do
    refusing, taking = ramfs / "image.raw", shmem / "image.raw"
    for path in (refusing, taking):
        path.write_bytes(os.urandom(8192))
    refusal = fio.o_direct_refusal(str(refusing))
    assert refusal is not None and "Invalid argument" in refusal and str(refusing) in refusal
    assert fio.o_direct_refusal(str(taking)) is None
    assert fio.o_direct_refusal(str(tmp / "missing")) is not None


def test_the_o_direct_rule() -> None:
    asked = {"rw": "randread", "direct": 1}
    options, record = fio.plan_o_direct(asked, None)
    assert options == asked
    assert record == {"asked": True, "accepted": True, "used": True, "refusal": None,
                      "note": None}
    options, record = fio.plan_o_direct(asked, "open(O_DIRECT) of X fails: Invalid argument")
    assert options == {"rw": "randread", "direct": 0} and asked["direct"] == 1
    assert not record["used"] and not record["accepted"]
    assert record["note"].startswith("fio ran with direct=0, not the scenario's direct=1")
    assert "Invalid argument" in record["note"]
    # A scenario that asks for buffered I/O runs as asked, refused or not.
    buffered = {"rw": "read", "direct": 0}
    for refusal in (None, "refused"):
        options, record = fio.plan_o_direct(buffered, refusal)
        assert options == buffered and not record["used"] and record["note"] is None


def test_direct_declares_it_serves_without_fuse() -> None:
    assert transport_class("direct").serves_fuse is False
    assert all(transport_class(name).serves_fuse for name in ("devfuse", "uring", "qsd"))
    with pytest.raises(Exception, match="known options: none"):
        parse_spec("direct:threads=2")


# -- compare: % of direct ---------------------------------------------------------------------
FACTORS = {"pyfuse3": 1.0, "uring": 2.0, "direct": 4.0}


def test_compare_shows_each_row_as_a_share_of_direct(tmp_path: Path) -> None:
    campaign = load_campaign(write_campaign(tmp_path / "c", FACTORS, paired=True, noise=0.0,
                                            warmup=False))
    c = compare(campaign)
    assert c.baseline == "pyfuse3" and c.ceiling == "direct"
    for row in c.rows:
        expected = FACTORS[row.transport] / FACTORS["direct"]
        assert row.of_ceiling == pytest.approx(expected, rel=1e-6)
    terminal = render(c, "terminal")
    assert "ceiling direct (no FUSE)" in terminal.splitlines()[0]
    qd1 = terminal.split("randread-4k-qd1 read (IOPS)\n")[1].split("\n\n")[0].splitlines()
    assert qd1[0].split()[-3:] == ["%", "of", "direct"]
    shares = {line.split()[0]: line.split()[-1] for line in qd1[1:]}
    assert shares == {"pyfuse3": "25%", "uring": "50%", "direct": "ceiling"}
    assert "| % of direct |" in render(c, "markdown")
    email = render(c, "email")
    assert "% of direct: pyfuse3 25%, uring 50%" in email
    assert max(len(line) for line in email.splitlines()) <= 72
    csv = render(c, "csv").splitlines()
    assert csv[0].endswith(",pct_of_direct")
    assert float(csv[1].split(",")[-1]) == pytest.approx(25.0)


def test_without_direct_nothing_new_is_printed(tmp_path: Path) -> None:
    factors = {k: v for k, v in FACTORS.items() if k != "direct"}
    c = compare(load_campaign(write_campaign(tmp_path / "c", factors, warmup=False)))
    assert c.ceiling is None and all(r.of_ceiling is None for r in c.rows)
    assert "of_ceiling" not in c.frame()
    for fmt in ("terminal", "markdown", "email", "csv"):
        text = render(c, fmt)
        assert "of direct" not in text and "of_direct" not in text and "ceiling" not in text


def test_direct_is_never_the_default_baseline(tmp_path: Path) -> None:
    assert choose_baseline(["direct", "uring"], None, avoid=("direct",)) == "uring"
    assert choose_baseline(["direct", "pyfuse3"], None, avoid=("direct",)) == "pyfuse3"
    assert choose_baseline(["direct"], None, avoid=("direct",)) == "direct"  # nothing else
    assert choose_baseline(["direct", "uring"], "direct", avoid=("direct",)) == "direct"
    # A labelled direct is found by its recorded transport name, not its label.
    campaign = load_campaign(write_campaign(
        tmp_path / "c", {"aaa": 1.0, "uring": 2.0}, warmup=False, repetitions=2))
    runs = campaign.runs
    runs.loc[runs["transport_label"] == "aaa", "transport"] = "direct"
    c = compare(campaign)
    assert c.baseline == "uring" and c.ceiling == "aaa"
    assert compare(campaign, "aaa").baseline == "aaa"  # asked explicitly
