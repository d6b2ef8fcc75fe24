"""Where the exported image's bytes live: a raw image file, or anonymous memory.

Both are plain file descriptors (memory is a memfd), so the export does its I/O with
pread/pwrite/fallocate/lseek on either, and SEEK_DATA/SEEK_HOLE and hole punching work
the same on both.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass

FILL_CHOICES = ("data", "none")
_FILL_BLOCK = 1 << 20
_FILL_SEED = 0x52494E47  # fixed, so every run's image holds the same bytes
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


class BackingError(ValueError):
    """Bad backing spec or a backing that cannot be opened; the message names the fix."""


def parse_size(text: str) -> int:
    """Parse '4096', '512K', '1G', '1GiB' (binary units) into bytes."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise BackingError(
            f"cannot parse size {text!r}: use a number of bytes with an optional "
            "K, M, G or T suffix (binary units), e.g. 512M or 1G"
        )
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


@dataclass(frozen=True)
class BackingSpec:
    kind: str  # "file" or "memory"
    path: str | None
    size: int | None

    def __str__(self) -> str:
        if self.kind == "memory":
            return f"memory:{self.size}"
        return f"file:{self.path}"


def parse_backing(spec: str, size: int | None = None) -> BackingSpec:
    """`file:PATH` or `memory:SIZE`; `size` (from --size) is the size of a new file."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise BackingError(
            f"bad backing {spec!r}: use file:PATH (a raw image) or memory:SIZE (e.g. memory:1G)"
        )
    if kind == "memory":
        mem_size = parse_size(rest)
        if size is not None and size != mem_size:
            raise BackingError(f"--size {size} contradicts backing {spec!r}: give the size once")
        if mem_size <= 0:
            raise BackingError(f"backing {spec!r} has size 0: give a size such as memory:1G")
        return BackingSpec("memory", None, mem_size)
    if kind == "file":
        return BackingSpec("file", os.path.abspath(rest), size)
    raise BackingError(f"unknown backing kind {kind!r} in {spec!r}: use file:PATH or memory:SIZE")


def fill_image(fd: int, size: int) -> None:
    """Write pseudo-random data over the whole image.

    Reads of a sparse image only copy the kernel's shared zero page, which stays in the
    CPU cache and costs a fraction of copying real data; a read benchmark on such an
    image measures nothing a disk image would see. The bytes are the same on every run.
    """
    block = random.Random(_FILL_SEED).randbytes(_FILL_BLOCK)
    view = memoryview(block)
    offset = 0
    while offset < size:
        chunk = view[: min(_FILL_BLOCK, size - offset)]
        offset += os.pwrite(fd, chunk, offset)


def open_backing(spec: BackingSpec, read_only: bool, fill: bool = False) -> int:
    """Open the backing and return its fd, creating a missing image file.

    A backing created here is sparse, or full of data with `fill` (see fill_image); an
    existing image file is never written.
    """
    if spec.kind == "memory":
        fd = os.memfd_create("ringside-export", os.MFD_CLOEXEC)
        os.ftruncate(fd, spec.size)
        if fill:
            _fill_or_close(fd, spec.size, "memory backing")
        return fd
    path = spec.path
    assert path is not None
    if os.path.isdir(path):
        raise BackingError(f"backing file {path} is a directory: name an image file instead")
    if not os.path.exists(path):
        if spec.size is None:
            raise BackingError(
                f"backing file {path} does not exist: pass --size to create it "
                "(sparse), or create it first with `qemu-img create -f raw PATH SIZE`"
            )
        if read_only:
            raise BackingError(
                f"backing file {path} does not exist and the export is read-only: "
                "create the image first"
            )
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise BackingError(f"cannot create backing file {path}: {e.strerror}") from e
        os.ftruncate(fd, spec.size)
        if fill:
            _fill_or_close(fd, spec.size, f"new image {path}")
        return fd
    flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as e:
        hint = "check its permissions, or pass --read-only" if e.errno == 13 else "check the path"
        raise BackingError(f"cannot open backing file {path}: {e.strerror} ({hint})") from e
    if spec.size is not None:
        actual = os.fstat(fd).st_size
        if actual != spec.size:
            os.close(fd)
            raise BackingError(
                f"backing file {path} is {actual} bytes but --size says {spec.size}: "
                "drop --size to use the file as it is, or resize it with `qemu-img resize`"
            )
    return fd


def _fill_or_close(fd: int, size: int, what: str) -> None:
    try:
        fill_image(fd, size)
    except OSError as e:
        os.close(fd)
        raise BackingError(
            f"filling the {what} ({size} bytes) with data failed: {e.strerror}; free "
            "memory or disk space, use a smaller size, or pass --fill none for a sparse image"
        ) from e
