"""`ringside doctor`: can this machine run every transport of the default suite?"""

from __future__ import annotations

import argparse

from harness.doctor import diagnose, render


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check /dev/fuse, io_uring, fio, memlock, qemu-storage-daemon; say how to fix",
        description="One line per capability with its state and, when missing, the fix. "
        "Exits 1 when something the default suite needs is missing.",
    )
    p.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    caps = diagnose()
    print(render(caps))
    missing = [c.name for c in caps if c.required and not c.ok]
    if missing:
        print(f"\nmissing for the default suite: {', '.join(missing)}")
        return 1
    return 0
