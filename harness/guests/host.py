"""The host side of `ringside guest`: boot another kernel in a throw-away guest (virtme-ng
on qemu), run a command there, stop the guest.

The guest shares the host's files read-only (same checkout, same virtual environment)
and the result directories read-write, so results land on the host as if run there. It
runs guest-init.sh with a status directory, also shared read-write, where this side
wrote params.sh first (the command, its environment with the GuestFacts of this boot,
which inside.py reads back); the script leaves the command's exit status there, so the
exit code passes through. virtme-ng's console carries the kernel's messages and the
command's output on one stream: lines before the guest script starts are the boot,
printk lines (`[ 12.3] ...`) are console, everything else is the command's output and
streams to our stdout.

A TCG boot can stall for good (seen here once in about eight boots under load) or die
before the command starts (a kernel panic at 2.4 s, once under load): a boot with no
console line for BOOT_STALL_S is stopped, and either is retried up to BOOT_ATTEMPTS
times. Every exit path stops qemu (its own process group: SIGTERM, then SIGKILL) and
reaps it; should this process die unannounced, the reaper (reaper.py) does.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.guests import kernels
from harness.guests.inside import GuestFacts
from harness.guests.reaper import group_alive, stop_group

QEMU = "qemu-system-x86_64"
SCRIPT_STARTED = "virtme-ng-init: starting script"
PRINTK = re.compile(r"\[\s*\d+\.\d+\]\s")  # a kernel console line, possibly mid-line
BOOT_STALL_S = 90.0  # no console line for this long before the script starts: stalled
BOOT_LIMIT_S = 600.0  # a boot that has not started the script by then never will
BOOT_ATTEMPTS = 3
STOP_GRACE_S = 5.0
GRACEFUL_STOP_S = 30.0  # for a command to stop itself after Ctrl-C (x4 under TCG)
MIN_FREE_BYTES = 64 << 20  # a result directory with less cannot take a run's result + job
# What the guest runs first, from the checkout the guest shares (package data: pyproject).
GUEST_INIT = Path(__file__).with_name("guest-init.sh")
# The outcome of the last KVM boot on this host, so that `--accel auto` does not pay for a
# KVM that cannot boot on every guest, and doctor can say whether KVM boots.
KVM_VERDICT = kernels.CACHE_DIR.parent / "kvm-verdict.json"


class GuestError(RuntimeError):
    """The guest could not run the command; the message says why and, if known, the fix."""


@dataclass
class GuestOptions:
    kernel: kernels.Kernel
    cpus: int = 2
    memory: str = "4G"
    accel: str = "auto"  # auto | kvm | tcg
    console: bool = False  # echo the guest's kernel console to stderr
    rwdirs: list[Path] = field(default_factory=list)
    command: bool = False  # ARGS is a command line, not `ringside` arguments
    env: dict[str, str] = field(default_factory=dict)
    boot_stall_s: float = BOOT_STALL_S
    attempts: int = BOOT_ATTEMPTS
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))


@dataclass
class Attempt:
    """What one qemu boot did."""

    started: bool = False  # the guest script began: the command ran (do not retry)
    stalled: bool = False
    exit_status: int | None = None
    console: collections.deque = field(default_factory=lambda: collections.deque(maxlen=30))
    returncode: int | None = None
    boot_s: float | None = None


# -- facts about the host ---------------------------------------------------------------
def qemu_version() -> str | None:
    path = shutil.which(QEMU)
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else None


def vng_path() -> str | None:
    """virtme-ng's `vng` from this interpreter's environment (it runs `virtme-run` from
    PATH, so that directory goes first on the child's PATH)."""
    candidate = Path(sys.executable).parent / "vng"
    return str(candidate) if candidate.exists() else shutil.which("vng")


def kvm_unusable() -> str | None:
    """Why /dev/kvm cannot be used, or None when it opens."""
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        return f"/dev/kvm does not open ({e.strerror})"
    return None


def doctor_lines() -> list[tuple[str, bool, str, str]]:
    """(name, ok, state, fix) of everything a guest needs, for `ringside doctor`."""
    out = []
    qemu = qemu_version()
    out.append((QEMU, qemu is not None, f"version {qemu}" if qemu else "missing",
                "`apt-get install qemu-system-x86` (or `make setup`)"))  # fmt: skip
    why = kvm_unusable()
    if why:
        out.append(("KVM", False, f"{why}: guests run under TCG (emulated)",
                    "none needed: TCG works; for KVM run on a host with /dev/kvm"))  # fmt: skip
    else:
        verdict = kvm_verdict()
        if verdict is None:
            state, ok = "/dev/kvm opens; no guest booted under KVM yet on this host", True
        elif verdict.get("boots"):
            state, ok = f"/dev/kvm opens and a guest booted ({verdict.get('when')})", True
        else:
            state, ok = (f"/dev/kvm opens but a guest does not boot ({verdict.get('reason')}"
                         f", {verdict.get('when')}): guests run under TCG (emulated)"), False
        out.append(("KVM", ok, state, "`ringside guest --kernel 7.3 --accel kvm -- doctor` "
                    "tries again"))  # fmt: skip
    busybox = shutil.which("busybox")
    out.append(("busybox", busybox is not None, busybox or "missing",
                "`apt-get install busybox-static` (or `make setup`)"))  # fmt: skip
    vng = vng_path()
    out.append(("virtme-ng", vng is not None, vng or "missing", "`make setup` (pip, in .venv)"))
    found = kernels.cached()
    out.append(("guest kernels", bool(found),
                ", ".join(f"{k.name}" for k in found) or f"none cached in {kernels.CACHE_DIR}",
                f"`{kernels.fetch_command('7.3')}`"))  # fmt: skip
    return out


def requirements() -> list[str]:
    """What the host lacks to boot a guest, each with its fix."""
    missing = []
    if shutil.which(QEMU) is None:
        missing.append(f"{QEMU} is missing: `apt-get install qemu-system-x86` (or `make setup`)")
    if vng_path() is None:
        missing.append("virtme-ng (vng) is missing: `make setup` installs it into .venv")
    if shutil.which("busybox") is None:
        missing.append("busybox is missing: `apt-get install busybox-static` (or `make setup`)")
    return missing


# -- where the command's results go -----------------------------------------------------
def result_dirs(args: list[str], default: Path = Path("results")) -> list[Path]:
    """The directories the ringside command in ARGS writes results to (its --out)."""
    outs = []
    for i, arg in enumerate(args):
        if arg == "--out" and i + 1 < len(args):
            outs.append(Path(args[i + 1]))
        elif arg.startswith("--out="):
            outs.append(Path(arg.split("=", 1)[1]))
    return [p.absolute() for p in (outs or [default])]


def check_writable(directory: Path) -> None:
    """A result directory the guest can write a result into, or GuestError saying why."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GuestError(f"cannot create result directory {directory}: {e.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise GuestError(f"result directory {directory} is not writable by this user")
    free = shutil.disk_usage(directory).free
    if free < MIN_FREE_BYTES:
        raise GuestError(
            f"result directory {directory} is full ({free >> 20} MiB free, a run needs "
            f"{MIN_FREE_BYTES >> 20}): free space there or give --out DIR elsewhere"
        )


def tidy_results(dirs: list[Path], since: float) -> list[Path]:
    """Remove what a stopped guest left half-written: temp files of an unfinished result
    and fio job files without their result (the runner keeps a job file only beside its
    result, but a killed guest never runs its cleanup). Finished results stay."""
    removed = []
    for d in dirs:
        if not d.is_dir():
            continue
        for p in list(d.glob(".*.tmp")) + list(d.glob("*.fio")):
            try:
                if p.stat().st_mtime < since:
                    continue
                if p.suffix == ".fio" and p.with_suffix(".json").exists():
                    continue
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


# -- what the guest runs ----------------------------------------------------------------
def guest_parameters(args: list[str], opts: GuestOptions, facts: GuestFacts) -> str:
    """params.sh, which guest-init.sh sources: the command's environment (the facts of
    this boot among it), working directory, console setting and command line."""
    command = args if opts.command else [sys.executable, "-m", "harness", *args]
    env = {
        **facts.environment(),
        "PYTHONUNBUFFERED": "1",  # the console is no tty: stream lines as they come
        # The checkout is read-only in the guest; hypothesis keeps its examples here.
        "HYPOTHESIS_STORAGE_DIRECTORY": "/tmp/ringside-hypothesis",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        **opts.env,
    }
    lines = [f"# ringside guest: the parameters of {GUEST_INIT.name}, written on the host"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    lines += [
        f"workdir={shlex.quote(os.getcwd())}",
        f"show_console={int(opts.console)}",
        f"command=({' '.join(map(shlex.quote, command))})",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class BootCommand:
    """The vng command line of one boot and the facts it was built with. The accelerator is
    chosen once, when the command is built: the argv says it to qemu (--disable-kvm),
    params.sh to the guest, and the host reads it back from here."""

    argv: list[str]
    facts: GuestFacts


def boot_command(opts: GuestOptions, accel: str, status: Path, rwdirs: list[Path]) -> BootCommand:
    """The vng command that boots opts.kernel under `accel` (kvm | tcg) and runs
    guest-init.sh with `status`; `rwdirs` are shared read-write."""
    facts = GuestFacts(accel=accel, qemu_version=qemu_version() or "unknown",
                       kernel=opts.kernel.name)  # fmt: skip
    vng = vng_path()
    if vng is None:
        raise GuestError("virtme-ng (vng) is missing: run `make setup`")
    kernel = opts.kernel
    target = kernel.build_tree if kernel.build_tree is not None else kernel.image
    argv = [vng, "--verbose", "--run", str(target), "--cpus", str(opts.cpus),
            "--memory", opts.memory, "--name", "ringside-guest",
            # qemu 7.2's C virtiofsd is found, fails, and costs seconds before 9p is used.
            "--force-9p"]  # fmt: skip
    if facts.emulated:
        argv.append("--disable-kvm")
    for d in rwdirs:
        argv += ["--rwdir", str(d)]
    # A Python under /root (pyenv) is reached by a test user only after a chmod of /root,
    # which the read-only root refuses: a throw-away overlay takes it (virtme-ng overlays
    # /etc, /home, /tmp, /var... but not /root).
    if Path(sys.executable).resolve().is_relative_to("/root"):
        argv += ["--overlay-rwdir", "/root"]
    argv += ["--exec", shlex.join(["bash", str(GUEST_INIT), str(status)])]
    return BootCommand(argv, facts)


# -- running qemu -----------------------------------------------------------------------
class Guest:
    """One vng/qemu process group, its console read on a thread."""

    def __init__(
        self, command: BootCommand, opts: GuestOptions, attempt: Attempt,
        leftovers: list[Path],
    ):  # fmt: skip
        self.facts = command.facts
        argv = command.argv
        self.opts = opts
        self.attempt = attempt
        self.last_line = time.monotonic()
        env = dict(os.environ, PATH=f"{Path(argv[0]).parent}:{os.environ.get('PATH', '')}")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the guest ourselves
        )
        # Stops the group (qemu is vng's grandchild) should this process die unannounced.
        self.reaper = subprocess.Popen(
            [sys.executable, "-m", "harness.guests.reaper", str(self.proc.pid),
             *map(str, leftovers)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[2], start_new_session=True,  # where harness/ is
        )  # fmt: skip
        self.started_at = time.monotonic()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", "")
            self.last_line = time.monotonic()
            attempt = self.attempt
            if not attempt.started:
                attempt.console.append(line)
                if self.opts.console:
                    print(line, file=sys.stderr, flush=True)
                if SCRIPT_STARTED in line:
                    attempt.started = True
                    attempt.boot_s = time.monotonic() - self.started_at
                continue
            if line.lstrip().startswith("qemu-system"):
                m = re.match(r"\s*", line)
            else:
                m = PRINTK.search(line)
            if m is not None:
                # The console may cut into a line of output: keep the output's part.
                if line[: m.start()].strip():
                    sys.stdout.write(line[: m.start()])
                    sys.stdout.flush()
                attempt.console.append(line[m.start() :])
                if self.opts.console:
                    print(line[m.start() :], file=sys.stderr, flush=True)
                continue
            attempt.console.append(line)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def wait(self) -> int:
        """Until qemu exits or its boot stalls (then it is stopped)."""
        while True:
            try:
                return self.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
            if self.attempt.started:
                continue
            now = time.monotonic()
            if (now - self.last_line > self.opts.boot_stall_s
                    or now - self.started_at > BOOT_LIMIT_S):  # fmt: skip
                self.attempt.stalled = True
                self.stop()
                return self.proc.returncode

    def stop(self) -> None:
        """SIGTERM the whole group, SIGKILL what is left, reap; no qemu survives."""
        pgid = self.proc.pid
        stop_group(pgid, STOP_GRACE_S)
        self.proc.wait()
        self.reader.join(timeout=2)
        if group_alive(pgid):
            raise GuestError(f"qemu process group {pgid} survived SIGKILL")

    def release_reaper(self) -> None:
        """The group is gone and we know it: the reaper leaves it be and exits."""
        reaper = self.reaper
        if reaper.poll() is None:
            try:
                reaper.communicate(b"done", timeout=10)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                reaper.kill()
                reaper.wait()


def _boot_failure(attempt: Attempt) -> str:
    """The console line that best says why a boot failed: qemu's error, a panic, the last."""
    lines = [line.strip() for line in attempt.console if line.strip()]
    for line in reversed(lines):
        m = re.search(r"(qemu-system\S*: .*|Kernel panic.*)", line)
        if m:
            return m.group(1)
    return lines[-1] if lines else "(no console output)"


