"""Where this process runs, for code that may run inside one of our guests: the runner, the
tests. On the host every answer is "not in a guest".

The host side (host.py) decides how it boots a guest and records those facts in the
guest's environment (GuestFacts.environment), which every process in the guest inherits;
this module only reads them back. It imports nothing of the host side (booting, qemu);
of kernels.py only the cache's lookup, for a cached kernel's uapi header.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from harness.guests.kernels import KernelError, resolve

# The variables the host side sets in the guest script's environment.
VIRTUALIZATION_ENV = "RINGSIDE_VIRTUALIZATION"  # the accelerator: kvm | tcg
QEMU_VERSION_ENV = "RINGSIDE_QEMU_VERSION"
GUEST_KERNEL_ENV = "RINGSIDE_GUEST_KERNEL"  # the kernel's name as `--kernel` resolved it
ACCELERATORS = ("kvm", "tcg")
# Under TCG a Python server takes 20-40 s just to import (measured here, both CPUs loaded).
TCG_SLOWDOWN = 10.0


@dataclass(frozen=True)
class GuestFacts:
    """What the host chose for a guest and the guest cannot find out as well itself."""

    accel: str  # kvm | tcg: how qemu runs the guest's CPUs (tcg: emulated)
    qemu_version: str | None
    kernel: str | None  # the cached name or path given to `ringside guest --kernel`

    def __post_init__(self) -> None:
        if self.accel not in ACCELERATORS:
            raise ValueError(f"accelerator {self.accel!r} is none of {ACCELERATORS}")

    @property
    def emulated(self) -> bool:
        return self.accel == "tcg"

    def environment(self) -> dict[str, str]:
        """The facts as the guest's environment carries them (set by the host side)."""
        values = {
            VIRTUALIZATION_ENV: self.accel,
            QEMU_VERSION_ENV: self.qemu_version,
            GUEST_KERNEL_ENV: self.kernel,
        }
        return {name: value for name, value in values.items() if value is not None}


def this_guest() -> GuestFacts | None:
    """The facts of the guest this process runs in; None on the host."""
    accel = os.environ.get(VIRTUALIZATION_ENV)
    if accel not in ACCELERATORS:
        return None
    return GuestFacts(
        accel=accel,
        qemu_version=os.environ.get(QEMU_VERSION_ENV),
        kernel=os.environ.get(GUEST_KERNEL_ENV),
    )


def in_guest() -> bool:
    return this_guest() is not None


def slowdown() -> float:
    """How much longer than on the host to wait for things here: long under TCG."""
    guest = this_guest()
    return TCG_SLOWDOWN if guest is not None and guest.emulated else 1.0


def where_run() -> dict[str, Any]:
    """`virtualization` of a result: none on the host, kvm or tcg inside our guest."""
    guest = this_guest()
    if guest is None:
        return {"kind": "none"}
    return {
        "kind": guest.accel,
        "qemu_version": guest.qemu_version,
        "guest_kernel": guest.kernel,
        "emulated": guest.emulated,
    }


# -- what a result records about its kernel ---------------------------------------------
# abi's FUSE_* names that are not FUSE_INIT flags: prefixes, and whole names.
_NOT_INIT_FLAGS = ("FUSE_IO_URING_CMD", "FUSE_FSYNC_FDATASYNC", "FUSE_UNIQUE_RESEND",
                   "FUSE_URING_")
_NOT_INIT_NAMES = {"FUSE_READ", "FUSE_WRITE"}


def init_flag_names(flags: int) -> list[str]:
    """FUSE_INIT flag bits by name (abi's names); bits abi does not name as `bit N`."""
    from transports.fuse import abi

    names = {
        value.bit_length() - 1: name
        for name, value in vars(abi).items()
        if name.startswith("FUSE_") and not name.startswith(_NOT_INIT_FLAGS)
        and name not in _NOT_INIT_NAMES
        and isinstance(value, int) and value > 0 and value & (value - 1) == 0
    }  # fmt: skip
    return [names.get(bit, f"bit {bit}") for bit in range(64) if flags >> bit & 1]


def _negotiated(stats: dict[str, Any]) -> dict[str, Any] | None:
    for holder in (stats, stats.get("settings") or {}):
        if isinstance(holder.get("negotiated"), dict):
            return holder["negotiated"]
    return None


def kernel_section(stats: dict[str, Any], guest: GuestFacts | None = None) -> dict[str, Any]:
    """The kernel a run ran on: release, and the FUSE protocol minor and INIT flags the
    kernel offered, as our codec saw them at FUSE_INIT. Servers that answer INIT
    themselves (pyfuse3 through libfuse, peers) do not tell us: then they are None, with
    the uapi header's minor of a cached guest kernel when there is one. `guest`: this
    process's guest (this_guest()) unless given."""
    section: dict[str, Any] = {"release": os.uname().release}
    neg = _negotiated(stats)
    if neg is not None and neg.get("kernel_minor") is not None:
        offered = int(str(neg["kernel_flags"]), 0)
        section.update(
            fuse_minor_offered=neg["kernel_minor"],
            fuse_flags_offered=hex(offered),
            fuse_flags_offered_names=init_flag_names(offered),
            fuse_init_source="FUSE_INIT of this run, read by Ringside's codec",
        )
    else:
        section.update(
            fuse_minor_offered=None,
            fuse_flags_offered=None,
            fuse_init_source="unknown: this transport's server answers FUSE_INIT itself "
            "and does not report what the kernel offered",
        )
    guest = guest or this_guest()
    if guest is not None and guest.kernel:
        # The kernel cache, shared read-only with the guest, holds the kernel's uapi header.
        section["guest_kernel"] = guest.kernel
        try:
            minor, source = resolve(guest.kernel).fuse_minor()
        except KernelError:
            minor, source = None, "kernel not in this checkout's cache"
        section["uapi_header_minor"] = minor
        section["uapi_header"] = source
    return section
