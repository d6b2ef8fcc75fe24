"""The tidy table: one row per run and direction, from result documents."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.results.document import NotAResult, ResultError, read_result, result_files
from transports.placement import RINGSIDE_THREADS

if TYPE_CHECKING:
    import pandas


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
