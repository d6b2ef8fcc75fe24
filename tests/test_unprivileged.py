"""`ringside serve` and `ringside run` as a user without privileges, through fusermount3.

The test creates a user (removed afterwards) and runs the harness as it (setpriv: its
uid and gid, no capabilities) with the venv's python. Every transport mounts through
fusermount3 (setuid) there; FUSE-over-io_uring needs no privilege beyond an io_uring
the sysctl allows. What the kernel refuses a user
for a good reason (locking more memory than RLIMIT_MEMLOCK, mounting on a file it
cannot write, a backing it cannot open) must fail with a message naming cause and fix.
A FUSE mount without allow_other is only reachable by its owner, so the I/O runs as the
user too.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_faults import (
    FUSECTL,
    assert_nothing_left,
    fusectl,  # noqa: F401 (a fixture, used by name)
    kill_leftovers,
    serve_processes,
    wait_for,
)
from test_run import processes_mentioning

from conftest import (
    ON_CI,
    PEER_TRANSPORTS,
    QSD_BUILD_TRANSPORTS,
    REPO,
    SERVED_TRANSPORTS,
    read_until_ready,
    require,
    require_transport,
)
from transports.builtin.uring.queue import HEADER_BUFFER, payload_size, possible_cpus
from transports.fuse import mounting

pytestmark = [
    pytest.mark.mount,
    pytest.mark.needs("dev_fuse_for_users", "user_tools", "io_uring_for_users"),
]

USER_PATH = "/usr/local/bin:/usr/bin:/bin"
MEMLOCK_DEFAULT = 8 << 20  # Linux's default RLIMIT_MEMLOCK since 5.16
# mlock and pinned at the default depth need more than that; depth=1 fits, so they still
# run. The 7.46 modes skip on a kernel without pools; zero-copy needs CAP_SYS_ADMIN.
USER_TRANSPORTS = [
    t for t in SERVED_TRANSPORTS if t != "uring:buffers=mlock"
] + [
    "uring:buffers=mlock,depth=1", "uring:buffers=pool", "uring:buffers=pinned,depth=1"
] + [t for t in PEER_TRANSPORTS if t not in QSD_BUILD_TRANSPORTS]


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path  # a directory of its own, outside pytest's (root-only) temp dir

    def command(self, *argv: str, cap: str = "") -> list[str]:
        # Every step execs (none forks, unlike runuser), so a signal to the child reaches
        # the harness itself. The memlock and nice limits are the ones a fresh login gets,
        # set while still root so they may exceed the test runner's own. `cap`: one
        # capability the user keeps (ambient), e.g. "sys_nice".
        caps = [f"--inh-caps=+{cap}", f"--ambient-caps=+{cap}"] if cap else []
        return [
            "prlimit", f"--memlock={MEMLOCK_DEFAULT}:{MEMLOCK_DEFAULT}", "--nice=0:0",
            "setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", *caps,
            "env", "-i", f"HOME={self.home}", f"TMPDIR={self.home}", "LANG=C.UTF-8",
            f"USER={self.name}", f"PATH={USER_PATH}",
            *argv,
        ]

    def run(self, *argv: str, timeout: float = 120, cap: str = ""
            ) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*argv, cap=cap), cwd=REPO,
                              capture_output=True, text=True, timeout=timeout)

    def ringside(self, *args: str, timeout: float = 120, cap: str = ""
                 ) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "harness", *args, timeout=timeout, cap=cap)

    def processes(self) -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == self.uid:
                    pids.append(int(entry))
            except OSError:
                continue
        return pids


def _grant_traversal(paths: list[Path]) -> list[tuple[Path, int]]:
    """Let others search every directory above `paths` (e.g. a python under /root);
    returns the (directory, old mode) pairs to restore."""
    changed = []
    for path in paths:
        for parent in [path, *path.parents]:
            if not parent.is_dir():
                continue
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH and (parent, mode) not in changed:
                os.chmod(parent, stat.S_IMODE(mode) | stat.S_IXOTH)
                changed.append((parent, mode))
    return changed


def _cleanup_user(user: User) -> None:
    for pid in user.processes():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for m in mounting.fuse_mounts():
        if m.path.startswith(str(user.home)):
            subprocess.run(["fusermount3", "-u", "-z", m.path], capture_output=True)
            mounting.unmount_if_mounted(m.path)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    if os.geteuid() != 0:
        if ON_CI:
            pytest.fail("CI runs as root: the unprivileged tests must create their user")
        pytest.skip("creating a test user needs root")
    if shutil.which("fusermount3") is None:
        require("fusermount3 is missing: `apt-get install fuse3`")
    name = next(n for n in (f"rs{os.getpid() % 100000}u{i}" for i in range(100))
                if not _user_exists(n))
    subprocess.run(["useradd", "-M", "-U", "-s", "/usr/sbin/nologin", name], check=True)
    entry = pwd.getpwnam(name)
    home = Path(tempfile.mkdtemp(prefix="ringside-unpriv-"))
    os.chown(home, entry.pw_uid, entry.pw_gid)
    restore = _grant_traversal([Path(sys.executable).resolve(), Path(sys.executable), REPO,
                                home])
    u = User(name, entry.pw_uid, entry.pw_gid, home)
    try:
        probe = u.run(sys.executable, "-c",
                      "import harness.cli, transports.builtin.uring.transport, pyfuse3")
        if probe.returncode != 0:
            pytest.fail(f"user {name} cannot run the harness: {probe.stderr.strip()}")
        yield u
    finally:
        _cleanup_user(u)
        for path, mode in reversed(restore):
            os.chmod(path, stat.S_IMODE(mode))
        subprocess.run(["userdel", name], check=False, capture_output=True)
        subprocess.run(["groupdel", name], check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    left = [m.path for m in mounting.fuse_mounts() if m.path.startswith(str(home))]
    assert not left, f"the user's mounts were left: {left}"


@pytest.fixture
def userdir(user: User, request) -> Iterator[Path]:
    """A fresh directory of the user's for one test; nothing of it may stay mounted."""
    path = user.home / request.node.name.replace("/", "_").replace(":", "_")[:80]
    path.mkdir()
    os.chown(path, user.uid, user.gid)
    yield path
    left = [m.path for m in mounting.fuse_mounts() if m.path.startswith(str(path))]
    _cleanup_user(user)
    assert not left, f"left mounted: {left}"


