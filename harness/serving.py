"""What `ringside serve` tells the process that started it, on its standard streams: that
it is ready (stdout) and, when the kernel ended its connection under it, how (stderr)."""

from __future__ import annotations

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
