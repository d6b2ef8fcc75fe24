"""What transports._native is built from, and the stamp that names one build of it.

The builder (build.py) compiles these files and embeds source_hash() in the module; the
loader (transports/native/__init__.py) recomputes it from the files in the tree and
refuses a module built from other ones. Only the standard library: setup.py and the
builder load this file by path, while Ringside is being built and cannot be imported.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

TRANSPORTS = Path(__file__).resolve().parent.parent  # every path below is relative to it

# Both the C headers and cffi's declarations, in the order cdef needs them.
HEADERS = (
    "fuse/fuse_abi.h",  # the kernel's FUSE ABI as Ringside uses it (abi.py reads it too)
    "sched/guard.h",  # sched=idle's starvation guard
    "sched/follow.h",  # devfuse's client following
    "datapath/native.h",  # the native data path (READ and WRITE in C)
    "builtin/uring/ring.h",  # the uring transport's rings, on liburing
)
C_SOURCES = (
    "builtin/uring/ring.c", "datapath/native.c", "sched/guard.c", "sched/follow.c",
)
BUILDER = ("native/build.py", "native/sources.py")
STAMPED = HEADERS + C_SOURCES + BUILDER  # what the stamp covers: a change to any rebuilds

_ABSENT = b"\xff" * 8  # in place of a stamped file's length when the file is not there


def source_hash(root: Path = TRANSPORTS) -> str | None:
    """sha256 over the name and bytes of every stamped file under `root`; None when none
    of them is there (an install that ships no sources: nothing to compare)."""
    digest = hashlib.sha256()
    found = False
    for name in STAMPED:
        digest.update(name.encode() + b"\0")
        try:
            data = (root / name).read_bytes()
        except FileNotFoundError:
            digest.update(_ABSENT)
            continue
        found = True
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest() if found else None


def liburing_headers() -> bool:
    """Whether liburing's headers are installed (Debian: liburing-dev): the module's rings
    call liburing, so it is built only where they are."""
    if shutil.which("pkg-config"):
        if subprocess.run(["pkg-config", "--exists", "liburing"]).returncode == 0:
            return True
    return os.path.exists("/usr/include/liburing.h")
