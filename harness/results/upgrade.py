"""Older results and campaign manifests read as the current format: one upgrade path.

The format's version changes only when a document's shape changes (a field moves, or
changes type or meaning); a changed default never needs one. Every result records its
transport's settings, every option with its value (`transport.settings`), so reading a
result writes out in its spec each setting that differs from today's default
(`settings_to_write`): a run from before a default changed keeps saying what ran, under
a label of its own. A setting a result does not record belongs to an option its
transport did not have then; the option's `absent` (transports/options.py) says what
such a run ran with instead (e.g. `datapath=python`, devfuse's `follow=off`).

Versions: 1 is Ringside 0.1.0's. 5 is the format since; 2, 3 and 4 were drafts of it
written during its development, never released, and read as 5: they differ from it only
in defaults, which their settings record, and 2 (like 1) in what it called
`buffers=pinned`, which was user-space mlock (`buffers=mlock` since the kernel's pin of
protocol 7.46 took the name).

A campaign's manifest (campaign.json, written by harness/campaigns/interleaved.py) holds
specs but no settings: each of its specs reads as the results that spec produced read
(`upgrade_manifest`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from transports.base import TransportUnavailable, transport_class
from transports.options import SpecError
from transports.placement import PLACEMENT_OPTIONS
from transports.spec import Spec, same_setting, setting_text

FORMAT_VERSION = 5
SUPPORTED_VERSIONS = (1, 2, 3, 4, 5)
# Results before this version called user-space mlock `buffers=pinned`.
KERNEL_PIN_SINCE = 3
MANIFEST_FORMAT = 4  # campaign.json's `campaign_format`; 2 and 3 were drafts of 4
# Manifests before this format called user-space mlock `buffers=pinned`.
MANIFEST_KERNEL_PIN_SINCE = 2


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A document of any supported version in the current format (changed in place; the
    file is not rewritten, `upgraded_from` says what was read)."""
    version = data["format_version"]
    if version != FORMAT_VERSION:
        data["upgraded_from"] = version
    if version == 1:
        _statistics_of_version_1(data)
    if version < KERNEL_PIN_SINCE:
        _pinned_was_mlock(data)
    _renamed_in_drafts(data)
    _write_out_settings(data)
    data["format_version"] = FORMAT_VERSION
    return data


def _statistics_of_version_1(data: dict[str, Any]) -> None:
    """Version 1 gave each transport's statistics its own shape (lower-case opcode names,
    devfuse's `requests_ring: 0` for "no ring") and left `export.fill` out (those runs
    were served sparse)."""
    export = data.get("export")
    if isinstance(export, dict):
        export.setdefault("fill", "none")
    stats = data.get("transport_stats")
    if isinstance(stats, dict):
        if "ops_ring" not in stats and stats.get("requests_ring") == 0:
            del stats["requests_ring"]
        for key in ("ops", "ops_ring", "ops_devfuse"):
            if isinstance(stats.get(key), dict):
                stats[key] = {op.upper(): n for op, n in stats[key].items()}


# A spec's `buffers=pinned`, as older versions wrote it for what is now buffers=mlock.
_PINNED = re.compile(r"(?<![A-Za-z0-9_])buffers=pinned(?![A-Za-z0-9_])")


def _mlock_spec(spec: str) -> str:
    """A uring spec of the time before the kernel pin: its `pinned` was mlock."""
    name, sep, options = spec.partition(":")
    return name + sep + _PINNED.sub("buffers=mlock", options) if name == "uring" else spec


def _transport(name: str) -> type | None:
    """The transport class of that name here, or None (nothing to compare with)."""
    try:
        return transport_class(name)
    except (SpecError, TransportUnavailable):
        return None


def _respec(transport: dict[str, Any], step: Callable[[str], str]) -> None:
    """The recorded spec rewritten by `step`, and the label with it where it was the spec."""
    spec = transport.get("spec")
    if not isinstance(spec, str):
        return
    transport["spec"] = step(spec)
    if transport.get("label") == spec:
        transport["label"] = transport["spec"]


