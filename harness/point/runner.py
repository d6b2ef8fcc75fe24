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

from harness.guests.inside import kernel_section, slowdown, where_run
from harness.point import fio, metrics
from harness.point.serving import READY_PREFIX, connection_end_in, placement_argv
from harness.results import result_stem, run_result, unique_stem, write_result
from harness.scenarios import Scenario, ScenarioPoint
from transports.base import TransportSpec, TransportStatistics, transport_class
from transports.export.backing import open_backing
from transports.export.spec import ExportSpec
from transports.fuse.mounting import (
    find_mount,
    is_stale,
    prepare_mountpoint,
    unmount_if_mounted,
    unmount_mount_id,
)
from transports.peers.peer import PEER_STOP_GRACE_S
from transports.proofs import DATA_OPS, ProofContext, run_proofs

READY_TIMEOUT_S = 30.0 * slowdown()  # an emulated guest starts a Python server slowly
# After fio lost the export: how long a server may take to exit (a user's server unmounts
# through fusermount3 first; on a loaded machine that took > 2 s).
EXIT_GRACE_S = 10.0 * slowdown()
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
COVERAGE_MIN = 0.5


class RunError(RuntimeError):
    """The run failed: the server, fio or a result check; the message says which and why."""


class CheckError(RunError):
    """The run finished but its result does not show what the transport claims."""


@dataclass
class RunOptions:
    transport: TransportSpec
    out: Path
    # A benchmark reads real data: a backing the run creates is filled unless told otherwise.
    export: ExportSpec = ExportSpec(fill="data")
    mountpoint: str | None = None
    ready_timeout: float = READY_TIMEOUT_S
    # Longer than a peer's own grace on SIGTERM: the serving process unmounts after it.
    stop_timeout: float = PEER_STOP_GRACE_S + 10.0
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))


def options_for(scenario: Scenario, opts: RunOptions) -> RunOptions:
    """The run options with the export settings the scenario itself asks for."""
    return dataclasses.replace(opts, export=opts.export.replace(**scenario.export))


# -- checks on transport statistics ------------------------------------------------------
def check_statistics(
    stats: TransportStatistics, context: ProofContext | None = None
) -> list[dict[str, Any]]:
    """Run every proof the transport's statistics declare (transports/proofs.py); raise
    CheckError naming each failed one."""
    results = run_proofs(stats, context or ProofContext())
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
    stats: TransportStatistics, ios: int, names: tuple[str, ...] = DATA_OPS,
    ring_requests: int | None = None, fuse: bool = True,
) -> dict[str, Any]:
    """Data requests the server saw against I/Os fio issued.

    With O_DIRECT every I/O up to max_write is one request. Far fewer requests than I/Os
    means the client's page cache answered and the run measured no transport. A peer
    counts no requests, but an io_uring peer's rings do (`ring_requests`: completions
    over the fio window, every request they carried, data or not). Without FUSE
    (`fuse=False`) there are no requests: coverage does not apply, and that is no warning.
    """
    if not fuse:
        return {"data_requests": None, "fio_ios": ios, "requests_per_io": None,
                "not_applicable": "no FUSE: fio read the backing itself", "warning": None}
    data = stats.data_requests(names)
    if data is None and ring_requests:
        ratio = ring_requests / ios if ios else None
        return {"data_requests": None, "ring_requests": ring_requests, "fio_ios": ios,
                "requests_per_io": ratio,
                "warning": None if ratio is not None and ratio >= COVERAGE_MIN else (
                    f"the server's rings carried {ring_requests} requests for {ios} fio I/Os: "
                    "the client's caches absorbed the I/O")}
    if data is None:
        return {"data_requests": None, "fio_ios": ios, "requests_per_io": None,
                "warning": "the transport counts no requests (a peer server): coverage unknown"}
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

    def connection_end(self) -> str | None:
        """How the server's FUSE connection ended under it, as the server said."""
        return connection_end_in(self.stderr_tail())

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
    spec = opts.export.backing_spec()
    # A new image file is created (and filled) once here for the whole campaign; a memory
    # backing is made afresh by every run's server, so there is nothing to fill yet.
    fill = opts.export.fill == "data" and spec.kind == "file"
    os.close(open_backing(spec, opts.export.read_only, fill=fill))