def run(args: list[str], opts: GuestOptions) -> int:
    """Boot the guest, run ARGS in it, return its exit code."""
    missing = requirements()
    if missing:
        raise GuestError("cannot boot a guest: " + "; ".join(missing))
    kernel = opts.kernel
    missing_configs = kernel.missing_uring_configs()
    if missing_configs:
        raise kernels.KernelError(
            f"kernel {kernel.name} ({kernel.release}) cannot serve FUSE over io_uring: its "
            f"config ({kernel.config}) lacks {', '.join(c + '=y' for c in missing_configs)}"
        )
    # A ringside command writes results to its --out; a --command only where it is told.
    rwdirs = ([] if opts.command else result_dirs(args)) + opts.rwdirs
    for d in rwdirs:
        check_writable(d)
    accels = _accels(opts)
    since = time.time()
    status = Path(tempfile.mkdtemp(prefix="ringside-guest-"))
    try:
        attempts = 0
        while True:
            accel = accels[0]
            command = boot_command(opts, accel, status, [*rwdirs, status])
            (status / "params.sh").write_text(guest_parameters(args, opts, command.facts))
            (status / "exit").unlink(missing_ok=True)
            attempt = Attempt()
            guest = Guest(command, opts, attempt, leftovers=[status])
            try:
                attempt.returncode = guest.wait()
            except KeyboardInterrupt:
                code = _interrupted(guest, attempt, status, opts)
                _report_tidy(tidy_results(rwdirs, since), opts.log)
                if code is None:
                    raise
                return code
            finally:
                if guest.proc.poll() is None or group_alive(guest.proc.pid):
                    guest.stop()
                guest.release_reaper()
            attempts += 1
            exit_file = status / "exit"
            if attempt.started and accel == "kvm":
                record_kvm_verdict(True)
            if exit_file.exists():
                opts.log(f"ringside guest: boot took {attempt.boot_s:.0f} s ({accel})")
                return int(exit_file.read_text().strip() or 1)
            if attempt.started:
                _report_tidy(tidy_results(rwdirs, since), opts.log)
                raise GuestError(
                    f"the guest stopped before the command finished (qemu exit "
                    f"{attempt.returncode}); its last console lines:\n"
                    + "\n".join(attempt.console)
                )
            if accel == "kvm" and not attempt.stalled:
                record_kvm_verdict(False, _boot_failure(attempt))
            if accel == "kvm" and opts.accel == "auto" and len(accels) > 1:
                opts.log(
                    f"ringside guest: KVM did not boot the guest ({_boot_failure(attempt)}): "
                    "running under TCG, an emulated CPU (timings show correctness and "
                    "relative cost, not speed)"
                )
                accels.pop(0)
                attempts = 0
                continue
            if attempts < opts.attempts:
                # An emulated boot can also die before the command starts (seen: a panic
                # in sched_clock_cpu at 2.4 s of guest time while the host was loaded);
                # nothing ran yet, so a fresh boot is safe.
                how = (
                    f"made no progress for {opts.boot_stall_s:.0f} s" if attempt.stalled
                    else f"ended before the command started (qemu exited with "
                    f"{attempt.returncode})"
                )
                opts.log(
                    f"ringside guest: the boot {how} (last console line: "
                    f"{_boot_failure(attempt)}): retrying ({attempts + 1}/{opts.attempts})"
                )
                continue
            why = "stalled" if attempt.stalled else f"qemu exited with {attempt.returncode}"
            raise GuestError(
                f"the guest did not boot kernel {kernel.name} ({why}, {attempts} attempt(s)); "
                "its last console lines:\n" + "\n".join(attempt.console)
            )
    finally:
        shutil.rmtree(status, ignore_errors=True)


