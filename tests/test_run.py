"""`ringside run` end to end with real fio on a real mount, and the pieces it is made of."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, fuse_usable, require
from harness.point import fio, metrics
from harness.point.runner import RunError, Server
from harness.results import FORMAT_VERSION, load, read_result
from harness.scenarios import parse_scenario
from transports.fuse import mounting

SCENARIO = str(REPO / "scenarios" / "randread-4k-qd1.toml")
RINGSIDE = Path(sys.executable).parent / "ringside"


def ringside(*args: str, tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    # TMPDIR puts the run's default mountpoint below pytest's temp dir, where the
    # autouse fixture checks that no mount is left behind.
    cmd = [str(RINGSIDE)] if RINGSIDE.exists() else [sys.executable, "-m", "harness"]
    env = dict(os.environ, TMPDIR=str(tmp))
    return subprocess.run(
        [*cmd, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def fuse_mounts_under(path: Path) -> list[str]:
    return [m.path for m in mounting.fuse_mounts() if m.path.startswith(str(path))]


# -- the whole run -------------------------------------------------------------------------
@pytest.mark.mount
def test_run_writes_a_valid_result(tmp_path: Path) -> None:
    require(fuse_usable())
    out = tmp_path / "results"
    proc = ringside(
        "run",
        SCENARIO,
        "--transport",
        "pyfuse3",
        "--backing",
        "memory:256M",
        "--runtime",
        "2",
        "--out",
        str(out),
        tmp=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (path,) = out.glob("*.json")
    assert proc.stdout.strip() == str(path)
    (jobfile,) = out.glob("*.fio")
    assert jobfile.stem == path.stem
    data = read_result(path)

    assert data["format_version"] == FORMAT_VERSION
    assert data["scenario"]["name"] == "randread-4k-qd1"
    assert data["scenario"]["fio"]["runtime"] == 2
    assert data["transport"]["spec"] == "pyfuse3"
    assert data["export"]["size"] == 256 << 20
    assert data["export"]["fill"] == "data"  # a benchmark reads real data, not holes
    assert data["fio_raw"]["jobs"][0]["job options"]["rw"] == "randread"
    assert data["fio_jobfile"] == jobfile.name
    assert "size=268435456" in jobfile.read_text()

    read = data["summary"]["directions"]["read"]
    assert set(data["summary"]["directions"]) == {"read"}
    assert read["iops"] > 0 and read["total_ios"] > 0
    lat = read["clat_ns"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert data["summary"]["client"]["ctx"] > 0

    server = data["server"]
    assert server["exit_code"] == 0
    window = server["window"]
    assert window["ctxt_switches"] == (
        window["voluntary_ctxt_switches"] + window["nonvoluntary_ctxt_switches"]
    )
    assert window["ctxt_switches"] > 0 and window["cpu_s"] > 0
    assert window["threads"] and all(t["name"] for t in window["threads"])
    assert server["lifetime"]["utime_s"] >= window["utime_s"] - 0.05
    assert data["system"]["ctxt_delta"] > 0
    ios = data["summary"]["total_ios"]
    assert data["derived"]["server_ctxsw_per_io"] == pytest.approx(window["ctxt_switches"] / ios)
    assert data["derived"]["server_cpu_us_per_io"] > 0

    stats = data["transport_stats"]
    assert stats["requests"] >= read["total_ios"]
    assert data["checks"] == []  # pyfuse3 claims no ring

    assert data["host"]["kernel"] == os.uname().release
    assert data["host"]["cpu_count"] == os.cpu_count()
    versions = data["versions"]
    assert versions["python"] and versions["fio"].startswith("fio-")
    assert versions["pyfuse3"] and versions["libfuse"] and versions["liburing"]
    assert len(data["git"]["commit"]) == 40
    assert data["start"] < data["end"]

    # Nothing left: no mount, no server.
    assert not fuse_mounts_under(tmp_path)
    mountpoint = server["argv"][4]
    assert not processes_mentioning(mountpoint)

    df = load(out)
    assert len(df) == 1 and df.iloc[0]["iops"] == read["iops"]


def start_run_and_wait_for_fio(tmp_path: Path, mountpoint: Path) -> subprocess.Popen:
    cmd = [str(RINGSIDE)] if RINGSIDE.exists() else [sys.executable, "-m", "harness"]
    proc = subprocess.Popen(
        [
            *cmd,
            "run",
            SCENARIO,
            "--runtime",
            "30",
            "--backing",
            "memory:64M",
            "--mountpoint",
            str(mountpoint),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TMPDIR=str(tmp_path)),
    )
    deadline = time.monotonic() + 30
    # fio's argument is its job file inside out/ (the runner's own argv names out/ alone).
    while not processes_mentioning(f"{tmp_path / 'out'}/"):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"fio never started: {proc.communicate()}")
        time.sleep(0.1)
    time.sleep(0.5)
    return proc


def wait_gone(mountpoint: Path, *needles: str, timeout: float = 20) -> None:
    """Until no mount is on `mountpoint` and no process names it or any needle."""
    deadline = time.monotonic() + timeout
    while mounting.find_mount(str(mountpoint)) or any(
        processes_mentioning(n) for n in (str(mountpoint), *needles)
    ):
        assert time.monotonic() < deadline, "mount, server or fio still there"
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.mount
def test_interrupted_run_leaves_nothing(tmp_path: Path, sig: int) -> None:
    require(fuse_usable())
    mountpoint = tmp_path / "intr.img"
    proc = start_run_and_wait_for_fio(tmp_path, mountpoint)
    try:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    # Cleanup happened before the runner exited, not later.
    assert mounting.find_mount(str(mountpoint)) is None
    assert not processes_mentioning(str(mountpoint))
    assert not processes_mentioning(f"{tmp_path / 'out'}/"), "fio outlived the run"
    assert not list((tmp_path / "out").glob("*")), "no result or job file from a broken run"


@pytest.mark.mount
def test_killed_runner_takes_its_children_along(tmp_path: Path) -> None:
    require(fuse_usable())
    mountpoint = tmp_path / "killed.img"
    proc = start_run_and_wait_for_fio(tmp_path, mountpoint)
    proc.kill()  # no cleanup code runs: the children's parent-death signal must do it
    proc.communicate(timeout=30)
    try:
        wait_gone(mountpoint, f"{tmp_path / 'out'}/")
    finally:
        mounting.unmount_if_mounted(str(mountpoint))
        for pid in processes_mentioning(str(mountpoint)) + processes_mentioning(
            f"{tmp_path / 'out'}/"
        ):
            os.kill(pid, signal.SIGKILL)
    assert not processes_mentioning(f"{tmp_path / 'out'}/"), "fio outlived the runner"


# -- bad input: each error names the cause and the fix --------------------------------------
@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--transport", "pyfus3"], 2, "unknown transport 'pyfus3' (did you mean 'pyfuse3'?)"),
        (["--backing", "file:/nonexistent/dir/x.img"], 2, "does not exist: pass --size"),
        (["--backing", "file:/nonexistent/dir/x.img", "--size", "1M"], 2, "cannot create"),
        (["--backing", "disk:/x"], 2, "use file:PATH or memory:SIZE"),
        (["--backing", "memory:12Q"], 2, "cannot parse size '12Q'"),
        (["--size", "lots"], 2, "cannot parse size 'lots'"),
        (["--runtime", "0"], 2, "runtime = 0 is invalid"),
        (["--fio", "iodepth=deep"], 2, "iodepth = 'deep' is invalid: expected a positive"),
        (["--fio", "filename=/dev/sda"], 2, "unknown key 'filename'"),
    ],
)
def test_bad_input(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    proc = ringside("run", SCENARIO, "--out", str(tmp_path / "o"), *args, tmp=tmp_path)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert not fuse_mounts_under(tmp_path)


def test_mountpoint_is_a_directory(tmp_path: Path) -> None:
    proc = ringside("run", SCENARIO, "--mountpoint", str(tmp_path), tmp=tmp_path)
    assert proc.returncode == 2
    assert "is a directory" in proc.stderr and "name a file" in proc.stderr


@pytest.mark.mount
def test_mountpoint_in_use(tmp_path: Path) -> None:
    require(fuse_usable())
    from conftest import served

    with served("pyfuse3", tmp_path / "busy.img", "memory:16M"):
        proc = ringside(
            "run",
            SCENARIO,
            "--mountpoint",
            str(tmp_path / "busy.img"),
            "--runtime",
            "1",
            tmp=tmp_path,
        )
        assert proc.returncode == 2
        assert "is in use" in proc.stderr and "Stop the server" in proc.stderr


def test_scenario_missing_or_bad(tmp_path: Path) -> None:
    proc = ringside("run", "no-such-scenario", tmp=tmp_path)
    assert proc.returncode == 2 and "'no-such-scenario' not found" in proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[fio]\nrw = "randread"\nbs = "4k"\nnumjobs = 0\n')
    proc = ringside("run", str(bad), tmp=tmp_path)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "numjobs" in proc.stderr and "positive" in proc.stderr


def test_fio_missing(tmp_path: Path) -> None:
    env_path = tmp_path / "bin"
    env_path.mkdir()
    cmd = [str(RINGSIDE)] if RINGSIDE.exists() else [sys.executable, "-m", "harness"]
    proc = subprocess.run(
        [*cmd, "run", SCENARIO],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PATH=str(env_path)),
        timeout=60,
    )
    assert proc.returncode == 1
    assert "apt-get install fio" in proc.stderr


# -- the server child -------------------------------------------------------------------------
def child(tmp_path: Path, code: str) -> Server:
    return Server([sys.executable, "-c", code], str(tmp_path / "err"))


def test_server_dying_before_ready_reports_stderr(tmp_path: Path) -> None:
    server = child(tmp_path, "import sys; sys.stderr.write('cannot mount: boom'); sys.exit(3)")
    with pytest.raises(RunError, match=r"exited with code 3 before it was ready:\ncannot mount"):
        server.wait_ready(10)
    assert server.stop(1) == 3


def test_server_ready_then_sigterm(tmp_path: Path) -> None:
    server = child(
        tmp_path,
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "print('ringside: ready: x', flush=True)\n"
        "time.sleep(60)\n",
    )
    server.wait_ready(10)
    assert server.stop(10) == 0
    assert server.rusage is not None and server.stdout_lines == ["ringside: ready: x"]


def test_server_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    server = child(
        tmp_path,
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ringside: ready', flush=True)\n"
        "time.sleep(60)\n",
    )
    server.wait_ready(10)
    started = time.monotonic()
    assert server.stop(0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 5
    assert server.stop(0.5) == -signal.SIGKILL  # idempotent
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)


def test_server_never_ready_times_out(tmp_path: Path) -> None:
    server = child(tmp_path, "import time; time.sleep(60)")
    try:
        with pytest.raises(RunError, match="not ready after"):
            server.wait_ready(0.3)
    finally:
        server.stop(1)


# -- metrics ------------------------------------------------------------------------------------
def test_thread_snapshot_and_delta(tmp_path: Path) -> None:
    # The spinner burns 0.5 s of its own CPU time (not of wall time, which a loaded machine
    # stretches) after the first snapshot, and says when it is done.
    code = (
        "import threading, time, sys\n"
        "go = threading.Event()\n"
        "def spin():\n"
        "    go.wait()\n"
        "    end = time.thread_time() + 0.5\n"
        "    while time.thread_time() < end: pass\n"
        "    print('spun', flush=True)\n"
        "    time.sleep(60)\n"
        "threading.Thread(target=spin, name='spinner', daemon=True).start()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "go.set()\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        before = metrics.snapshot(proc.pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "spun\n"
        after = metrics.snapshot(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert len(after.threads) == 2
    d = metrics.delta(before, after)
    assert d["cpu_s"] > 0.2
    assert d["ctxt_switches"] == d["voluntary_ctxt_switches"] + d["nonvoluntary_ctxt_switches"]
    assert max(t["utime_s"] + t["stime_s"] for t in d["threads"]) > 0.2
    assert all(t["name"] for t in d["threads"]) and not any(t["new"] for t in d["threads"])
    with pytest.raises(ProcessLookupError):
        metrics.snapshot(proc.pid)


def test_thread_names_with_spaces_and_parentheses() -> None:
    done = threading.Event()

    def idle() -> None:
        done.wait()

    t = threading.Thread(target=idle)
    t.start()
    try:
        from ctypes import CDLL, c_char_p, c_ulong

        libc = CDLL(None)
        libc.pthread_setname_np.argtypes = [c_ulong, c_char_p]
        libc.pthread_setname_np(t.ident, b"a) b (c")
        snap = metrics.snapshot(os.getpid())
    finally:
        done.set()
        t.join()
    assert t.native_id in snap.threads
    stat = snap.threads[t.native_id]
    assert stat.name == "a) b (c" and stat.utime_s >= 0


def test_system_ctxt_grows() -> None:
    a = metrics.system_ctxt()
    time.sleep(0.05)
    assert metrics.system_ctxt() > a


# -- fio ----------------------------------------------------------------------------------------
def test_job_file_caps_size_at_the_export() -> None:
    s = parse_scenario({"name": "j", "fio": {"rw": "read", "bs": "4k", "size": "1g"}}, "j")
    (point,) = s.points()
    text = fio.job_file(point, "/mnt/disk.img", 64 << 20)
    assert "filename=/mnt/disk.img" in text and f"size={64 << 20}" in text
    assert "group_reporting=1" in text and "thread=1" in text and "[j]" in text
    assert f"size={1 << 30}" in fio.job_file(point, "/x", 2 << 30)


def test_real_fio_summary_has_both_directions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with open(data, "wb") as f:
        f.truncate(8 << 20)
    s = parse_scenario(
        {
            "name": "mix",
            "fio": {
                "rw": "randrw",
                "bs": "4k",
                "rwmixread": 50,
                "runtime": 1,
                "direct": 0,
                "numjobs": 2,
            },
        },
        "mix",
    )
    (point,) = s.points()
    job = tmp_path / "job.fio"
    job.write_text(fio.job_file(point, str(data), 8 << 20))
    raw, _ = fio.run_fio(str(job), str(tmp_path / "out.json"), timeout=60)
    summary = fio.summarize(raw)
    assert set(summary["directions"]) == {"read", "write"}
    r, w = summary["directions"]["read"], summary["directions"]["write"]
    assert summary["total_ios"] == r["total_ios"] + w["total_ios"] > 0
    assert r["clat_ns"]["p50"] > 0 and r["clat_ns"]["p99.9"] >= r["clat_ns"]["p50"]
    assert summary["client"]["ctx"] > 0
    assert "bins" in raw["jobs"][0]["read"]["clat_ns"], "json+ keeps the latency bins"


def test_fio_failure_is_reported(tmp_path: Path) -> None:
    job = tmp_path / "job.fio"
    job.write_text(f"[x]\nfilename={tmp_path / 'f'}\nrw=read\nsize=1m\nioengine=nosuch\n")
    with pytest.raises(fio.FioError, match="(?s)fio failed with exit code 1.*nosuch"):
        fio.run_fio(str(job), str(tmp_path / "o.json"), timeout=60)


def test_parse_output_skips_warnings() -> None:
    assert fio.parse_output('fio: some warning\n{"jobs": []}') == {"jobs": []}
    with pytest.raises(fio.FioError):
        fio.parse_output("fio: nothing")


def test_per_io_figures() -> None:
    server = {"ctxt_switches": 2000, "cpu_s": 0.5}
    got = metrics.per_io(server, {"ctx": 1000}, 3000, 1000)
    assert got == {
        "server_ctxsw_per_io": 2.0,
        "server_cpu_us_per_io": 500.0,
        "client_ctxsw_per_io": 1.0,
        "system_ctxsw_per_io": 3.0,
    }
    # No I/O: no ratios rather than a division by zero or NaN in the JSON.
    assert json.dumps(metrics.per_io(server, {"ctx": 0}, 0, 0)) == "{}"


@pytest.mark.mount
@pytest.mark.skipif(os.geteuid() != 0, reason="enable_uring and mlock as root")
def test_mlock_uring_run_proves_its_lock(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", "randread-4k-qd1", "-t", "uring:buffers=mlock",
         "--backing", "memory:64M", "--runtime", "1", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(Path(proc.stdout.split()[-1]).read_text())
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["mlock"]["ok"] and checks["ring_share"]["ok"]
    assert checks["mlock"]["locked_bytes"] >= checks["mlock"]["needed_bytes"] > 0
    assert "mlock" in data["transport_stats"]["pinning"]
