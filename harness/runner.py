"""One measured run: serve an export in a child process, run fio on it, record a result.

The server runs as its own process (`python -m harness serve ...`, in its own session)
so that its CPU time and context switches are its own and a Ctrl-C on the terminal
reaches only us: we stop the server ourselves (SIGTERM, then SIGKILL), reap it, and
lazily unmount, whatever happened. A run never leaves a mount or a process behind.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import fio, metrics
from harness.results import result_stem, unique_stem, write_result
from harness.scenarios import Scenario, ScenarioPoint
from transports.backing import open_backing, parse_backing, parse_size
from transports.base import TransportSpec
from transports.mounting import find_mount, is_stale, prepare_mountpoint, unmount_if_mounted

READY_PREFIX = "ringside: ready"
EXIT_GRACE_S = 2.0  # after fio lost the export: how long a server may take to exit
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
RING_MIN_SHARE = 0.99
ZERO_COPY_MIN_SHARE = 0.99  # of data-carrying READ/WRITE lent by the kernel, for zerocopy
COVERAGE_MIN = 0.5
DATA_OPS = ("READ", "WRITE")


class RunError(RuntimeError):
    """The run failed: the server, fio or a result check; the message says which and why."""


class CheckError(RunError):
    """The run finished but its result does not show what the transport claims."""


@dataclass
class RunOptions:
    transport: TransportSpec
    out: Path
    backing: str = "memory:1G"
    size: str | None = None  # --size for serve: the size of a new image file
    read_only: bool = False
    growable: bool = False
    cache: str | None = None
    attr_timeout: float | None = None
    fill: str = "data"  # what a backing the run creates holds: "data" or "none" (sparse)
    server_cpus: str | None = None  # serve --cpus: CPU affinity of the server process
    mountpoint: str | None = None
    ready_timeout: float = 30.0
    stop_timeout: float = 10.0
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))


def options_for(scenario: Scenario, opts: RunOptions) -> RunOptions:
    """The run options with the export settings the scenario itself asks for."""
    return dataclasses.replace(opts, **scenario.export)


# -- checks on transport statistics ------------------------------------------------------
def _counters(stats: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The (possibly nested one level) dict of `stats` that holds `key`."""
    if key in stats:
        return stats
    for value in stats.values():
        if isinstance(value, dict) and key in value:
            return value
    return None


def ring_share_check(stats: dict[str, Any]) -> dict[str, Any] | None:
    """A transport that uses a ring must have carried >= 99% of data requests on it.

    A transport claims ring use when it reports `ops_ring` (opcode name -> count carried
    by the ring; present even when the ring carried nothing, so a silent fallback to
    /dev/fuse is caught) or a nonzero `requests_ring`; a `requests_ring` of 0 alone, as a
    /dev/fuse transport reports, claims nothing. Data requests are READ+WRITE from
    `ops` / `ops_ring` when reported, else all requests (`requests` / `requests_ring`).
    """
    counters = _counters(stats, "ops_ring") or _counters(stats, "requests_ring")
    if counters is None:
        return None
    if "ops_ring" not in counters and not counters.get("requests_ring"):
        return None
    ops, ring_ops = counters.get("ops"), counters.get("ops_ring")
    if isinstance(ops, dict) and isinstance(ring_ops, dict):
        basis = "+".join(DATA_OPS)
        total, ring = _data_ops(ops), _data_ops(ring_ops)
    else:
        basis = "all requests"
        total = int(counters.get("requests", 0))
        ring = int(counters.get("requests_ring", 0))
    share = ring / total if total else 0.0
    ok = total > 0 and share >= RING_MIN_SHARE
    reason = (
        f"the ring carried {ring} of {total} {basis} requests ({share:.2%}); "
        f"at least {RING_MIN_SHARE:.0%} is required for a ring result"
    )
    return {
        "name": "ring_share",
        "ok": ok,
        "share": share,
        "ring": ring,
        "total": total,
        "basis": basis,
        "reason": reason,
    }


def _data_ops(ops: dict[str, Any], names: tuple[str, ...] = DATA_OPS) -> int:
    # Transports name opcodes "READ" or "read"; either counts.
    return sum(int(n) for op, n in ops.items() if op.upper() in names)



