"""cffi builder of transports._native, Ringside's one compiled module.

Compiled at install time (setup.py `cffi_modules`) from the C of three areas, each kept
in its own directory (sources.py lists the files): transports/builtin/uring/ (the uring
transport's rings, on liburing >= 2.3), transports/datapath/ (the native data path the
ring and the /dev/fuse loop both call) and transports/sched/ (sched=idle's starvation
guard, devfuse's client following). Their headers and transports/fuse/fuse_abi.h are both
the C headers and cffi's declarations, so C and Python read one text; cffi checks at
build time that the compiler lays every declared struct out as it parsed it.

The module's own source is a prelude that includes every header (cffi's wrappers need
each declaration) and the stamp: rs_native_stamp() returns sources.source_hash() of the
files it was built from, which the loader (transports/native/__init__.py) compares with
the tree's.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
from pathlib import Path
from types import ModuleType

from cffi import FFI

MODULE = "transports._native"
HERE = Path(__file__).resolve().parent


def _sources() -> ModuleType:
    # By path: cffi runs this file by path during the build, when the package cannot be
    # imported yet.
    spec = importlib.util.spec_from_file_location("_ringside_native_sources", HERE / "sources.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pkg_config(*args: str) -> list[str]:
    try:
        out = subprocess.run(
            ["pkg-config", *args, "liburing"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return shlex.split(out)


def _build() -> FFI:
    sources = _sources()
    root: Path = sources.TRANSPORTS
    headers = [root / name for name in sources.HEADERS]
    ffi = FFI()
    for header in headers:
        ffi.cdef(header.read_text())
    ffi.cdef("const char *rs_native_stamp(void);")
    prelude = "\n".join(
        ["#include <stddef.h>", "#include <stdint.h>"]
        + [f'#include "{header.name}"' for header in headers]
        + ["", "const char *rs_native_stamp(void)", "{",
           f'\treturn "{sources.source_hash(root)}";', "}", ""]
    )
    ffi.set_source(
        MODULE,
        prelude,
        # setuptools takes extra sources relative to the project root only
        sources=[os.path.relpath(root / name) for name in sources.C_SOURCES],
        libraries=[a[2:] for a in _pkg_config("--libs-only-l")] or ["uring"],
        include_dirs=sorted({str(header.parent) for header in headers})
        + [a[2:] for a in _pkg_config("--cflags-only-I")],
        library_dirs=[a[2:] for a in _pkg_config("--libs-only-L")],
        extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
        depends=[str(root / name) for name in sources.STAMPED],
    )
    return ffi


ffibuilder = _build()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
