"""Only the compiled part of the build: pyproject.toml holds the project's configuration."""

from setuptools import setup

setup(cffi_modules=["transports/uring_build.py:ffibuilder"])