def mlock_check(stats: dict[str, Any]) -> dict[str, Any] | None:
    """A run labelled buffers=mlock must show its ring buffers locked (VmLck >= needed)."""
    settings = stats.get("settings") or {}
    if settings.get("buffers") != "mlock":
        return None
    locked = int(stats.get("locked_bytes") or 0)
    needed = int((stats.get("memlock") or {}).get("needed_bytes") or 0)
    ok = needed > 0 and locked >= needed
    reason = (
        f"the server had {locked} bytes locked (VmLck) for {needed} bytes of ring buffers"
        + ("" if ok else "; an mlock result needs every buffer locked")
    )
    return {"name": "mlock", "ok": ok, "locked_bytes": locked, "needed_bytes": needed,
            "pinning": stats.get("pinning"), "reason": reason}


def pinned_check(stats: dict[str, Any]) -> dict[str, Any] | None:
    """A run labelled buffers=pinned must show the kernel's pin: every queue's pool listed,
    whole, among the ring's registered buffers (fdinfo UserBufs), and, for a server
    without CAP_IPC_LOCK, charged to it (VmPin >= the pools)."""
    settings = stats.get("settings") or {}
    if settings.get("buffers") != "pinned":
        return None
    queues = stats.get("per_queue") or []
    registered = [bool((q.get("registration") or {}).get("pool_registered")) for q in queues]
    memlock = stats.get("memlock") or {}
    needed = int(memlock.get("needed_bytes") or 0)
    charged = not memlock.get("cap_ipc_lock", False)
    pinned = int(stats.get("pinned_bytes") or 0)
    ok = bool(queues) and all(registered) and needed > 0 and (not charged or pinned >= needed)
    reason = (
        f"{sum(registered)} of {len(queues)} queues show their pool registered in the ring's "
        f"fdinfo (UserBufs)"
        + (f"; VmPin {pinned} bytes for {needed} bytes of pools" if charged
           else "; CAP_IPC_LOCK: nothing charged to VmPin")
        + ("" if ok else "; a pinned result needs every pool registered (and charged)")
    )
    return {"name": "pinned", "ok": ok, "queues_registered": sum(registered),
            "queues": len(queues), "pinned_bytes": pinned, "needed_bytes": needed,
            "charged": charged, "pinning": stats.get("pinning"), "reason": reason}


def zerocopy_check(stats: dict[str, Any]) -> dict[str, Any] | None:
    """A zerocopy=on run: >= 99% of data-carrying READ/WRITE arrived with lent pages."""
    settings = stats.get("settings") or {}
    if settings.get("zerocopy") != "on":
        return None
    buffers = stats.get("buffers") or {}
    zc, copied = int(buffers.get("zc_requests", 0)), int(buffers.get("copied_requests", 0))
    total = zc + copied
    share = zc / total if total else 0.0
    ok = total > 0 and share >= ZERO_COPY_MIN_SHARE
    reason = (
        f"{zc} of {total} data-carrying READ/WRITE requests arrived zero-copied "
        f"({share:.2%}); at least {ZERO_COPY_MIN_SHARE:.0%} is required for a zerocopy result"
    )
    return {"name": "zerocopy", "ok": ok, "share": share, "zero_copied": zc,
            "copied": copied, "zc_bytes": int(buffers.get("zc_bytes", 0)),
            "copied_bytes": int(buffers.get("copied_bytes", 0)), "reason": reason}


CHECKS: list[Callable[[dict[str, Any]], dict[str, Any] | None]] = [
    ring_share_check, mlock_check, pinned_check, zerocopy_check,
]