def _pinned_was_mlock(data: dict[str, Any]) -> None:
    """A uring run labelled buffers=pinned used mlock (before protocol 7.46 there was
    nothing else): its spec (and a label that was the spec), settings and check say so,
    so it never shares a label with a run of the kernel's pin."""
    transport = data.get("transport") or {}
    if transport.get("name", "uring") != "uring":
        return
    _respec(transport, _mlock_spec)
    for settings in (transport.get("settings"),
                     (data.get("transport_stats") or {}).get("settings")):
        if isinstance(settings, dict) and settings.get("buffers") == "pinned":
            settings["buffers"] = "mlock"
    for check in data.get("checks") or ():
        if isinstance(check, dict) and check.get("name") == "pinned":
            check["name"] = "mlock"


# Statistics keys renamed before 5 was released ("devfuse" is a transport, "pin" memory):
# their old names appear only in files of format 5's drafts, so they are renamed in any.
_RENAMED_STATISTICS = {"requests_devfuse": "requests_device", "ops_devfuse": "ops_device"}
_RENAMED_FOLLOW = {"unpins": "releases"}
_RENAMED_QUEUE = {"pin_error": "affinity_error"}
# Servers' own placement as recorded while "pin" also meant CPUs.
_RENAMED_DESIGN = {
    "each queue thread pinned to its CPU (pin=on)":
        "each queue thread on its queue's CPU (affinity=on)",
    "each ring thread pinned to its queue's CPU (libfuse's design)":
        "each ring thread bound to its queue's CPU (libfuse's design)",
}


def _renamed(mapping: Any, names: Mapping[str, str]) -> None:
    if isinstance(mapping, dict):
        for old, new in names.items():
            if old in mapping and new not in mapping:
                mapping[new] = mapping.pop(old)


def renamed_options_spec(spec: str) -> str:
    """A spec with every option it names by a former name (`Option.formerly`, e.g.
    uring's pin=, now affinity=) under the option's name now."""
    read = Spec.read(spec)
    renames = _option_renames(read.name)
    if not any(key in renames for key, _ in read.given):
        return spec
    given = tuple((renames.get(key, key), value) for key, value in read.given)
    text = Spec(read.name, given).text
    return f"{read.label}={text}" if read.label else text


def _option_renames(name: str) -> dict[str, str]:
    cls = _transport(name)
    options = cls.options if cls else {}
    return {o.formerly: key for key, o in options.items() if o.formerly}


def _renamed_in_drafts(data: dict[str, Any]) -> None:
    """Names a draft of format 5 wrote that 5 calls otherwise: options (`formerly`),
    statistics keys, uring's recorded design."""
    transport = data.get("transport") or {}
    stats = data.get("transport_stats") or {}
    _respec(transport, renamed_options_spec)
    renames = _option_renames(str(transport.get("name") or ""))
    for settings in (transport.get("settings"), stats.get("settings"), stats.get("requested")):
        _renamed(settings, renames)
    if not isinstance(stats, dict):
        return
    _renamed(stats, _RENAMED_STATISTICS)
    _renamed(stats.get("follow"), _RENAMED_FOLLOW)
    for queue in stats.get("per_queue") or ():
        _renamed(queue, _RENAMED_QUEUE)
    placement = stats.get("placement")
    if isinstance(placement, dict) and placement.get("design") in _RENAMED_DESIGN:
        placement["design"] = _RENAMED_DESIGN[placement["design"]]


