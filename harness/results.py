"""The result format: one JSON document per run, and a tidy table over many of them.

This module owns the format (harness/results.md describes it): `run_result` builds a
document, `write_result` writes it, `read_result` reads one and upgrades it to the
current FORMAT_VERSION, and `rows`/`load` turn documents into the tidy table. A result
keeps fio's JSON verbatim under "fio_raw" beside the parsed "summary", so a later
analysis can recompute anything from the raw numbers. FORMAT_VERSION changes whenever
a field changes meaning; each change adds one step to `upgrade`, and readers refuse
versions they do not know.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transports.placement import RINGSIDE_THREADS
from transports.spec import Spec

if TYPE_CHECKING:
    import pandas

# 3: `uring:buffers=pinned` is the kernel's pin of a registered pool (protocol 7.46);
#    in versions 1 and 2 it meant user-space mlock, now `buffers=mlock`. Older files are
#    upgraded on reading, so old and new never share a label.
# 5: uring's `sched` defaults to auto (SCHED_IDLE with a starvation guard where it may act)
#    and sched=idle is guarded unless idle_guard=off; before, the default was batch and
#    idle was unguarded. devfuse gains `sched` (auto) and `follow` (on).
FORMAT_VERSION = 5
SUPPORTED_VERSIONS = (1, 2, 3, 4, 5)


class ResultError(ValueError):
    """A result file that cannot be read or has an unknown format."""


class NotAResult(ResultError):
    """A file that is not a Ringside result at all (not JSON, or no format_version)."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def result_stem(scenario: str, transport: str, when: datetime) -> str:
    """`SCENARIO__TRANSPORT__YYYYmmddTHHMMSS.ffffff`: sorts by scenario, then time."""
    return f"{_slug(scenario)}__{_slug(transport)}__{when.strftime('%Y%m%dT%H%M%S.%f')}"


def unique_stem(directory: str | os.PathLike[str], stem: str) -> str:
    """`stem`, or `stem-N` when a result or job file of that name already exists."""
    directory = Path(directory)
    candidate, n = stem, 1
    while any(directory.glob(f"{glob_escape(candidate)}.*")):
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


# The sections of a run's document, in the order written (harness/results.md says what
# each holds); `campaign` only in a campaign.
RUN_SECTIONS = (
    "scenario", "transport", "export", "start", "end", "command", "summary", "server",
    "system", "derived", "transport_stats", "checks", "coverage", "fio_jobfile",
    "fio_messages", "host", "kernel", "virtualization", "versions", "git", "fio_raw",
)
OPTIONAL_RUN_SECTIONS = ("campaign",)


def run_result(**sections: Any) -> dict[str, Any]:
    """The document of one run from its sections; a missing or unknown one is a TypeError."""
    missing = [name for name in RUN_SECTIONS if name not in sections]
    unknown = [name for name in sections if name not in RUN_SECTIONS + OPTIONAL_RUN_SECTIONS]
    if missing or unknown:
        raise TypeError(f"run_result: missing sections {missing}, unknown sections {unknown}")
    order = RUN_SECTIONS + OPTIONAL_RUN_SECTIONS
    return {
        "format_version": FORMAT_VERSION,
        "kind": "run",
        **{name: sections[name] for name in order if name in sections},
    }


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


def write_result(
    directory: str | os.PathLike[str], data: dict[str, Any], stem: str | None = None
) -> Path:
    """Write `data` as DIR/STEM.json atomically and return the path.

    Without a stem one is made from the scenario point, the transport and the start time.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = {"format_version": FORMAT_VERSION, **data}
    if stem is None:
        when = datetime.fromisoformat(data["start"]) if "start" in data else datetime.now()
        point = data.get("scenario", {}).get("point", "run")
        transport = data.get("transport", {}).get("spec", "transport")
        stem = unique_stem(directory, result_stem(point, transport, when))
    path = directory / f"{stem}.json"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def read_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise ResultError(f"cannot read result {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise NotAResult(f"{path} is not a JSON result file: {e}") from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise NotAResult(f"{path} is not a Ringside result: it has no format_version")
    version = data["format_version"]
    if version not in SUPPORTED_VERSIONS:
        raise ResultError(
            f"{path} has format_version {version!r}, which this Ringside does not know "
            f"(it reads {', '.join(map(str, SUPPORTED_VERSIONS))}): use the Ringside "
            "version that wrote it, or update this one"
        )
    return upgrade(data)


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


def result_files(path: str | os.PathLike[str]) -> list[Path]:
    """A result file itself, or every *.json result below a directory (sorted)."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*.json") if not p.name.startswith("."))
    if not path.exists():
        raise ResultError(f"no result file or directory {path}")
    return [path]


