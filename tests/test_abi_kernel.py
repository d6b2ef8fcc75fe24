"""transports/fuse/fuse_abi.h (compiled into the native module's C, parsed by abi.py)
against the kernel's own include/uapi/linux/fuse.h: the size of every struct it declares,
the offset and size of every field that carries something, and every size, offset and
value abi.py takes from it. No mount.

Two kernel headers:
- the installed /usr/include/linux/fuse.h (Debian 12's is protocol 7.38), on every host,
  for everything it has: all but the ring's structs and constants;
- one of protocol 7.46 or later, for all of it: RINGSIDE_KERNEL_FUSE_H (a path to fuse.h,
  e.g. from the linux-source-7.3 or linux-libc-dev 7.3 package, or the one in a kernel
  `ringside kernel fetch 7.3` cached under .cache/kernels/), else the installed one when
  it is new enough, else the newest cached guest kernel's of 7.46 or later. Without one
  that test skips and says how to point it at a 7.3 header.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.guests.kernels import CACHE_DIR
from transports.fuse import abi

_URING_MINOR = 46
_INSTALLED = Path("/usr/include/linux/fuse.h")

# abi attribute -> the kernel's C expression for it: in every header since 7.38.
_CHECKS: dict[str, str] = {
    "IN_HEADER.size": "sizeof(struct fuse_in_header)",
    "IN_HEADER_PID_OFFSET": "offsetof(struct fuse_in_header, pid)",
    "OUT_HEADER.size": "sizeof(struct fuse_out_header)",
    "INIT_IN.size": "sizeof(struct fuse_init_in)",
    "INIT_OUT.size": "sizeof(struct fuse_init_out)",
    "INIT_OUT_COMPAT_SIZE": "FUSE_COMPAT_INIT_OUT_SIZE",
    "INIT_OUT_COMPAT_22_SIZE": "FUSE_COMPAT_22_INIT_OUT_SIZE",
    "INIT_IN_COMPAT.size": "offsetof(struct fuse_init_in, flags2)",  # before 7.36
    "ATTR.size": "sizeof(struct fuse_attr)",
    "ATTR_OUT.size": "sizeof(struct fuse_attr_out)",
    "ATTR_OUT_COMPAT_SIZE": "FUSE_COMPAT_ATTR_OUT_SIZE",
    "GETATTR_IN.size": "sizeof(struct fuse_getattr_in)",
    "SETATTR_IN.size": "sizeof(struct fuse_setattr_in)",
    "OPEN_IN.size": "sizeof(struct fuse_open_in)",
    "OPEN_OUT.size": "sizeof(struct fuse_open_out)",
    "READ_IN.size": "sizeof(struct fuse_read_in)",
    "READ_IN_HEAD.size": "offsetof(struct fuse_read_in, read_flags)",  # ends with size
    "WRITE_IN.size": "sizeof(struct fuse_write_in)",
    "WRITE_IN_HEAD.size": "offsetof(struct fuse_write_in, write_flags)",
    "WRITE_IN_COMPAT_SIZE": "FUSE_COMPAT_WRITE_IN_SIZE",
    "WRITE_OUT.size": "sizeof(struct fuse_write_out)",
    "FLUSH_IN.size": "sizeof(struct fuse_flush_in)",
    "RELEASE_IN.size": "sizeof(struct fuse_release_in)",
    "FSYNC_IN.size": "sizeof(struct fuse_fsync_in)",
    "FALLOCATE_IN.size": "sizeof(struct fuse_fallocate_in)",
    "LSEEK_IN.size": "sizeof(struct fuse_lseek_in)",
    "LSEEK_OUT.size": "sizeof(struct fuse_lseek_out)",
    "STATFS_OUT.size": "sizeof(struct fuse_statfs_out)",
    "STATFS_OUT_COMPAT_SIZE": "FUSE_COMPAT_STATFS_SIZE",
    "INTERRUPT_IN.size": "sizeof(struct fuse_interrupt_in)",
    "FORGET_IN.size": "sizeof(struct fuse_forget_in)",
    "FORGET_ONE.size": "sizeof(struct fuse_forget_one)",
    "BATCH_FORGET_IN.size": "sizeof(struct fuse_batch_forget_in)",
    "READ": "FUSE_READ",
    "WRITE": "FUSE_WRITE",
}

# ... and those of FUSE-over-io_uring: protocol 7.46.
_URING_CHECKS: dict[str, str] = {
    "URING_ENT_IN_OUT.size": "sizeof(struct fuse_uring_ent_in_out)",
    "URING_REQ_HEADER_SIZE": "sizeof(struct fuse_uring_req_header)",
    "URING_CMD_REQ_SIZE": "sizeof(struct fuse_uring_cmd_req)",
    "URING_REQ_OP_IN_OFFSET": "offsetof(struct fuse_uring_req_header, op_in)",
    "URING_REQ_ENT_IN_OUT_OFFSET": "offsetof(struct fuse_uring_req_header, ring_ent_in_out)",
    "URING_ENT_OFFSET_OFFSET": "offsetof(struct fuse_uring_ent_in_out, offset)",
    "URING_CMD_REQ_QID_OFFSET": "offsetof(struct fuse_uring_cmd_req, qid)",
    "URING_CMD_REQ_BUFPOOL_OFFSET": "offsetof(struct fuse_uring_cmd_req, bufpool)",
    "URING_CMD_REQ_BUFPOOL_LEN_OFFSET": "offsetof(struct fuse_uring_cmd_req, bufpool.len)",
    "URING_CMD_REQ_BUFPOOL_RESERVED_OFFSET":
        "offsetof(struct fuse_uring_cmd_req, bufpool.reserved)",
    "URING_CMD_REQ_ZC_INDEX_OFFSET":
        "offsetof(struct fuse_uring_cmd_req, ent_zero_copy_buf_index)",
    "FUSE_OVER_IO_URING": "FUSE_OVER_IO_URING",
    "FUSE_HAS_IO_URING_BUFPOOL": "FUSE_HAS_IO_URING_BUFPOOL",
    "FOPEN_IO_URING_ZERO_COPY": "FOPEN_IO_URING_ZERO_COPY",
    "FUSE_URING_ENT_ZERO_COPY": "FUSE_URING_ENT_ZERO_COPY",
    "FUSE_URING_ZERO_COPY": "FUSE_URING_ZERO_COPY",
    "URING_CMD_REGISTER": "FUSE_IO_URING_CMD_REGISTER",
    "URING_CMD_COMMIT_AND_FETCH": "FUSE_IO_URING_CMD_COMMIT_AND_FETCH",
    "URING_CMD_ADD_QUEUE": "FUSE_IO_URING_CMD_ADD_QUEUE",
    "URING_CMD_ADD_BUFPOOL": "FUSE_IO_URING_CMD_ADD_BUFPOOL",
}

# Fields fuse_abi.h declares that older headers still call padding: (struct, field) -> the
# protocol minor that named them.
_NAMED_SINCE = {("fuse_open_out", "backing_id"): 40, ("fuse_init_out", "max_stack_depth"): 40}


def _minor_of(header: Path) -> int | None:
    m = re.search(r"#define\s+FUSE_KERNEL_MINOR_VERSION\s+(\d+)", header.read_text())
    return int(m.group(1)) if m else None


def _fields(ctype: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(C member designator, type) of every field, nested structs' fields included."""
    for name, field in ctype.fields:
        designator = f"{path}{name}"
        yield designator, field.type
        if field.type.kind == "struct":
            yield from _fields(field.type, designator + ".")