@pytest.fixture(params=USER_TRANSPORTS)
def user_transport(request) -> str:
    require_transport(request.param)
    return request.param


def _serve(user: User, mountpoint: Path, spec: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        user.command(sys.executable, "-m", "harness", "serve", str(mountpoint), "-t", spec,
                     *extra),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _wait_ready(proc: subprocess.Popen, timeout: float = 30) -> str:
    ready, lines = read_until_ready(proc, timeout)
    if ready:
        return "".join(lines)
    proc.kill()
    out = "".join(lines) + proc.communicate()[0]
    pytest.fail(f"not ready as a user:\n{out}")


def test_serve_as_a_user(user, userdir, user_transport):
    mountpoint, stats = userdir / "disk.img", userdir / "stats.json"
    proc = _serve(user, mountpoint, user_transport, "--backing", "memory:32M",
                  "--stats-out", str(stats))
    try:
        _wait_ready(proc)
        entry = mounting.find_mount(str(mountpoint))
        assert entry is not None and entry.fstype.startswith("fuse")
        # fio as the user: the mount is its own (no allow_other), as a real user's is.
        # One I/O at a time: concurrency is test_integrity's, where qsd's bug is recorded.
        fio = user.run("fio", "--name=u", f"--filename={mountpoint}", "--rw=randwrite",
                       "--bs=4k", "--size=8M", "--direct=1", "--ioengine=psync",
                       "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
                       "--verify_state_save=0", "--output-format=json")
        assert fio.returncode == 0, fio.stdout[-2000:] + fio.stderr
        job = json.loads(fio.stdout[fio.stdout.index("{"):])["jobs"][0]
        assert job["error"] == 0 and job["read"]["io_bytes"] == 8 << 20
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert mounting.find_mount(str(mountpoint)) is None
    data = json.loads(stats.read_text())
    if user_transport not in PEER_TRANSPORTS:
        assert data["requests"] > 0
    if user_transport.startswith("uring"):
        # The ring itself, not a fallback to /dev/fuse.
        assert data["requests_ring"] > 0.9 * data["requests"], data
        # sched=auto: a user without RLIMIT_NICE could not leave SCHED_IDLE, so no idle
        assert data["settings"]["sched"] == "batch" and "sched_guard" not in data
        if "mlock" in user_transport:
            assert data["locked_bytes"] >= data["memlock"]["needed_bytes"] > 0
        if "pinned" in user_transport:
            # Without CAP_IPC_LOCK io_uring charges the registered pools to the user.
            assert data["pinned_bytes"] >= data["memlock"]["needed_bytes"] > 0
            assert all(q["registration"]["pool_registered"] for q in data["per_queue"])


def test_run_as_a_user(user, userdir, user_transport):
    out = userdir / "results"
    proc = user.ringside("run", "randread-4k-qd1", "-t", user_transport, "--runtime", "1",
                         "--backing", "memory:64M", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    (result,) = out.glob("*.json")
    assert result.stat().st_uid == user.uid
    data = json.loads(result.read_text())
    assert data["summary"]["total_ios"] > 0
    assert all(c["ok"] for c in data["checks"])  # ring share, the lock or the pin
    assert not [m for m in mounting.fuse_mounts() if m.path.startswith(str(user.home))]
    assert not [p for p in user.processes() if p], "the run left a process of the user's"


def _memlock_needs(mode: str, depth: int = 8) -> int:
    from transports.fuse.devloop import MAX_WRITE

    page = os.sysconf("SC_PAGE_SIZE")
    payload = payload_size(MAX_WRITE, MAX_WRITE // page)
    per_entry = HEADER_BUFFER + payload if mode == "mlock" else payload
    return len(possible_cpus()) * depth * per_entry


@pytest.mark.parametrize("mode", ["mlock", "pinned"])
@pytest.mark.parametrize("command", ["serve", "run"])
def test_locking_under_the_default_memlock_limit_names_the_bytes(user, userdir, command, mode):
    spec = f"uring:buffers={mode}"
    require_transport(spec)
    needed = _memlock_needs(mode)
    assert needed > MEMLOCK_DEFAULT, f"{mode} would fit: this test shows nothing here"
    if command == "serve":
        proc = user.ringside("serve", str(userdir / "disk.img"), "-t", spec,
                             "--backing", "memory:16M", timeout=60)
    else:
        proc = user.ringside("run", "randread-4k-qd1", "-t", spec,
                             "--runtime", "1", "--backing", "memory:16M", "--out",
                             str(userdir / "o"), timeout=60)
    assert proc.returncode == 1, proc.stderr
    msg = proc.stderr
    what = "locked memory" if mode == "mlock" else "memory pinned by io_uring"
    assert f"buffers={mode} needs {needed} bytes of {what}" in msg
    assert f"RLIMIT_MEMLOCK is {MEMLOCK_DEFAULT} bytes" in msg
    assert f"ulimit -l {-(-needed // 1024)}" in msg and "buffers=mapped" in msg
    assert "Traceback" not in msg
    assert mounting.find_mount(str(userdir / "disk.img")) is None


# -- what a user may not do, and the messages that say so ----------------------------------
@pytest.mark.parametrize("spec", ["pyfuse3", "devfuse", "uring", "qsd"])
def test_no_permission_to_mount_on_a_file_of_roots(user, userdir, spec):
    target = userdir / "roots.img"
    target.touch(mode=0o644)  # owned by root, only readable by the user
    proc = user.ringside("serve", str(target), "-t", spec, "--backing", "memory:1M", timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "Permission denied" in proc.stderr  # fusermount3's own reason
    assert "Traceback" not in proc.stderr
    if spec != "qsd":  # qsd's message is the daemon's; ours name the fix
        assert "own" in proc.stderr and "write" in proc.stderr
    assert mounting.find_mount(str(target)) is None


@pytest.mark.parametrize("command", ["serve", "run"])
def test_mountpoint_in_a_directory_the_user_cannot_write(user, userdir, command):
    roots = user.home / f"roots-{command}"
    roots.mkdir(mode=0o755)  # root's, readable by all
    target = roots / "disk.img"
    if command == "serve":
        proc = user.ringside("serve", str(target), "-t", "devfuse", "--backing", "memory:1M")
    else:
        proc = user.ringside("run", "randread-4k-qd1", "-t", "devfuse", "--runtime", "1",
                             "--mountpoint", str(target), "--out", str(userdir / "o"))
    assert proc.returncode == 2, proc.stderr
    assert f"cannot create mountpoint {target}: Permission denied" in proc.stderr
    assert "directory you can write" in proc.stderr and "Traceback" not in proc.stderr


def test_backing_the_user_cannot_open(user, userdir):
    roots = user.home / "roots-images"
    roots.mkdir(mode=0o755)
    image = roots / "image.raw"
    with open(image, "wb") as f:
        f.truncate(1 << 20)
    image.chmod(0o644)  # readable, not writable, by the user
    mountpoint = userdir / "disk.img"
    proc = user.ringside("serve", str(mountpoint), "-t", "devfuse", "--backing", f"file:{image}")
    assert proc.returncode == 2, proc.stderr
    assert f"cannot open backing file {image}: Permission denied" in proc.stderr
    assert "--read-only" in proc.stderr  # the fix it names works:
    served = _serve(user, mountpoint, "devfuse", "--backing", f"file:{image}", "--read-only")
    try:
        _wait_ready(served)
        read = user.run("dd", f"if={mountpoint}", "bs=4096", "count=1", "status=none")
        assert read.returncode == 0 and len(read.stdout) == 4096
    finally:
        served.send_signal(signal.SIGTERM)
        served.communicate(timeout=30)
    assert served.returncode == 0
    image.chmod(0o600)  # not even readable: --read-only cannot help, permissions can
    proc = user.ringside("serve", str(mountpoint), "-t", "devfuse", "--backing", f"file:{image}",
                         "--read-only")
    assert proc.returncode == 2
    assert "Permission denied" in proc.stderr and "check its permissions" in proc.stderr


# -- faults during a user's run ---------------------------------------------------------------
def _user_kill(user: User, mountpoint: Path) -> None:
    (pid,) = serve_processes(mountpoint)
    kill = f"import os, signal; os.kill({pid}, signal.SIGKILL)"
    assert user.run(sys.executable, "-c", kill).returncode == 0


def _user_abort(user: User, mountpoint: Path) -> None:
    # fusectl's abort file belongs to the connection's owner: the user may abort its own.
    entry = mounting.find_mount(str(mountpoint))
    proc = user.run("sh", "-c", f"echo 1 > {FUSECTL}/{entry.minor}/abort")
    assert proc.returncode == 0, proc.stderr


def _user_unmount(user: User, mountpoint: Path) -> None:
    proc = user.run("fusermount3", "-u", "-z", str(mountpoint))
    assert proc.returncode == 0, proc.stderr


USER_FAULTS = {
    "sigkill": (_user_kill, "killed by SIGKILL"),
    "fusectl-abort": (_user_abort, "aborted"),
    "fusermount3-unmount": (_user_unmount, "from outside"),
}


@pytest.mark.usefixtures("fusectl")
@pytest.mark.parametrize("fault", sorted(USER_FAULTS))
def test_fault_during_a_users_run(user, userdir, user_transport, fault):
    mountpoint, out = userdir / "disk.img", userdir / "out"
    jobs = f"{out}/"
    inject, expected = USER_FAULTS[fault]
    proc = subprocess.Popen(
        user.command(sys.executable, "-m", "harness", "run", "randrw-4k-qd16-2jobs", "-t",
                     user_transport, "--runtime", "30", "--backing", "memory:64M",
                     "--mountpoint", str(mountpoint), "--out", str(out)),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: processes_mentioning(jobs), 30, "fio start", proc)
        time.sleep(0.5)
        inject(user, mountpoint)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(jobs, str(mountpoint))
    assert proc.returncode == 1, err
    assert expected in err and "Traceback" not in err, err
    assert_nothing_left(mountpoint, jobs)
    again = user.ringside("run", "randread-4k-qd1", "-t", user_transport, "--runtime", "1",
                          "--backing", "memory:64M", "--mountpoint", str(mountpoint),
                          "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert_nothing_left(mountpoint, jobs)


def test_sched_idle_as_a_user_names_rlimit_nice(user, userdir):
    proc = user.ringside("serve", str(userdir / "disk.img"), "-t", "uring:sched=idle",
                         "--backing", "memory:16M", timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "RLIMIT_NICE" in proc.stderr and "ulimit -e 20" in proc.stderr
    assert "sched=batch" in proc.stderr and "Traceback" not in proc.stderr
    assert mounting.find_mount(str(userdir / "disk.img")) is None


def test_doctor_tells_a_user_why_sched_auto_is_batch(user):
    proc = user.ringside("doctor", timeout=60)
    line = next(ln for ln in proc.stdout.splitlines() if "uring sched=auto" in ln)
    assert "batch: the idle guard could not work" in line and "CAP_SYS_NICE" in line
    assert "ulimit -e 20" in proc.stdout


def test_sched_auto_as_a_user_allowed_to_leave_idle(user, userdir):
    """With CAP_SYS_NICE a user may move its threads off SCHED_IDLE: auto is the guarded
    idle. (RLIMIT_NICE would do too, but raising it needs CAP_SYS_RESOURCE, which root
    lacks on some of these machines.)"""
    out = userdir / "results"
    proc = user.ringside("run", "randread-4k-qd1", "-t", "uring", "--runtime", "1",
                         "--backing", "memory:16M", "--out", str(out), cap="sys_nice")
    assert proc.returncode == 0, proc.stderr
    (result,) = out.glob("*.json")
    stats = json.loads(result.read_text())["transport_stats"]
    assert stats["settings"]["sched"] == "idle" and stats["settings"]["idle_guard"] == "on"
    assert stats["sched_guard"]["checks"] > 0
    assert not [t for t in stats["sched_guard"]["per_thread"] if t["last_error"]]


def test_zerocopy_as_a_user_names_cap_sys_admin(user, userdir):
    proc = user.ringside("serve", str(userdir / "disk.img"), "-t",
                         "uring:buffers=pool,zerocopy=on", "--backing", "memory:16M", timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "zerocopy=on needs CAP_SYS_ADMIN" in proc.stderr and "zerocopy=off" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert mounting.find_mount(str(userdir / "disk.img")) is None
