"""What this machine can do for Ringside: one line per capability, its state and its fix."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from transports import sysinfo

DEFAULT_DEPTH = 8
DEFAULT_MAX_WRITE = 1 << 20
URING_MIN_KERNEL = (6, 14)


@dataclass(frozen=True)
class Capability:
    name: str
    ok: bool
    state: str
    fix: str = ""
    required: bool = True  # the default suite cannot run without it


def _version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def check_dev_fuse() -> Capability:
    if not os.path.exists("/dev/fuse"):
        return Capability("/dev/fuse", False, "missing", "load the module: `modprobe fuse`")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return Capability(
            "/dev/fuse",
            False,
            "not read/writable by this user",
            "run as root, or `chmod 0666 /dev/fuse` as root (`make setup` does it)",
        )
    return Capability("/dev/fuse", True, "present, read/writable")


def check_dev_fuse_for_users() -> Capability:
    """Whether an ordinary user can open /dev/fuse: fusermount3 and every unprivileged
    server need it. Debian leaves the 0666 mode to a udev rule, so a machine without udev
    keeps the kernel's 0600."""
    name = "/dev/fuse for users"
    try:
        st = os.stat("/dev/fuse")
    except OSError:
        return Capability(name, False, "missing", "load the module: `modprobe fuse`", False)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o006 == 0o006:
        return Capability(name, True, f"mode {mode:04o}: ordinary users can open it", False)
    return Capability(
        name,
        False,
        f"mode {mode:04o}: only {'root' if st.st_uid == 0 else 'its owner'} can open it "
        "(no udev rule applied)",
        "`make setup` (sets 0666 when no udev runs, as Debian's rule would) "
        "or `chmod 0666 /dev/fuse` as root",
        required=False,
    )


def check_mount_permission() -> Capability:
    if os.geteuid() == 0:
        return Capability("mount permission", True, "root: mount(2)")
    helper = shutil.which("fusermount3")
    if helper and os.stat(helper).st_mode & 0o4000:
        return Capability("mount permission", True, "unprivileged, through setuid fusermount3")
    return Capability(
        "mount permission",
        False,
        "not root and no setuid fusermount3",
        "run as root, or `apt-get install fuse3` (installs fusermount3 setuid)",
    )


def check_fusermount() -> Capability:
    path = shutil.which("fusermount3")
    if path is None:
        return Capability(
            "fusermount3", False, "missing", "`apt-get install fuse3`", required=os.geteuid() != 0
        )
    return Capability("fusermount3", True, _version([path, "--version"]) or path, required=False)


def _kernel_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def check_enable_uring() -> Capability:
    state = sysinfo.enable_uring()
    if state is None:
        k = ".".join(map(str, URING_MIN_KERNEL))
        return Capability(
            "enable_uring",
            False,
            f"no such parameter (kernel {os.uname().release})",
            f"FUSE-over-io_uring needs Linux {k}+ with CONFIG_FUSE_IO_URING",
        )
    if state != "Y":
        return Capability(
            "enable_uring",
            False,
            state,
            "`echo Y > /sys/module/fuse/parameters/enable_uring` as root (or `make setup`)",
        )
    return Capability("enable_uring", True, "Y")


def check_io_uring_disabled() -> Capability:
    value = sysinfo.read_text(sysinfo.IO_URING_DISABLED)
    if value is None or value == "0":
        return Capability("kernel.io_uring_disabled", True, value or "absent (io_uring allowed)")
    if value == "1" and os.geteuid() == 0:
        return Capability("kernel.io_uring_disabled", True, "1 (root may still use io_uring)")
    return Capability(
        "kernel.io_uring_disabled", False, value, "`sysctl kernel.io_uring_disabled=0` as root"
    )


def check_liburing() -> Capability:
    version = _version(["pkg-config", "--modversion", "liburing"])
    try:
        from transports.native import lib  # noqa: F401  (the compiled module, checked)
    except ImportError as e:
        return Capability(
            "liburing binding",
            False,
            f"unusable ({e}); liburing {version or 'missing'}",
            "`apt-get install liburing-dev` then `make setup` (rebuilds the cffi binding)",
        )
    return Capability("liburing binding", True, f"built against liburing {version}")


def check_fio() -> Capability:
    if shutil.which("fio") is None:
        return Capability("fio", False, "missing", "`apt-get install fio`")
    return Capability("fio", True, _version(["fio", "--version"]) or "present")


def check_cpus() -> Capability:
    text = sysinfo.read_text(sysinfo.POSSIBLE_CPUS) or ""
    count = len(sysinfo.possible_cpus())
    return Capability(
        "possible CPUs", count > 0, f"{count} ({text}) = io_uring queues", required=False
    )