def _verdict_key() -> dict[str, Any]:
    return {"host_kernel": os.uname().release, "qemu": qemu_version()}


def kvm_verdict() -> dict[str, Any] | None:
    """The last KVM boot's outcome on this host kernel and qemu: {"boots": bool, ...}."""
    try:
        data = json.loads(KVM_VERDICT.read_text())
    except (OSError, ValueError):
        return None
    key = _verdict_key()
    return data if all(data.get(k) == v for k, v in key.items()) else None


def record_kvm_verdict(boots: bool, reason: str = "") -> None:
    try:
        KVM_VERDICT.parent.mkdir(parents=True, exist_ok=True)
        KVM_VERDICT.write_text(json.dumps({
            **_verdict_key(), "boots": boots, "reason": reason,
            "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }) + "\n")  # fmt: skip
    except OSError:
        pass  # a read-only checkout: the next auto boot tries KVM again


def _interrupted(guest: Guest, attempt: Attempt, status: Path, opts: GuestOptions) -> int | None:
    """Ctrl-C: let a running command stop itself (its cleanup runs in the guest), then
    stop qemu; a second Ctrl-C, or a boot not yet done, stops qemu at once. The
    command's exit code when it finished, else None."""
    if attempt.started and guest.proc.poll() is None:
        opts.log("ringside guest: interrupted: stopping the command in the guest "
                 "(Ctrl-C again stops the guest at once)")  # fmt: skip
        (status / "stop").touch()
        try:
            guest.proc.wait(timeout=GRACEFUL_STOP_S * (4 if guest.facts.emulated else 1))
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            pass
    if guest.proc.poll() is None or group_alive(guest.proc.pid):
        opts.log("ringside guest: stopping the guest")
    guest.stop()
    exit_file = status / "exit"
    if not exit_file.exists():
        return None
    code = int(exit_file.read_text().strip() or 1)
    # A command that finished 0 just as the stop arrived was still interrupted.
    return code or 130


def _accels(opts: GuestOptions) -> list[str]:
    if opts.accel == "tcg":
        return ["tcg"]
    why = kvm_unusable()
    if opts.accel == "kvm":
        if why:
            raise GuestError(f"--accel kvm: {why}; use --accel tcg (emulated) or auto")
        return ["kvm"]
    if why:
        opts.log(f"ringside guest: {why}: running under TCG, an emulated CPU")
        return ["tcg"]
    verdict = kvm_verdict()
    if verdict is not None and not verdict.get("boots"):
        opts.log(
            f"ringside guest: KVM did not boot a guest on this host ({verdict.get('reason')}, "
            f"{verdict.get('when')}): running under TCG, an emulated CPU (timings show "
            "correctness and relative cost, not speed); `--accel kvm` tries KVM again"
        )
        return ["tcg"]
    return ["kvm", "tcg"]


def _report_tidy(removed: list[Path], log: Callable[[str], None]) -> None:
    if removed:
        log("ringside guest: removed unfinished " + ", ".join(p.name for p in removed))