def rows(data: dict[str, Any], source: str = "") -> list[dict[str, Any]]:
    """The tidy rows of one result: one per direction that did I/O."""
    scenario = data.get("scenario", {})
    transport = data.get("transport", {})
    export = data.get("export", {})
    summary = data.get("summary", {})
    server = data.get("server", {}).get("window", {})
    derived = data.get("derived", {})
    stats = data.get("transport_stats") or {}
    # Ours report their guard; a server placed from outside, its placer's guard.
    guard = stats.get("sched_guard") or (stats.get("placement") or {}).get("sched_guard") or {}
    common: dict[str, Any] = {
        "file": source,
        "scenario": scenario.get("name"),
        "point": scenario.get("point"),
        "transport": transport.get("name"),
        "transport_spec": transport.get("spec"),
        # What tables call the transport: its label (`-t LABEL=SPEC`), else its spec.
        "transport_label": transport.get("label") or transport.get("spec"),
        "backing": export.get("backing"),
        "export_size": export.get("size"),
        "backing_fill": export.get("fill"),
        "cache": export.get("cache"),
        "start": data.get("start"),
        "end": data.get("end"),
        "git_commit": data.get("git", {}).get("commit"),
        "git_dirty": data.get("git", {}).get("dirty"),
        "kernel": data.get("host", {}).get("kernel"),
        # Results from before `ringside guest` all ran on the host.
        "virtualization": data.get("virtualization", {}).get("kind", "none"),
        "qemu_version": data.get("virtualization", {}).get("qemu_version"),
        "fuse_minor_offered": data.get("kernel", {}).get("fuse_minor_offered"),
        "cpu_count": data.get("host", {}).get("cpu_count"),
        "total_ios": summary.get("total_ios"),
        "server_ctxsw": server.get("ctxt_switches"),
        "server_voluntary_ctxsw": server.get("voluntary_ctxt_switches"),
        "server_nonvoluntary_ctxsw": server.get("nonvoluntary_ctxt_switches"),
        "server_cpu_s": server.get("cpu_s"),
        "server_cpu_migrations": server.get("cpu_migrations"),
        "server_utime_s": server.get("utime_s"),
        "server_stime_s": server.get("stime_s"),
        "system_ctxsw": data.get("system", {}).get("ctxt_delta"),
        "client_ctx": summary.get("client", {}).get("ctx"),
        "client_usr_cpu_pct": summary.get("client", {}).get("usr_cpu_pct"),
        "client_sys_cpu_pct": summary.get("client", {}).get("sys_cpu_pct"),
        "campaign": data.get("campaign", {}).get("id"),
        "repetition": data.get("campaign", {}).get("repetition"),
        "warmup": bool(data.get("campaign", {}).get("warmup", False)),
        "requests_per_io": data.get("coverage", {}).get("requests_per_io"),
        "coverage_warning": data.get("coverage", {}).get("warning"),
        # A transport without FUSE (direct) on a backing that refused O_DIRECT: what fio
        # ran instead (None: fio ran as the scenario asked)
        "o_direct_fallback": ((data.get("transport_stats") or {}).get("o_direct")
                              or {}).get("note"),
        # sched=idle (uring, devfuse): times its guard found a serving thread starved, and
        # the time serving threads then spent on SCHED_BATCH (None: no guard ran)
        "sched_guard_boosts": guard.get("boosts"),
        "sched_guard_boosted_ms": guard.get("boosted_ms"),
        **placement_columns(data),
        **derived,
    }
    for key, value in scenario.get("fio", {}).items():
        common[key] = value
    for key, value in transport.get("settings", {}).items():
        common[f"transport_{key}"] = value
    out = []
    for direction, d in summary.get("directions", {}).items():
        row = dict(common, direction=direction)
        row.update(
            iops=d["iops"],
            bw_bytes=d["bw_bytes"],
            bw_mib_s=d["bw_bytes"] / (1 << 20),
            io_bytes=d["io_bytes"],
            ios=d["total_ios"],
            runtime_ms=d["runtime_ms"],
        )
        for kind, prefix in (("clat_ns", "clat"), ("lat_ns", "lat")):
            for name, value in d.get(kind, {}).items():
                row[f"{prefix}_{name}_us"] = None if value is None else value / 1000
        out.append(row)
    return out


