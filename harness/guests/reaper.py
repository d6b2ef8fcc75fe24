"""The qemu reaper: stop a process group when the process that started it dies, even by
SIGKILL.

`ringside guest` runs vng in a session of its own (so Ctrl-C reaches only Ringside, which
then stops the guest in order), and qemu is vng's grandchild: a killed Ringside would
leave qemu running. This small process, started beside the group, reads its stdin until
EOF; the starter's end of that pipe closes however the starter ends. "done" first means
the starter stopped the group itself; otherwise the group gets SIGTERM, then SIGKILL,
and the given directories (the guest's status directory) are removed.

    python -m harness.guests.reaper PGID [DIR ...]
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time

GRACE_S = 5.0


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, grace: float = GRACE_S) -> None:
    """SIGTERM the group, SIGKILL what is left after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and group_alive(pgid):
            time.sleep(0.1)
        if not group_alive(pgid):
            return


def main(argv: list[str]) -> int:
    pgid, leftovers = int(argv[0]), argv[1:]
    if sys.stdin.buffer.read().startswith(b"done"):
        return 0
    stop_group(pgid)
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
