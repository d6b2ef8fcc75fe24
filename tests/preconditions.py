"""Preconditions of the machine that tests rely on: checked once, reported once.

A test declares what it needs with `@pytest.mark.needs("name", ...)` (or a module's
`pytestmark`); tests marked `mount` and parametrized with a uring transport need
`fuse_over_io_uring` without saying so. When a needed precondition is unmet, the tests
that need it are skipped with a pointer, and `test_machine_preconditions[name]` fails once
with the cause and the fix, so a machine that lacks e.g. an open /dev/fuse reads as one
failure, not as 34 symptoms. Only the tests that will run count: `-m "not mount"` needs
nothing that only mounting tests need. The checks are `ringside doctor`'s, so both say the
same thing.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import pytest

from harness import doctor
from transports import sysinfo


def _capability(check: Callable[[], doctor.Capability]) -> Callable[[], str | None]:
    def unmet() -> str | None:
        cap = check()
        if cap.ok:
            return None
        return f"{cap.name}: {cap.state}; fix: {cap.fix}" if cap.fix else f"{cap.name}: {cap.state}"

    return unmet


def _io_uring_for_users() -> str | None:
    value = sysinfo.io_uring_disabled()
    if value == 0:
        return None
    return (
        f"kernel.io_uring_disabled is {value}: ordinary users cannot create an io_uring; "
        "fix: `sysctl kernel.io_uring_disabled=0` as root"
    )


def _fuse_over_io_uring() -> str | None:
    state = sysinfo.enable_uring()
    if state is None:
        return (
            f"the fuse module has no enable_uring parameter (kernel {os.uname().release}); "
            "fix: a kernel >= 6.14 with CONFIG_FUSE_IO_URING"
        )
    if state != "Y" and not os.access(sysinfo.ENABLE_URING, os.W_OK):
        return f"enable_uring is {state}; fix: `echo Y > {sysinfo.ENABLE_URING}` as root"
    if sysinfo.io_uring_disabled() == 2:
        return "kernel.io_uring_disabled is 2; fix: `sysctl kernel.io_uring_disabled=0` as root"
    return None


def _libfuse_build() -> str | None:
    """A libfuse build the `libfuse` transport finds by itself: `make test` and CI fetch
    one into the cache (`ringside peers fetch libfuse`)."""
    from transports.base import TransportUnavailable
    from transports.peers.libfuse import resolve_build

    try:
        resolve_build(None)
    except TransportUnavailable as e:
        return f"{e}; fix: `ringside peers fetch libfuse` (or `make peers`)"
    return None


def _qsd_build(setting: str) -> Callable[[], str | None]:
    """A qemu-storage-daemon build `qsd:build=SETTING` finds in the cache."""

    def unmet() -> str | None:
        from transports.base import TransportUnavailable
        from transports.peers.qsd_build import resolve

        try:
            resolve(setting).probe()
        except TransportUnavailable as e:
            return str(e)
        return None

    return unmet


def _idle_guard() -> str | None:
    """sched=idle's starvation guard can work here (schedstat, leave SCHED_IDLE)."""
    from transports.sched.policy import guard_fix, guard_unavailable

    why = guard_unavailable()
    return None if why is None else f"{why}; fix: {guard_fix(why)}"


PRECONDITIONS: dict[str, Callable[[], str | None]] = {
    "dev_fuse_for_users": _capability(doctor.check_dev_fuse_for_users),
    "user_tools": _capability(doctor.check_user_tools),
    "io_uring_for_users": _io_uring_for_users,
    "fuse_over_io_uring": _fuse_over_io_uring,
    "libfuse_build": _libfuse_build,
    "idle_guard": _idle_guard,
    "qsd_build": _qsd_build("cached"),
    "qsd_io_uring_build": _qsd_build("cached-io-uring"),
}
# Met only where someone built them: CI does not build QEMU (10-20 minutes), so the tests
# that need them skip there and their check skips too instead of failing.
OPTIONAL = {"qsd_build", "qsd_io_uring_build"}
# What the checkout's cache holds rather than what the machine offers: `make test` and CI
# build libfuse first (`make peers`), so on CI (CI=true) it must be met; a bare `pytest` in a
# fresh clone, by any user, skips its tests and the check says how to build it.
OPTIONAL_OFF_CI = {"libfuse_build"}
CHECK_TEST = "test_machine_preconditions"


def optional(name: str) -> bool:
    """An unmet `name` skips its check instead of failing it (see OPTIONAL)."""
    return name in OPTIONAL or (name in OPTIONAL_OFF_CI and os.environ.get("CI") != "true")


@functools.cache
def unmet(name: str) -> str | None:
    """Why precondition `name` is not met here (None when it is); checked once a session."""
    return PRECONDITIONS[name]()


def needs_of(item: pytest.Item) -> set[str]:
    names = {name for mark in item.iter_markers("needs") for name in mark.args}
    # A test that serves is marked `mount`; elsewhere a spec among the parameters is text
    # (parsing, results, the README) and needs nothing of the machine.
    serves = item.get_closest_marker("mount") is not None
    params = getattr(getattr(item, "callspec", None), "params", {}) if serves else {}
    if any(isinstance(v, str) and v.startswith("uring") for v in params.values()):
        names.add("fuse_over_io_uring")
    for value in params.values():
        if isinstance(value, str) and value.startswith("qsd:"):
            if "build=cached-io-uring" in value:
                names.add("qsd_io_uring_build")
            elif "build=cached" in value:
                names.add("qsd_build")
            if "io_uring=on" in value:
                names.add("fuse_over_io_uring")
    unknown = names - PRECONDITIONS.keys()
    if unknown:
        raise pytest.UsageError(
            f"{item.nodeid} needs unknown preconditions {sorted(unknown)}; "
            f"known: {sorted(PRECONDITIONS)}"
        )
    return names


def apply(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests whose preconditions are unmet, and keep one check per needed one."""
    checks = [i for i in items if i.originalname == CHECK_TEST]
    needed: set[str] = set()
    for item in items:
        if item.originalname == CHECK_TEST:
            continue
        wants = needs_of(item)
        needed |= wants
        for name in sorted(wants):
            if reason := unmet(name):
                said = "optional, see" if optional(name) else "failed once in"
                item.add_marker(
                    pytest.mark.skip(reason=f"machine precondition {name!r} unmet "
                                     f"({said} {CHECK_TEST}[{name}]): {reason}")
                )
                break
    unneeded = [i for i in checks if i.callspec.params["precondition"] not in needed]
    if unneeded:
        config.hook.pytest_deselected(items=unneeded)
        items[:] = [i for i in items if i not in unneeded]
