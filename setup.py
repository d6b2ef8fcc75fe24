"""Only the compiled part of the build: pyproject.toml holds the project's configuration.

The uring transport's cffi binding needs liburing's headers (Debian: liburing-dev). When
they are missing the rest of Ringside still installs; the uring transport then reports
the binding as not built (and `make setup` installs liburing-dev first).
"""

import os
import shutil
import subprocess
import sys

from setuptools import setup


def _have_liburing() -> bool:
    if shutil.which("pkg-config"):
        if subprocess.run(["pkg-config", "--exists", "liburing"]).returncode == 0:
            return True
    return os.path.exists("/usr/include/liburing.h")


if _have_liburing():
    cffi_modules = ["transports/ring/build.py:ffibuilder"]
else:
    print(
        "ringside: liburing headers not found (apt-get install liburing-dev): "
        "building without the uring transport's binding",
        file=sys.stderr,
    )
    cffi_modules = []

setup(cffi_modules=cffi_modules)
