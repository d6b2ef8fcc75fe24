"""Only the compiled part of the build: pyproject.toml holds the project's configuration.

transports._native, Ringside's one compiled module (the C of transports/builtin/uring/, datapath/
and sched/, built by transports/native/build.py), links liburing, so it needs liburing's
headers (Debian: liburing-dev; `make setup` installs them). Without them the rest of
Ringside still installs, and transports/native refuses every use of the module (devfuse,
uring, datapath=native, the guard) with that cause and its fix: nothing falls back.
"""

import importlib.util
import sys

from setuptools import setup


def _native_sources():
    # By path: Ringside cannot be imported while it is being built.
    spec = importlib.util.spec_from_file_location(
        "_ringside_native_sources", "transports/native/sources.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if _native_sources().liburing_headers():
    cffi_modules = ["transports/native/build.py:ffibuilder"]
else:
    print(
        "ringside: liburing headers not found: building without transports._native, which "
        "devfuse, uring and sched=idle's guard need (apt-get install liburing-dev, then "
        "make setup)",
        file=sys.stderr,
    )
    cffi_modules = []

setup(cffi_modules=cffi_modules)