# A thread counts as serving when it used at least this share of the server's thread CPU
# in the fio window: the threads that carried the requests, not one that slept through.
SERVING_CPU_SHARE = 0.10
UNKNOWN = "unknown"
NO_SERVER = "no server"  # `direct`: fio on the backing itself


def placement_columns(data: dict[str, Any]) -> dict[str, Any]:
    """Where a run's server threads ran: the policies of its serving threads as sampled
    in the fio window, the CPUs asked for, and the server's own design. A result written
    before Ringside recorded placement says "unknown", never a guess."""
    if (data.get("transport_stats") or {}).get("fuse") is False:
        return {"placement_policy": NO_SERVER, "placement_cpus": NO_SERVER,
                "placement_design": None, "placement": NO_SERVER}
    recorded = (data.get("transport_stats") or {}).get("placement")
    threads = (data.get("server") or {}).get("window", {}).get("threads") or []
    threads = [t for t in threads if t.get("name") not in RINGSIDE_THREADS]
    cpu = {id(t): (t.get("utime_s") or 0) + (t.get("stime_s") or 0) for t in threads}
    total = sum(cpu.values())
    serving = [t for t in threads if total and cpu[id(t)] >= SERVING_CPU_SHARE * total]
    policies = sorted({str(t["policy"]) for t in serving if "policy" in t})
    known = bool(serving) and all("policy" in t for t in serving)
    policy = "+".join(policies) if known else UNKNOWN
    cpus = str(recorded.get("cpus", UNKNOWN)) if isinstance(recorded, dict) else UNKNOWN
    design = recorded.get("design") if isinstance(recorded, dict) else None
    return {
        "placement_policy": policy,
        "placement_cpus": cpus,
        "placement_design": design,
        "placement": UNKNOWN if UNKNOWN in (policy, cpus) else f"{policy}, CPUs {cpus}",
    }


# Per-run facts the analysis shows beside the table, by column name (section, key).
METADATA_COLUMNS = {
    "hostname": ("host", "hostname"),
    "cpu_model": ("host", "cpu_model"),
    "fuse_enable_uring": ("host", "fuse_enable_uring"),
    "cache": ("export", "cache"),
    "read_only": ("export", "read_only"),
    "fio_version": ("versions", "fio"),
    "libfuse_version": ("versions", "libfuse"),
    "liburing_version": ("versions", "liburing"),
    "python_version": ("versions", "python"),
}


def metadata_columns(data: dict[str, Any]) -> dict[str, Any]:
    """The METADATA_COLUMNS of one result (None where a section or key is missing)."""
    return {
        column: (data.get(section) or {}).get(key)
        for column, (section, key) in METADATA_COLUMNS.items()
    }


def load(path: str | os.PathLike[str]) -> pandas.DataFrame:
    """A tidy DataFrame: one row per run x direction, from a result file or a directory."""
    import pandas

    table = []
    many = Path(path).is_dir()
    for file in result_files(path):
        try:
            data = read_result(file)
        except ResultError as e:
            # Other JSON may sit beside results in a directory (e.g. campaign notes);
            # only a file that claims a format version it cannot honour is an error.
            if many and isinstance(e, NotAResult):
                continue
            raise
        table += rows(data, str(file))
    return pandas.DataFrame(table)
