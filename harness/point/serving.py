"""What the runner and `ringside serve` say to each other: the placement flags the runner
passes, and on serve's standard streams that it is ready (stdout) and, when the kernel
ended its connection under it, how (stderr)."""

from __future__ import annotations

from transports.spec import Spec, setting_text

# `ringside serve`'s placement options: the runner passes a spec's placement through them.
PLACEMENT_FLAGS = {"sched": "--sched", "idle_guard": "--idle-guard", "cpus": "--cpus"}
READY_PREFIX = "ringside: ready"
CONNECTION_ENDED_PREFIX = "ringside: the FUSE connection ended:"


def describe_connection_end(end: str, mountpoint: str) -> str:
    """The server's line for a connection the kernel ended under it (`end` as in
    Transport.connection_end)."""
    if end == "aborted":
        how = (f"the FUSE connection on {mountpoint} was aborted "
               "(e.g. through /sys/fs/fuse/connections/N/abort)")
    else:
        how = (f"the mount on {mountpoint} was removed from outside "
               "(e.g. by `umount` or `fusermount3 -u`)")
    return f"{CONNECTION_ENDED_PREFIX} {how}"


def connection_end_in(stderr: str) -> str | None:
    """The connection end a server reported in its stderr, if it did."""
    for line in reversed(stderr.splitlines()):
        if line.startswith(CONNECTION_ENDED_PREFIX):
            return line[len(CONNECTION_ENDED_PREFIX):].strip()
    return None


def placement_argv(spec: Spec) -> list[str]:
    """Arguments for `ringside serve` that carry `spec`'s placement settings."""
    argv: list[str] = []
    for key, flag in PLACEMENT_FLAGS.items():
        if key in spec.settings and setting_text(spec.settings[key]) != "":
            argv += [flag, setting_text(spec.settings[key])]
    return argv
