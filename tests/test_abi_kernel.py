"""transports/fuse/fuse_uring.h (read by abi.py and compiled into the ring's C) against the
kernel's own include/uapi/linux/fuse.h of protocol 7.46 or later: every size, offset and
value the ring uses. No mount.

The kernel header is found through RINGSIDE_KERNEL_FUSE_H (a path to fuse.h, e.g. from
the linux-source-7.3 or linux-libc-dev 7.3 package), else /usr/include/linux/fuse.h
when that one is 7.46 or later. Debian 12's is 7.38, so on a stock host this test skips
and says how to point it at a 7.3 header.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from transports.fuse import abi

_MIN_MINOR = 46

# name printed by the C program -> (abi attribute, expected by the kernel's own layout)
_CHECKS: dict[str, str] = {
    "sizeof_ent_in_out": "URING_ENT_IN_OUT.size",
    "sizeof_req_header": "URING_REQ_HEADER_SIZE",
    "sizeof_cmd_req": "URING_CMD_REQ_SIZE",
    "off_req_op_in": "URING_REQ_OP_IN_OFFSET",
    "off_req_ent_in_out": "URING_REQ_ENT_IN_OUT_OFFSET",
    "off_ent_offset": "URING_ENT_OFFSET_OFFSET",
    "off_cmd_qid": "URING_CMD_REQ_QID_OFFSET",
    "off_cmd_bufpool": "URING_CMD_REQ_BUFPOOL_OFFSET",
    "off_cmd_bufpool_len": "URING_CMD_REQ_BUFPOOL_LEN_OFFSET",
    "off_cmd_bufpool_reserved": "URING_CMD_REQ_BUFPOOL_RESERVED_OFFSET",
    "off_cmd_zc_index": "URING_CMD_REQ_ZC_INDEX_OFFSET",
    "sizeof_out_header": "OUT_HEADER.size",
    "FUSE_OVER_IO_URING": "FUSE_OVER_IO_URING",
    "FUSE_HAS_IO_URING_BUFPOOL": "FUSE_HAS_IO_URING_BUFPOOL",
    "FOPEN_IO_URING_ZERO_COPY": "FOPEN_IO_URING_ZERO_COPY",
    "FUSE_URING_ENT_ZERO_COPY": "FUSE_URING_ENT_ZERO_COPY",
    "FUSE_URING_ZERO_COPY": "FUSE_URING_ZERO_COPY",
    "CMD_REGISTER": "URING_CMD_REGISTER",
    "CMD_COMMIT_AND_FETCH": "URING_CMD_COMMIT_AND_FETCH",
    "CMD_ADD_QUEUE": "URING_CMD_ADD_QUEUE",
    "CMD_ADD_BUFPOOL": "URING_CMD_ADD_BUFPOOL",
    "FUSE_READ": "READ",
    "FUSE_WRITE": "WRITE",
}

_C_PROGRAM = r"""
#include <stddef.h>
#include <stdio.h>
#include <linux/fuse.h>
#define P(name, value) printf("%s %llu\n", name, (unsigned long long)(value))
int main(void) {
    P("sizeof_ent_in_out", sizeof(struct fuse_uring_ent_in_out));
    P("sizeof_req_header", sizeof(struct fuse_uring_req_header));
    P("sizeof_cmd_req", sizeof(struct fuse_uring_cmd_req));
    P("off_req_op_in", offsetof(struct fuse_uring_req_header, op_in));
    P("off_req_ent_in_out", offsetof(struct fuse_uring_req_header, ring_ent_in_out));
    P("off_ent_offset", offsetof(struct fuse_uring_ent_in_out, offset));
    P("off_cmd_qid", offsetof(struct fuse_uring_cmd_req, qid));
    P("off_cmd_bufpool", offsetof(struct fuse_uring_cmd_req, bufpool));
    P("off_cmd_bufpool_len", offsetof(struct fuse_uring_cmd_req, bufpool.len));
    P("off_cmd_bufpool_reserved", offsetof(struct fuse_uring_cmd_req, bufpool.reserved));
    P("off_cmd_zc_index", offsetof(struct fuse_uring_cmd_req, ent_zero_copy_buf_index));
    P("sizeof_out_header", sizeof(struct fuse_out_header));
    P("FUSE_OVER_IO_URING", FUSE_OVER_IO_URING);
    P("FUSE_HAS_IO_URING_BUFPOOL", FUSE_HAS_IO_URING_BUFPOOL);
    P("FOPEN_IO_URING_ZERO_COPY", FOPEN_IO_URING_ZERO_COPY);
    P("FUSE_URING_ENT_ZERO_COPY", FUSE_URING_ENT_ZERO_COPY);
    P("FUSE_URING_ZERO_COPY", FUSE_URING_ZERO_COPY);
    P("CMD_REGISTER", FUSE_IO_URING_CMD_REGISTER);
    P("CMD_COMMIT_AND_FETCH", FUSE_IO_URING_CMD_COMMIT_AND_FETCH);
    P("CMD_ADD_QUEUE", FUSE_IO_URING_CMD_ADD_QUEUE);
    P("CMD_ADD_BUFPOOL", FUSE_IO_URING_CMD_ADD_BUFPOOL);
    P("FUSE_READ", FUSE_READ);
    P("FUSE_WRITE", FUSE_WRITE);
    return 0;
}
"""


def _minor_of(header: Path) -> int | None:
    m = re.search(r"#define\s+FUSE_KERNEL_MINOR_VERSION\s+(\d+)", header.read_text())
    return int(m.group(1)) if m else None


def _kernel_header() -> Path:
    named = os.environ.get("RINGSIDE_KERNEL_FUSE_H")
    if named:
        path = Path(named)
        if not path.is_file():
            pytest.fail(f"RINGSIDE_KERNEL_FUSE_H={named} is not a file")
        return path
    system = Path("/usr/include/linux/fuse.h")
    if system.is_file() and (_minor_of(system) or 0) >= _MIN_MINOR:
        return system
    pytest.skip(
        "no FUSE 7.46 header: set RINGSIDE_KERNEL_FUSE_H to include/uapi/linux/fuse.h of "
        "Linux 7.3 (Debian experimental linux-source-7.3 or linux-libc-dev 7.3)"
    )


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_fuse_uring_h_matches_the_kernels_header(tmp_path: Path) -> None:
    header = _kernel_header()
    minor = _minor_of(header)
    assert minor is not None and minor >= _MIN_MINOR, f"{header} is protocol 7.{minor}"
    (tmp_path / "linux").mkdir()
    shutil.copy(header, tmp_path / "linux" / "fuse.h")  # include it as <linux/fuse.h>
    src = tmp_path / "check.c"
    src.write_text(_C_PROGRAM)
    exe = tmp_path / "check"
    subprocess.run(
        ["gcc", "-I", str(tmp_path), "-o", str(exe), str(src)], check=True, capture_output=True
    )
    kernel = dict(
        (name, int(value))
        for name, value in (
            line.split() for line in subprocess.check_output([str(exe)], text=True).splitlines()
        )
    )
    assert set(kernel) == set(_CHECKS)
    mismatches = []
    for name, attr in _CHECKS.items():
        ours = abi
        for part in attr.split("."):
            ours = getattr(ours, part)
        if ours != kernel[name]:
            mismatches.append(f"{name}: kernel {kernel[name]}, fuse_uring.h/abi {ours}")
    assert not mismatches, "; ".join(mismatches)