def check_memlock() -> Capability:
    try:
        from transports.builtin.uring.queue import HEADER_BUFFER, memlock_check, payload_size
    except ImportError:
        return Capability(
            "RLIMIT_MEMLOCK", False, "unknown: liburing binding not built", "`make setup`"
        )
    per_entry = HEADER_BUFFER + payload_size(DEFAULT_MAX_WRITE, DEFAULT_MAX_WRITE // 4096)
    needed = len(sysinfo.possible_cpus()) * DEFAULT_DEPTH * per_entry
    check = memlock_check(needed)
    limit = "unlimited" if check.limit < 0 else f"{check.limit} bytes"
    state = f"{limit}; uring:buffers=mlock at depth {DEFAULT_DEPTH} locks {needed} bytes"
    if check.cap_ipc_lock:
        return Capability("RLIMIT_MEMLOCK", True, state + " (CAP_IPC_LOCK: limit does not apply)")
    if check.fits:
        return Capability("RLIMIT_MEMLOCK", True, state)
    return Capability(
        "RLIMIT_MEMLOCK",
        False,
        state,
        f"`ulimit -l {-(-needed // 1024)}` (KiB) or a memlock line in /etc/security/limits.conf",
    )


def check_sched_idle() -> Capability:
    """What uring's default sched=auto becomes here: the guarded SCHED_IDLE needs the right
    to move a thread off SCHED_IDLE."""
    from transports.sched.policy import guard_fix, guard_unavailable

    why = guard_unavailable()
    if why is None:
        return Capability("uring sched=auto", True, "idle, guarded against starvation "
                          "(devfuse's too)", required=False)
    return Capability(
        "uring sched=auto", False, f"batch: the idle guard could not work: {why}",
        guard_fix(why) + "; batch is correct, only slower with a client the scheduler moves",
        required=False,
    )


def check_bufpool() -> Capability:
    """Protocol 7.46 buffer pools (uring buffers=pool|pinned, zerocopy=on): FUSE_INIT of a
    throwaway mount says whether the kernel offers them."""
    name = "FUSE buffer pools (7.46)"
    try:
        from transports.fuse.init_probe import kernel_offer

        offer = kernel_offer()
    except Exception as e:  # noqa: BLE001 - doctor reports, never raises
        return Capability(name, False, f"unknown: no FUSE_INIT from a throwaway mount ({e})",
                          "see the /dev/fuse and mount permission lines", required=False)
    if offer.bufpool:
        return Capability(name, True, f"offered ({offer.describe()})", required=False)
    return Capability(
        name, False, f"not offered ({offer.describe()}): buffers=pool|pinned and zerocopy "
        "refuse here",
        "`ringside guest --kernel 7.3 -- ...` (enable_uring must be Y: pools are offered "
        "with the ring)", required=False,
    )


def check_qsd() -> Capability:
    if shutil.which("qemu-storage-daemon") is None:
        return Capability(
            "qemu-storage-daemon", False, "missing", "`apt-get install qemu-system-common`"
        )
    return Capability("qemu-storage-daemon", True, _version(["qemu-storage-daemon", "--version"]))


def check_fusectl() -> Capability:
    path = "/sys/fs/fuse/connections"
    mounted = any(
        line.split()[2] == "fusectl" for line in open("/proc/mounts") if len(line.split()) > 2
    )
    if mounted:
        return Capability("fusectl", True, f"mounted on {path}", required=False)
    if os.geteuid() == 0:
        return Capability("fusectl", True, f"not mounted: Ringside mounts it on {path} for "
                          "the moment it aborts a connection, and unmounts it after",
                          required=False)
    return Capability(
        "fusectl",
        False,
        "not mounted, and only root can mount it (no per-connection abort files)",
        f"`mount -t fusectl none {path}` as root",
        required=False,
    )


USER_TOOLS = ("useradd", "userdel", "setpriv", "prlimit")


def check_user_tools() -> Capability:
    """The unprivileged tests create a user and run the harness as it."""
    missing = [tool for tool in USER_TOOLS if shutil.which(tool) is None]
    if missing:
        return Capability(
            "user tools",
            False,
            f"missing: {', '.join(missing)} (the unprivileged tests need them)",
            "`apt-get install passwd util-linux` (`make setup` does it)",
            required=False,
        )
    return Capability("user tools", True, ", ".join(USER_TOOLS), required=False)


def check_libfuse() -> Capability:
    """The libfuse build the `libfuse` peer serves from (optional: a measuring anchor)."""
    from transports.base import TransportUnavailable
    from transports.peers.libfuse import ENV_BUILD, configured_build, resolve_build

    try:
        build = resolve_build(None)
    except TransportUnavailable as e:
        directory = configured_build()
        state = f"{ENV_BUILD}={directory}" if directory else "none found"
        return Capability("libfuse build", False, state, str(e), required=False)
    uring = "with io_uring" if build.io_uring else "WITHOUT io_uring (mode=uring refused)"
    return Capability(
        "libfuse build", True,
        f"libfuse {build.version} {uring} in {build.directory} ({build.chosen_by})",
        required=False,
    )


CHECKS: tuple[Callable[[], Capability], ...] = (
    check_dev_fuse,
    check_dev_fuse_for_users,
    check_mount_permission,
    check_fusermount,
    check_enable_uring,
    check_io_uring_disabled,
    check_liburing,
    check_fio,
    check_cpus,
    check_memlock,
    check_sched_idle,
    check_bufpool,
    check_qsd,
    check_libfuse,
    check_fusectl,
    check_user_tools,
)


def guest_capabilities() -> list[Capability]:
    """What `ringside guest` needs (not the default suite: never required)."""
    from harness.guests.host import doctor_lines

    return [Capability(f"guest: {name}", ok, state, fix, required=False)
            for name, ok, state, fix in doctor_lines()]


def diagnose() -> list[Capability]:
    return [check() for check in CHECKS] + guest_capabilities()


def render(caps: list[Capability]) -> str:
    width = max(len(c.name) for c in caps)
    lines = []
    for c in caps:
        mark = "ok" if c.ok else ("MISSING" if c.required else "note")
        line = f"{mark:8} {c.name:{width}}  {c.state}"
        if not c.ok and c.fix:
            line += f"\n{'':8} {'':{width}}  fix: {c.fix}"
        lines.append(line)
    return "\n".join(lines)
