"""cffi builder of the uring transport's binding to liburing (>= 2.3): reads the C next to it.

Compiled at install time (setup.py `cffi_modules`) into `transports._uring_cffi`:
ring.c is the source, with ../datapath/native.c (the native data path both the ring and
the /dev/fuse loop call) and ../sched/guard.c and follow.c (where serving threads run:
sched=idle's starvation guard, devfuse's client following); ring.h, native.h, guard.h and
follow.h (the functions and the fields Python may read) and ../fuse/fuse_abi.h
(the kernel's FUSE ABI as Ringside uses it, which transports/fuse/abi.py reads too) are both
the C headers and cffi's declarations, so C and Python read one text. cffi checks at
build time that the compiler lays the ABI structs out as it parsed them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
ABI_HEADER = HERE.parent / "fuse" / "fuse_abi.h"
DATAPATH = HERE.parent / "datapath"  # the native data path: native.c, native.h
SCHED = HERE.parent / "sched"  # guard.c, guard.h, follow.c, follow.h
HEADERS = [ABI_HEADER, SCHED / "guard.h", SCHED / "follow.h", DATAPATH / "native.h",
           HERE / "ring.h"]  # in the order cdef needs them


def _pkg_config(*args: str) -> list[str]:
    try:
        out = subprocess.run(
            ["pkg-config", *args, "liburing"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return shlex.split(out)


def _build() -> FFI:
    libs = [a[2:] for a in _pkg_config("--libs-only-l")] or ["uring"]
    ffi = FFI()
    for header in HEADERS:
        ffi.cdef(header.read_text())
    ffi.set_source(
        "transports._uring_cffi",
        # ring.c includes every header, so cffi's wrappers see what cdef declared
        (HERE / "ring.c").read_text(),
        # setuptools takes extra sources relative to the project root only
        sources=[os.path.relpath(p) for p in
                 (DATAPATH / "native.c", SCHED / "guard.c", SCHED / "follow.c")],
        libraries=libs,
        include_dirs=[str(HERE), str(ABI_HEADER.parent), str(DATAPATH), str(SCHED)]
        + [a[2:] for a in _pkg_config("--cflags-only-I")],
        library_dirs=[a[2:] for a in _pkg_config("--libs-only-L")],
        extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
        depends=[str(h) for h in HEADERS],
    )
    return ffi


ffibuilder = _build()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