def _write_out_settings(data: dict[str, Any]) -> None:
    """The spec (and a label that was the spec) with `settings_to_write` appended; what
    it appends joins the requested and effective settings where they lack it."""
    transport = data.get("transport") or {}
    spec = transport.get("spec")
    if not isinstance(spec, str):
        return
    settings = transport.get("settings")
    placement = (data.get("transport_stats") or {}).get("placement")
    written = settings_to_write(Spec.read(spec), settings if isinstance(settings, dict) else {},
                                placement_recorded=isinstance(placement, dict))
    if not written:
        return
    _respec(transport, lambda text: Spec.read(text).with_options(**written).text)
    for recorded in (settings, (data.get("transport_stats") or {}).get("settings")):
        if isinstance(recorded, dict):
            for key, value in written.items():
                # As the spec writes it, the way these results have always read.
                recorded.setdefault(key, value)


def settings_to_write(spec: Spec, recorded: Mapping[str, Any], *,
                      placement_recorded: bool) -> dict[str, str]:
    """The settings a spec must write out to say what its run ran with: each option it
    does not give whose recorded value (else, when the run predates the option, the
    option's `absent`) differs from today's default, in the transport's order, as a
    spec writes them.

    Placement keys are the run's, not the transport's (transports/placement.py): a run
    that recorded its placement (`transport_stats.placement`) may have had it from the
    command line, which a spec never carries (tables show placement in columns of its
    own). Before that only a server that places its own threads (uring, devfuse) had a
    policy of its own; any other server's placement then is unknown, as the placement
    columns say.
    """
    cls = _transport(spec.name)
    if cls is None:
        return {}  # no transport of that name here: nothing to compare with
    given = spec.options()
    free_form = getattr(cls, "raw_option", None)
    written: dict[str, str] = {}
    for key, option in {**cls.options, **PLACEMENT_OPTIONS}.items():
        if key in given or key == free_form:
            continue
        if key in PLACEMENT_OPTIONS and (placement_recorded or not cls.places_own_threads):
            continue
        value = recorded[key] if key in recorded else option.absent
        if value is not None and not same_setting(value, option.default):
            written[key] = setting_text(value)
    # The guard watches SCHED_IDLE threads: beside any other policy its absence says
    # nothing about the run.
    sched = given.get("sched", written.get("sched", recorded.get("sched")))
    if "idle_guard" in written and sched != "idle":
        del written["idle_guard"]
    return written


def upgrade_manifest(manifest: dict[str, Any],
                     result_specs: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A campaign manifest's specs as its results read (changed in place).

    `result_specs` maps a result file's name to its spec as read; a manifest's spec
    becomes that of the results its runs name (the results record what the spec meant).
    A spec no result of the campaign read is read as a result of its manifest's time
    that recorded no settings: each option it lacks as the option's `absent` (exact for
    0.1.0's manifests; a current manifest's spec stays as given).
    """
    version = int(manifest.get("campaign_format") or 1)
    result_specs = result_specs or {}
    read: dict[str, str] = {}
    for run in manifest.get("runs") or ():
        if isinstance(run, dict) and isinstance(run.get("transport"), str) \
                and run.get("result") in result_specs:
            read.setdefault(run["transport"], result_specs[run["result"]])

    def upgraded(spec: Any) -> Any:
        if not isinstance(spec, str):
            return spec
        if spec in read:
            return read[spec]
        spec = renamed_options_spec(spec)
        if version >= MANIFEST_FORMAT:
            return spec
        if version < MANIFEST_KERNEL_PIN_SINCE:
            spec = _mlock_spec(spec)
        written = settings_to_write(Spec.read(spec), {}, placement_recorded=False)
        return Spec.read(spec).with_options(**written).text if written else spec

    if isinstance(manifest.get("transports"), list):
        manifest["transports"] = [upgraded(s) for s in manifest["transports"]]
    if isinstance(manifest.get("labels"), dict):
        manifest["labels"] = {
            (upgraded(label) if label == spec else label): upgraded(spec)
            for label, spec in manifest["labels"].items()
        }
    for run in manifest.get("runs") or ():
        if isinstance(run, dict) and "transport" in run:
            run["transport"] = upgraded(run["transport"])
    return manifest