def server_argv(opts: RunOptions, mountpoint: str, stats_path: str) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "harness",
        "serve",
        mountpoint,
        "--transport",
        str(opts.transport),
        "--stats-out",
        stats_path,
        *opts.export.argv(),
    ]
    return argv + placement_argv(opts.transport)


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
        # Nobody asked it to stop: its connection ended under it, and it said how.
        if ended := server.connection_end():
            return f"{ended}: the run is void"
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
    # A transport without FUSE puts the backing itself on the mountpoint (`direct`).
    fuse = transport_class(opts.transport.name).serves_fuse
    mount_id: int | None = None
    try:
        mountpoint = prepare_mountpoint(mountpoint, log=opts.log)
        out = Path(opts.out)
        out.mkdir(parents=True, exist_ok=True)
        start = _now()
        stem = unique_stem(out, result_stem(point.label, opts.transport.display, start))
        stats_path = os.path.join(workdir, "stats.json")
        server = Server(server_argv(opts, mountpoint, stats_path), os.path.join(workdir, "err"))
        server.wait_ready(opts.ready_timeout)
        entry = find_mount(mountpoint)
        if entry is None or (fuse and not entry.fstype.startswith("fuse")):
            raise RunError(f"the server said it was ready but no {'FUSE ' * fuse}mount is on "
                           f"{mountpoint}")
        mount_id = entry.mount_id
        export_size = os.stat(mountpoint).st_size
        if export_size <= 0:
            raise RunError(f"the export on {mountpoint} has size 0: give a backing with a size")

        jobfile = out / f"{stem}.fio"
        job_point, o_direct = point, None
        if not fuse:  # a FUSE export always takes O_DIRECT; the backing itself may not
            fio_options, o_direct = fio.plan_o_direct(point.fio, fio.o_direct_refusal(mountpoint))
            job_point = dataclasses.replace(point, fio=fio_options)
            if o_direct["note"]:
                opts.log(f"ringside: {point.label} on {opts.transport.display}: "
                         f"{o_direct['note']}")
        jobfile.write_text(fio.job_file(job_point, mountpoint, export_size))
        opts.log(f"ringside: running fio {point.label} on {opts.transport.display} ({jobfile})")
        pids = server.serving_pids()
        before, ctxt0 = metrics.snapshot_many(pids), metrics.system_ctxt()
        sampler = metrics.PlacementSampler(pids)
        try:
            with sampler:
                raw, fio_messages = fio.run_fio(
                    str(jobfile),
                    os.path.join(workdir, "fio.json"),
                    fio_timeout(point),
                    preexec_fn=die_with_parent(),
                    # fio would go on for its whole runtime on a detached mount.
                    watch=lambda: _mount_gone(mountpoint, mount_id),
                )
        except fio.FioStopped as e:
            # The watch saw the mount go; the server, once it has exited, knows whether
            # it was unmounted or its connection aborted (it unmounts either way).
            raise RunError(export_lost(server, mountpoint, mount_id) or str(e)) from None
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
        if o_direct is not None:  # what fio was asked and did, in the result (compare cautions)
            stats["o_direct"] = o_direct
        typed_stats = transport_class(opts.transport.name).statistics_class.from_dict(stats)
        window = metrics.delta(before, after, sampler.samples)
        fio_bytes = sum(d.get("io_bytes", 0) for d in summary["directions"].values())
        checks = check_statistics(typed_stats, ProofContext(window, summary["total_ios"],
                                                            fio_bytes))
        client = summary["client"]
        data = run_result(
            scenario={
                **scenario_meta,
                "point": point.label,
                "sweep": point.sweep,
                "fio": point.fio,
            },
            transport={
                "spec": str(opts.transport),
                "label": opts.transport.display,
                "name": opts.transport.name,
                "settings": opts.transport.settings,
            },
            # As asked for, then what the server found (it reports the effective export).
            export={
                **opts.export.describe(),
                "size": export_size,
                **(stats.get("export") if isinstance(stats.get("export"), dict) else {}),
            },
            start=start.isoformat(),
            end=end.isoformat(),
            command=sys.argv,
            summary=summary,
            server={
                "pid": server.pid,
                "measured_pids": pids,
                "argv": server.argv,
                "exit_code": exit_code,
                "window": window,
                "lifetime": metrics.rusage_dict(server.rusage),
                "stderr_tail": server.stderr_tail(2000),
            },
            system={"ctxt_delta": ctxt1 - ctxt0},
            derived=metrics.per_io(window, client, ctxt1 - ctxt0, summary["total_ios"]),
            transport_stats=stats,
            checks=checks,
            coverage=request_coverage(
                typed_stats, summary["total_ios"],
                ring_requests=window.get("ring_completions")
                if typed_stats.ring_completions_are_requests() else None,
                fuse=fuse,
            ),
            fio_jobfile=jobfile.name,
            fio_messages=fio_messages,
            host=metrics.host(),
            kernel=kernel_section(stats),
            virtualization=where_run(),
            versions=metrics.versions(fio_version),
            git=metrics.git(),
            fio_raw=raw,
            **(extra or {}),
        )
        path = write_result(out, data, stem)
        written = True
        return path
    finally:
        if jobfile is not None and not written:
            jobfile.unlink(missing_ok=True)  # a job file is kept only beside its result
        if server is not None:
            server.stop(opts.stop_timeout)
        unmount_if_mounted(mountpoint)
        if not fuse and mount_id is not None:  # a killed server could not undo its bind mount
            unmount_mount_id(mountpoint, mount_id)
        shutil.rmtree(workdir, ignore_errors=True)
