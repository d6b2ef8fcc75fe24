"""Older result documents read as the current format, one step per version.

FORMAT_VERSION changes whenever a field changes meaning; each change adds one step to
`upgrade`, and readers refuse versions they do not know.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from transports.spec import Spec

# 3: `uring:buffers=pinned` is the kernel's pin of a registered pool (protocol 7.46);
#    in versions 1 and 2 it meant user-space mlock, now `buffers=mlock`. Older files are
#    upgraded on reading, so old and new never share a label.
# 5: uring's `sched` defaults to auto (SCHED_IDLE with a starvation guard where it may act)
#    and sched=idle is guarded unless idle_guard=off; before, the default was batch and
#    idle was unguarded. devfuse gains `sched` (auto) and `follow` (on).
FORMAT_VERSION = 5
SUPPORTED_VERSIONS = (1, 2, 3, 4, 5)


def _upgrade_1_to_2(data: dict[str, Any]) -> None:
    """Version 2: transport_stats has one shape for every transport (TransportStatistics:
    upper-case opcode names, no ring counters from a transport without a ring), and
    export.fill is always there (version 1 files without it were served sparse)."""
    export = data.get("export")
    if isinstance(export, dict):
        export.setdefault("fill", "none")
    stats = data.get("transport_stats")
    if isinstance(stats, dict):
        if "ops_ring" not in stats and stats.get("requests_ring") == 0:
            del stats["requests_ring"]  # devfuse said 0 for "has no ring"
        for key in ("ops", "ops_ring", "ops_devfuse"):
            if isinstance(stats.get(key), dict):
                stats[key] = {op.upper(): n for op, n in stats[key].items()}


def _upgrade_2_to_3(data: dict[str, Any]) -> None:
    """Version 3: a uring run labelled buffers=pinned used mlock (user space; before
    protocol 7.46 there was nothing else), so its spec, settings and check are relabelled
    buffers=mlock. The file on disk is not rewritten; `upgraded_from` says what was read."""
    transport = data.get("transport") or {}
    if transport.get("name", "uring") == "uring":
        spec = transport.get("spec")
        if isinstance(spec, str):
            transport["spec"] = _spec_2_to_3(spec)
        for settings in (transport.get("settings"),
                         (data.get("transport_stats") or {}).get("settings")):
            if isinstance(settings, dict) and settings.get("buffers") == "pinned":
                settings["buffers"] = "mlock"
        for check in data.get("checks") or ():
            if isinstance(check, dict) and check.get("name") == "pinned":
                check["name"] = "mlock"


def _upgrade_3_to_4(data: dict[str, Any]) -> None:
    """Version 4: devfuse and uring have `datapath` (python|native, default native) and
    uring's `sched` defaults to batch. Older runs served data in Python with SCHED_OTHER
    queue threads: their spec (and a label that was the spec) and settings say so."""
    _write_out_defaults(data, _spec_3_to_4)


def _upgrade_4_to_5(data: dict[str, Any]) -> None:
    """Version 5: uring's `sched` defaults to auto, and sched=idle is guarded; devfuse has
    `sched` and `follow` (on). Older uring runs without a sched ran SCHED_BATCH, none had a
    guard, devfuse's ran SCHED_OTHER without following: their spec (and a label that was the
    spec) and settings say so."""
    _write_out_defaults(data, _spec_4_to_5)


def _write_out_defaults(data: dict[str, Any], spec_step: Callable[[str], str]) -> None:
    """Rewrite a result's spec with `spec_step`, which writes out the defaults of then, and
    add what it added to the spec to the requested and effective settings where missing."""
    transport = data.get("transport") or {}
    spec = transport.get("spec")
    if not isinstance(spec, str):
        return
    new_spec = spec_step(spec)
    if new_spec == spec:
        return
    transport["spec"] = new_spec
    if transport.get("label") == spec:
        transport["label"] = new_spec
    given = _spec_options(spec)
    added = [(k, v) for k, v in _spec_options(new_spec).items() if given.get(k) != v]
    for settings in (transport.get("settings"),
                     (data.get("transport_stats") or {}).get("settings")):
        if isinstance(settings, dict):
            for key, value in added:
                settings.setdefault(key, value)


def _spec_options(spec: str) -> dict[str, str]:
    return Spec.read(spec).options()


_UPGRADES = {  # version -> the step to the next
    1: _upgrade_1_to_2, 2: _upgrade_2_to_3, 3: _upgrade_3_to_4, 4: _upgrade_4_to_5,
}


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A document of any supported version in the current format (changed in place)."""
    if data["format_version"] != FORMAT_VERSION:
        data["upgraded_from"] = data["format_version"]
    while data["format_version"] != FORMAT_VERSION:
        _UPGRADES[data["format_version"]](data)
        data["format_version"] += 1
    return data


# The spec text older versions wrote for what is now buffers=mlock.
_PINNED_BEFORE_3 = re.compile(r"(?<![A-Za-z0-9_])buffers=pinned(?![A-Za-z0-9_])")
# Defaults that changed in format 4: what a spec without the key meant before.
_DEFAULTS_BEFORE_4 = {"devfuse": {"datapath": "python"},
                      "uring": {"datapath": "python", "sched": "normal"}}


def _spec_2_to_3(spec: str) -> str:
    """buffers=pinned meant mlock."""
    name, sep, options = spec.partition(":")
    return name + sep + _PINNED_BEFORE_3.sub("buffers=mlock", options) if name == "uring" else spec


def _spec_3_to_4(spec: str) -> str:
    """devfuse and uring served data in Python, uring's queue threads ran SCHED_OTHER:
    those defaults are written out."""
    return _with_defaults(spec, _DEFAULTS_BEFORE_4.get(Spec.read(spec).name, {}))


def _spec_4_to_5(spec: str) -> str:
    """uring's queue threads ran SCHED_BATCH unless told otherwise, and SCHED_IDLE had no
    guard; devfuse's readers ran SCHED_OTHER wherever the scheduler put them: those are
    written out."""
    name = Spec.read(spec).name
    if name == "devfuse":
        return _with_defaults(spec, {"follow": "off", "sched": "normal"})
    if name != "uring":
        return spec
    spec = _with_defaults(spec, {"sched": "batch"})
    if _spec_options(spec)["sched"] != "idle":
        return spec
    return _with_defaults(spec, {"idle_guard": "off"})


def _with_defaults(spec: str, defaults: dict[str, str]) -> str:
    """`spec` with each of `defaults` it does not give appended."""
    read = Spec.read(spec)
    return read.with_defaults(defaults).text if set(defaults) - set(read.options()) else spec


_SPEC_UPGRADES = {  # format version -> the step to the next
    2: _spec_2_to_3, 3: _spec_3_to_4, 4: _spec_4_to_5,
}


def upgrade_spec_text(spec: str, version: int = 1) -> str:
    """A transport spec written by format `version` as the current format writes it
    (results, manifests)."""
    for step in range(max(version, 2), FORMAT_VERSION):
        spec = _SPEC_UPGRADES[step](spec)
    return spec