def check_statistics(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Run every check that applies; raise CheckError naming each failed one."""
    results = [r for r in (check(stats) for check in CHECKS) if r is not None]
    failed = [r for r in results if not r["ok"]]
    if failed:
        raise CheckError("; ".join(f"{r['name']} check failed: {r['reason']}" for r in failed))
    return results


def die_with_parent() -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when the runner dies, even by SIGKILL.

    The server then unmounts and exits as on any SIGTERM, so even a killed runner leaves
    no mount or process. (The signal follows the death of the thread that started the
    child: run points from a thread that outlives them.)
    """
    parent = os.getpid()

    def in_child() -> None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the runner died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def request_coverage(
    stats: dict[str, Any], ios: int, names: tuple[str, ...] = DATA_OPS
) -> dict[str, Any]:
    """Data requests the server saw against I/Os fio issued.

    With O_DIRECT every I/O up to max_write is one request. Far fewer requests than I/Os
    means the client's page cache answered and the run measured no transport.
    """
    counters = _counters(stats, "ops")
    if counters is None or not isinstance(counters.get("ops"), dict):
        return {"data_requests": None, "fio_ios": ios, "requests_per_io": None,
                "warning": "the transport counts no requests (a peer server): coverage unknown"}
    data = _data_ops(counters["ops"], names)
    ratio = data / ios if ios else None
    warning = None
    if ratio is not None and ratio < COVERAGE_MIN:
        warning = (
            f"the server saw {data} data requests for {ios} fio I/Os ({ratio:.2f} per I/O): "
            "the client's caches absorbed the I/O and this run measured no transport; "
            "use direct=1, --cache direct, or attr_timeout = 0 for metadata"
        )
    return {"data_requests": data, "ops": list(names), "fio_ios": ios,
            "requests_per_io": ratio, "warning": warning}


# -- the server child --------------------------------------------------------------------
class Server:
    """`python -m harness serve` as a child in its own session; reaped by us (wait4)."""

    def __init__(self, argv: list[str], stderr_path: str):
        self.argv = argv
        self.stderr_path = stderr_path
        self.exit_code: int | None = None
        self.rusage: Any = None
        self.stdout_lines: list[str] = []
        self._ready = threading.Event()
        self._group_killed = False
        with open(stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        # Drained all along so a chatty server never blocks on a full pipe.
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout_lines.append(line.rstrip("\n"))
            if line.startswith(READY_PREFIX):
                self._ready.set()

    def stderr_tail(self, limit: int = 4000) -> str:
        try:
            with open(self.stderr_path) as f:
                return f.read()[-limit:].strip()
        except OSError:
            return ""

    def exited(self) -> bool:
        """True once the child has exited; it is left unreaped so wait4 gets its rusage."""
        if self.exit_code is not None:
            return True
        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return info is not None

    def serving_pids(self) -> list[int]:
        """The processes the ready line names as doing the serving (qsd: the daemon)."""
        for line in self.stdout_lines:
            if line.startswith(READY_PREFIX):
                m = re.search(r"\(server pids ([\d,]+)\)", line)
                if m:
                    return [int(p) for p in m.group(1).split(",")]
        return [self.pid]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.exited():
                self._reap(block=True)
                raise RunError(
                    f"the server exited with code {self.exit_code} before it was ready:\n"
                    + (self.stderr_tail() or "(no output on stderr)")
                )
            if time.monotonic() > deadline:
                raise RunError(
                    f"the server was not ready after {timeout:.0f} s:\n"
                    + (self.stderr_tail() or "(no output on stderr)")
                )

    def _reap(self, block: bool) -> bool:
        if self.exit_code is not None:
            return True
        pid, status, rusage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return False
        self.exit_code = os.waitstatus_to_exitcode(status)
        self.rusage = rusage
        self.proc.returncode = self.exit_code  # so Popen does not think it still runs
        return True

    def stop(self, timeout: float) -> int:
        """SIGTERM, SIGKILL after `timeout`, reap; return the exit code. Idempotent."""
        if self.exit_code is None:
            if not self.exited():
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while not self._reap(block=False):
                if time.monotonic() > deadline:
                    self._kill_group()
                    self._reap(block=True)
                    break
                time.sleep(0.02)
        if not self._group_killed:
            # Anything the server started; only once, as the group id could be reused later.
            self._kill_group()
            self._group_killed = True
        self._reader.join(timeout=2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        assert self.exit_code is not None
        return self.exit_code

    def _kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# -- one run -----------------------------------------------------------------------------
def preflight_backing(opts: RunOptions) -> None:
    """Open the backing as the server will, so a bad one is reported before anything runs."""
    size = parse_size(opts.size) if opts.size is not None else None
    spec = parse_backing(opts.backing, size)
    # A new image file is created (and filled) once here for the whole campaign; a memory
    # backing is made afresh by every run's server, so there is nothing to fill yet.
    fill = opts.fill == "data" and spec.kind == "file"
    os.close(open_backing(spec, opts.read_only, fill=fill))


def server_argv(opts: RunOptions, mountpoint: str, stats_path: str) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "harness",
        "serve",
        mountpoint,
        "--transport",
        str(opts.transport),
        "--backing",
        opts.backing,
        "--stats-out",
        stats_path,
        "--fill",
        opts.fill,
    ]
    if opts.size is not None:
        argv += ["--size", opts.size]
    if opts.read_only:
        argv.append("--read-only")
    if opts.growable:
        argv.append("--growable")
    if opts.cache is not None:
        argv += ["--cache", opts.cache]
    if opts.attr_timeout is not None:
        argv += ["--attr-timeout", str(opts.attr_timeout)]
    if opts.server_cpus is not None:
        argv += ["--cpus", opts.server_cpus]
    return argv


def _now() -> datetime:
    return datetime.now().astimezone()


def exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _mount_gone(mountpoint: str, mount_id: int) -> str | None:
    entry = find_mount(mountpoint)
    if entry is None or entry.mount_id != mount_id:
        return (
            f"the mount on {mountpoint} was removed during the run (unmounted from outside, "
            "e.g. by `umount` or `fusermount3 -u`): the run is void"
        )
    return None


def export_lost(server: Server, mountpoint: str, mount_id: int) -> str | None:
    """Why fio lost the export, when it did: the server ended, or the mount went or died.

    None while the server runs and its mount answers: fio failed for its own reasons.
    """
    if not server.exited():
        gone = _mount_gone(mountpoint, mount_id)
        if gone is None and not is_stale(mountpoint):
            return None
        # The mount is gone or dead: give a server that is on its way out time to go, so
        # the message can say how it ended.
        deadline = time.monotonic() + EXIT_GRACE_S
        while not server.exited() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not server.exited():
            return gone or (
                f"the FUSE connection on {mountpoint} was aborted during the run (e.g. "
                "through /sys/fs/fuse/connections/N/abort): the mount answers ENOTCONN"
            )
    server.stop(0)
    if server.exit_code == 0:
        # Nobody asked it to stop: its connection ended under it.
        return (
            "the server exited during the run (exit code 0) without being asked to stop: "
            "its FUSE connection was aborted (e.g. through /sys/fs/fuse/connections) or "
            "its mount was removed from outside"
        )
    return f"the server died during the run ({exit_text(server.exit_code)})"


def fio_timeout(point: ScenarioPoint) -> float:
    params = point.fio
    if params.get("time_based") and "runtime" in params:
        return params["runtime"] + params.get("ramp_time", 0) + 60.0
    return 3600.0  # a size-bound job: only guard against a hang


def run_point(
    point: ScenarioPoint,
    opts: RunOptions,
    scenario_meta: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Run one scenario point against a fresh server; return the result file's path."""
    fio_version = fio.fio_version()  # also fails early when fio is missing
    preflight_backing(opts)
    workdir = tempfile.mkdtemp(prefix="ringside-run-")
    mountpoint = opts.mountpoint or os.path.join(workdir, "disk.img")
    server: Server | None = None
    jobfile: Path | None = None
    written = False
    try:
        mountpoint = prepare_mountpoint(mountpoint, log=opts.log)
        out = Path(opts.out)
        out.mkdir(parents=True, exist_ok=True)
        start = _now()
        stem = unique_stem(out, result_stem(point.label, str(opts.transport), start))
        stats_path = os.path.join(workdir, "stats.json")
        server = Server(server_argv(opts, mountpoint, stats_path), os.path.join(workdir, "err"))
        server.wait_ready(opts.ready_timeout)
        entry = find_mount(mountpoint)
        if entry is None or not entry.fstype.startswith("fuse"):
            raise RunError(f"the server said it was ready but no FUSE mount is on {mountpoint}")
        mount_id = entry.mount_id
        export_size = os.stat(mountpoint).st_size
        if export_size <= 0:
            raise RunError(f"the export on {mountpoint} has size 0: give a backing with a size")

        jobfile = out / f"{stem}.fio"
        jobfile.write_text(fio.job_file(point, mountpoint, export_size))
        opts.log(f"ringside: running fio {point.label} on {opts.transport} ({jobfile})")
        pids = server.serving_pids()
        before, ctxt0 = metrics.snapshot_many(pids), metrics.system_ctxt()
        try:
            raw, fio_messages = fio.run_fio(
                str(jobfile),
                os.path.join(workdir, "fio.json"),
                fio_timeout(point),
                preexec_fn=die_with_parent(),
                # fio would go on for its whole runtime on a detached mount.
                watch=lambda: _mount_gone(mountpoint, mount_id),
            )
        except fio.FioStopped as e:
            raise RunError(str(e)) from None
        except fio.FioError as e:
            lost = export_lost(server, mountpoint, mount_id)
            if lost is not None:
                tail = server.stderr_tail() if server.exited() else ""
                raise RunError("\n".join(filter(None, [f"{lost}:", tail, f"fio: {e}"]))) from None
            raise
        ctxt1 = metrics.system_ctxt()
        gone = _mount_gone(mountpoint, mount_id)
        if gone is not None:  # fio finished before the watch saw it
            raise RunError(gone)
        try:
            after = metrics.snapshot_many(pids)
        except ProcessLookupError:
            after = None
        if after is None or server.exited():
            server.stop(0)
            raise RunError(
                f"the server exited during the run ({exit_text(server.exit_code)}):\n"
                + server.stderr_tail()
            )
        summary = fio.summarize(raw)

        exit_code = server.stop(opts.stop_timeout)
        end = _now()
        if find_mount(mountpoint) is not None:
            raise RunError(f"the server exited but left its mount on {mountpoint}")
        if exit_code != 0:
            raise RunError(
                f"the server exited with code {exit_code} when stopped:\n" + server.stderr_tail()
            )
        try:
            with open(stats_path) as f:
                stats = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise RunError(f"the server wrote no readable statistics ({stats_path}): {e}") from e
        checks = check_statistics(stats)

        window = metrics.delta(before, after)
        client = summary["client"]
        data = {
            "kind": "run",
            "scenario": {
                **scenario_meta,
                "point": point.label,
                "sweep": point.sweep,
                "fio": point.fio,
            },
            "transport": {
                "spec": str(opts.transport),
                "name": opts.transport.name,
                "settings": opts.transport.settings,
            },
            "export": {
                "backing": opts.backing,
                "size": export_size,
                "read_only": opts.read_only,
                "growable": opts.growable,
                "cache": opts.cache,
                "fill": opts.fill,
                **(stats.get("export") if isinstance(stats.get("export"), dict) else {}),
            },
            "start": start.isoformat(),
            "end": end.isoformat(),
            "command": sys.argv,
            "summary": summary,
            "server": {
                "pid": server.pid,
                "measured_pids": pids,
                "argv": server.argv,
                "exit_code": exit_code,
                "window": window,
                "lifetime": metrics.rusage_dict(server.rusage),
                "stderr_tail": server.stderr_tail(2000),
            },
            "system": {"ctxt_delta": ctxt1 - ctxt0},
            "derived": metrics.per_io(window, client, ctxt1 - ctxt0, summary["total_ios"]),
            "transport_stats": stats,
            "checks": checks,
            "coverage": request_coverage(stats, summary["total_ios"]),
            "fio_jobfile": jobfile.name,
            "fio_messages": fio_messages,
            "host": metrics.host(),
            "versions": metrics.versions(fio_version),
            "git": metrics.git(),
            "fio_raw": raw,
            **(extra or {}),
        }
        path = write_result(out, data, stem)
        written = True
        return path
    finally:
        if jobfile is not None and not written:
            jobfile.unlink(missing_ok=True)  # a job file is kept only beside its result
        if server is not None:
            server.stop(opts.stop_timeout)
        unmount_if_mounted(mountpoint)
        shutil.rmtree(workdir, ignore_errors=True)