def _declared_layout(minor: int) -> dict[str, int]:
    """C expression -> its value as fuse_abi.h declares it: every struct's size and the
    offset and size of each of its fields that carry something and that a header of
    protocol 7.`minor` has (the ring's structs from 7.46 on)."""
    ffi = abi.declarations()
    layout: dict[str, int] = {}
    for struct_name in ffi.list_types()[1]:
        if struct_name.startswith("fuse_uring_") and minor < _URING_MINOR:
            continue
        cname = f"struct {struct_name}"
        layout[f"sizeof({cname})"] = ffi.sizeof(cname)
        for designator, ctype in _fields(ffi.typeof(cname)):
            top = designator.split(".")[0]
            if any(abi.is_padding(part) for part in designator.split(".")):
                continue  # the kernel renames its padding as fields are added
            if minor < _NAMED_SINCE.get((struct_name, top), 0):
                continue
            layout[f"offsetof({cname}, {designator})"] = ffi.offsetof(
                cname, *designator.split(".")
            )
            layout[f"sizeof((({cname} *)0)->{designator})"] = ffi.sizeof(ctype)
    return layout


def _abi_value(attribute: str) -> int:
    value: Any = abi
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


def _kernel_values(header: Path, expressions: list[str], workdir: Path) -> dict[str, int]:
    """Each C expression's value as gcc computes it with `header` as <linux/fuse.h>."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is missing: `apt-get install gcc` (`make setup` installs it)")
    (workdir / "linux").mkdir()
    shutil.copy(header, workdir / "linux" / "fuse.h")
    prints = "\n".join(
        f'    printf("%s\\t%llu\\n", "{e}", (unsigned long long)({e}));' for e in expressions
    )
    source = workdir / "check.c"
    source.write_text(
        "#include <stddef.h>\n#include <stdio.h>\n#include <linux/fuse.h>\n"
        f"int main(void) {{\n{prints}\n    return 0;\n}}\n"
    )
    exe = workdir / "check"
    built = subprocess.run(
        ["gcc", "-I", str(workdir), "-o", str(exe), str(source)], capture_output=True, text=True
    )
    assert built.returncode == 0, f"{header} lacks what fuse_abi.h declares:\n{built.stderr}"
    output = subprocess.check_output([str(exe)], text=True)
    return {e: int(v) for e, v in (line.split("\t") for line in output.splitlines())}


def _compare(header: Path, checks: dict[str, str], workdir: Path) -> None:
    minor = _minor_of(header)
    assert minor is not None, f"{header} states no FUSE_KERNEL_MINOR_VERSION"
    layout = _declared_layout(minor)
    kernel = _kernel_values(header, sorted(set(layout) | set(checks.values())), workdir)
    mismatches = [
        f"{e}: kernel {kernel[e]}, fuse_abi.h {ours}"
        for e, ours in layout.items() if kernel[e] != ours
    ] + [
        f"abi.{attribute} = {_abi_value(attribute)}, kernel {e} = {kernel[e]}"
        for attribute, e in checks.items() if _abi_value(attribute) != kernel[e]
    ]
    assert not mismatches, f"against {header} (7.{minor}):\n" + "\n".join(mismatches)


def test_fuse_abi_h_matches_the_installed_header(tmp_path: Path) -> None:
    """Every host: Debian 12's 7.38 header has every struct but the ring's."""
    if not _INSTALLED.is_file():
        pytest.fail(f"{_INSTALLED} is missing: `apt-get install linux-libc-dev`")
    _compare(_INSTALLED, _CHECKS, tmp_path)


def _uring_header() -> Path:
    named = os.environ.get("RINGSIDE_KERNEL_FUSE_H")
    if named:
        path = Path(named)
        if not path.is_file():
            pytest.fail(f"RINGSIDE_KERNEL_FUSE_H={named} is not a file")
        return path
    if _INSTALLED.is_file() and (_minor_of(_INSTALLED) or 0) >= _URING_MINOR:
        return _INSTALLED
    # A guest kernel `ringside kernel fetch` cached comes with its uapi headers (CI has 7.3).
    for cached in sorted(CACHE_DIR.glob("*/usr/include/linux/fuse.h"), reverse=True):
        if (_minor_of(cached) or 0) >= _URING_MINOR:
            return cached
    pytest.skip(
        "no FUSE 7.46 header: set RINGSIDE_KERNEL_FUSE_H to include/uapi/linux/fuse.h of "
        "Linux 7.3 (Debian experimental linux-source-7.3 or linux-libc-dev 7.3, or "
        ".cache/kernels/7.3-amd64/usr/include/linux/fuse.h after `ringside kernel fetch 7.3`)"
    )


def test_fuse_abi_h_matches_the_kernels_header(tmp_path: Path) -> None:
    """All of it, the ring included, against a 7.46 header."""
    header = _uring_header()
    minor = _minor_of(header)
    assert minor is not None and minor >= _URING_MINOR, f"{header} is protocol 7.{minor}"
    _compare(header, _CHECKS | _URING_CHECKS, tmp_path)


def test_read_and_write_share_the_heads_layout() -> None:
    """The codec reads offset and size of READ and WRITE with one struct (READ_IN_HEAD)."""
    assert abi.READ_IN_HEAD.format == abi.WRITE_IN_HEAD.format
