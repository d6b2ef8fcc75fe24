"""The tidy table's columns, in one registry that `rows` builds every row from and
FORMAT.md lists (`markdown` renders the registry; tests/test_results.py checks the
document holds exactly that), so the table and its description cannot drift apart.

A column reads one value from a run's document. A family (`expand`) gives one column per
key it finds, named by its pattern's capitals (`transport_KEY`: `transport_depth`, ...).
RUN_COLUMNS hold what every row of a run shares, DIRECTION_COLUMNS what one direction
(read, write) did, each in the order the table holds them. METADATA_COLUMNS are per-run
facts the analysis adds beside the table (harness/analysis/campaign_results.py).

Adding a column: one entry here (where in the table it goes is where it is listed), then
`python -m harness.results --write` to update FORMAT.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from transports.placement import RINGSIDE_THREADS

FORMAT_DOCUMENT = Path(__file__).with_name("FORMAT.md")


class Run:
    """One result's document as its columns read it; `direction` and `measures` are set
    for the row of one direction."""

    def __init__(self, data: dict[str, Any], source: str = ""):
        self.data = data
        self.source = source
        self.direction = ""
        self.measures: dict[str, Any] = {}

    def get(self, section: str, *keys: str, default: Any = None) -> Any:
        """`data[section][key]...`, or `default` where a section or key is missing."""
        value: Any = self.data.get(section)
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return default
            value = value[key]
        return default if value is None and not keys else value

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.get(name)
        return value if isinstance(value, dict) else {}

    @cached_property
    def placement(self) -> dict[str, Any]:
        return placement_columns(self.data)

    @cached_property
    def guard(self) -> dict[str, Any]:
        # Ours report their guard; a server placed from outside, its placer's guard.
        stats = self.section("transport_stats")
        return (stats.get("sched_guard") or (stats.get("placement") or {}).get("sched_guard")
                or {})


@dataclass(frozen=True)
class Column:
    name: str  # the column, or a family's pattern: capitals stand for its keys
    type: str  # as the table holds it (every column may be empty: unknown or not recorded)
    unit: str
    what: str
    value: Callable[[Run], Any] | None = None
    expand: Callable[[Run], dict[str, Any]] | None = None  # a family: {column: value}

    def values(self, run: Run) -> dict[str, Any]:
        if self.expand is not None:
            return self.expand(run)
        assert self.value is not None, self.name
        return {self.name: self.value(run)}

    def matches(self, column: str) -> bool:
        """Whether `column` is this one, or one of this family's."""
        if self.expand is None:
            return column == self.name
        pattern = re.sub(r"[A-Z](?:[A-Z_]*[A-Z])?", "\0", self.name)
        return re.fullmatch(".+".join(map(re.escape, pattern.split("\0"))), column) is not None


def field(section: str, *keys: str, default: Any = None) -> Callable[[Run], Any]:
    return lambda run: run.get(section, *keys, default=default)


def _prefixed(prefix: str, mapping: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{key}": value for key, value in mapping.items()}


def _latencies(kind: str, prefix: str) -> Callable[[Run], dict[str, Any]]:
    """fio's latency statistics of one direction, from nanoseconds to microseconds."""
    def expand(run: Run) -> dict[str, Any]:
        return {f"{prefix}_{name}_us": None if value is None else value / 1000
                for name, value in (run.measures.get(kind) or {}).items()}
    return expand


RUN_COLUMNS: tuple[Column, ...] = (
    Column("file", "str", "", "the result file the row comes from",
           lambda run: run.source),
    Column("scenario", "str", "", "the scenario's name", field("scenario", "name")),
    Column("point", "str", "", "the scenario point (its name and sweep values)",
           field("scenario", "point")),
    Column("transport", "str", "", "the transport's name", field("transport", "name")),
    Column("transport_spec", "str", "",
           "the spec, with each setting it left out that differs from today's default "
           "written out (harness/results/upgrade.py)", field("transport", "spec")),
    Column("transport_label", "str", "",
           "what tables call the transport: its label (`-t LABEL=SPEC`), else its spec",
           lambda run: run.get("transport", "label") or run.get("transport", "spec")),
    Column("backing", "str", "", "the export's backing (`memory:BYTES`, `file:PATH`)",
           field("export", "backing")),
    Column("export_size", "int", "bytes", "the served image's size", field("export", "size")),
    Column("backing_fill", "str", "", "what a created backing held: `data` or `none`",
           field("export", "fill")),
    Column("cache", "str", "", "the export's cache mode for opens without O_DIRECT",
           field("export", "cache")),
    Column("start", "str", "ISO 8601", "when the server started", field("start")),
    Column("end", "str", "ISO 8601", "when the server stopped", field("end")),
    Column("git_commit", "str", "", "Ringside's commit", field("git", "commit")),
    Column("git_dirty", "bool", "", "whether the tree had uncommitted changes",
           field("git", "dirty")),
    Column("kernel", "str", "", "the kernel release", field("host", "kernel")),
    Column("virtualization", "str", "",
           "`none`, `kvm` or `tcg` (emulated); results from before `ringside guest` ran on "
           "the host", field("virtualization", "kind", default="none")),
    Column("qemu_version", "str", "", "the guest's qemu", field("virtualization", "qemu_version")),
    Column("fuse_minor_offered", "int", "", "the FUSE protocol minor the kernel offered",
           field("kernel", "fuse_minor_offered")),
    Column("cpu_count", "int", "", "the machine's CPUs", field("host", "cpu_count")),
    Column("total_ios", "int", "I/Os", "fio's I/Os in every direction",
           field("summary", "total_ios")),
    Column("server_ctxsw", "int", "", "the server's context switches in the fio window",
           field("server", "window", "ctxt_switches")),
    Column("server_voluntary_ctxsw", "int", "", "of which voluntary",
           field("server", "window", "voluntary_ctxt_switches")),
    Column("server_nonvoluntary_ctxsw", "int", "", "of which involuntary",
           field("server", "window", "nonvoluntary_ctxt_switches")),
    Column("server_cpu_s", "float", "s", "the server's CPU time in the fio window",
           field("server", "window", "cpu_s")),
    Column("server_cpu_migrations", "int", "", "the server threads' moves between CPUs",
           field("server", "window", "cpu_migrations")),
    Column("server_utime_s", "float", "s", "of its CPU time, user",
           field("server", "window", "utime_s")),
    Column("server_stime_s", "float", "s", "of its CPU time, system",
           field("server", "window", "stime_s")),
    Column("system_ctxsw", "int", "", "the whole machine's context switches in the window",
           field("system", "ctxt_delta")),
    Column("client_ctx", "int", "", "fio's context switches", field("summary", "client", "ctx")),
    Column("client_usr_cpu_pct", "float", "%", "fio's user CPU",
           field("summary", "client", "usr_cpu_pct")),
    Column("client_sys_cpu_pct", "float", "%", "fio's system CPU",
           field("summary", "client", "sys_cpu_pct")),
    Column("campaign", "str", "", "the campaign's id (empty outside a campaign)",
           field("campaign", "id")),
    Column("repetition", "int", "", "the run's repetition in its campaign (warmups: -1)",
           field("campaign", "repetition")),
    Column("warmup", "bool", "", "a warmup run, left out of every statistic",
           lambda run: bool(run.get("campaign", "warmup", default=False))),
    Column("requests_per_io", "float", "", "data requests the server saw per fio I/O",
           field("coverage", "requests_per_io")),
    Column("coverage_warning", "str", "", "why the server saw too few requests (caches)",
           field("coverage", "warning")),
    # A transport without FUSE (direct) on a backing that refused O_DIRECT: what fio ran
    # instead (None: fio ran as the scenario asked)
    Column("o_direct_fallback", "str", "",
           "what fio ran instead when the backing refused O_DIRECT (`direct`)",
           lambda run: (run.section("transport_stats").get("o_direct") or {}).get("note")),
    # sched=idle: times its guard found a serving thread starved, and the time serving
    # threads then spent on SCHED_BATCH (None: no guard ran)
    Column("sched_guard_boosts", "int", "",
           "times the starvation guard found a serving thread starved (empty: no guard ran)",
           lambda run: run.guard.get("boosts")),
    Column("sched_guard_boosted_ms", "float", "ms",
           "the time serving threads then spent on SCHED_BATCH",
           lambda run: run.guard.get("boosted_ms")),
    Column("placement_policy", "str", "",
           "the policies of the serving threads (those that used at least a tenth of the "
           "server's thread CPU in the window; Ringside's placer and guard left out), joined "
           "by `+`", lambda run: run.placement["placement_policy"]),
    Column("placement_cpus", "str", "", "the `cpus` asked for, or `all`",
           lambda run: run.placement["placement_cpus"]),
    Column("placement_design", "str", "", "the server's own placement, if any",
           lambda run: run.placement["placement_design"]),
    Column("placement", "str", "",
           "`POLICY, CPUs LIST`; each placement column is `unknown` for a result without "
           "thread policies or `transport_stats.placement`, and `no server` for `direct`",
           lambda run: run.placement["placement"]),
    Column("DERIVED", "float", "per I/O",
           "each figure of `derived`: `server_ctxsw_per_io`, `server_cpu_us_per_io` (µs), "
           "`client_ctxsw_per_io`, `system_ctxsw_per_io`",
           expand=lambda run: dict(run.section("derived"))),
    Column("FIO_OPTION", "as the job gives it", "",
           "each option of the scenario's fio job (`rw`, `bs`, `iodepth`, ...)",
           expand=lambda run: dict(run.get("scenario", "fio", default={}))),
    Column("transport_KEY", "as recorded", "",
           "each of `transport.settings`: every option, defaults filled in",
           expand=lambda run: _prefixed("transport_", run.get("transport", "settings",
                                                              default={}))),
)

DIRECTION_COLUMNS: tuple[Column, ...] = (
    Column("direction", "str", "", "`read` or `write`: one row per direction that did I/O",
           lambda run: run.direction),
    Column("iops", "float", "I/O/s", "fio's IOPS", lambda run: run.measures["iops"]),
    Column("bw_bytes", "int", "bytes/s", "fio's bandwidth", lambda run: run.measures["bw_bytes"]),
    Column("bw_mib_s", "float", "MiB/s", "the same in MiB/s",
           lambda run: run.measures["bw_bytes"] / (1 << 20)),
    Column("io_bytes", "int", "bytes", "bytes moved", lambda run: run.measures["io_bytes"]),
    Column("ios", "int", "I/Os", "I/Os completed", lambda run: run.measures["total_ios"]),
    Column("runtime_ms", "int", "ms", "fio's runtime", lambda run: run.measures["runtime_ms"]),
    Column("clat_STAT_us", "float", "µs",
           "completion latency: percentiles (`p50`, `p90`, `p99`, `p99.9`, ...), `min`, "
           "`mean`, `max`", expand=_latencies("clat_ns", "clat")),
    Column("lat_STAT_us", "float", "µs",
           "total latency (submission and completion), where fio recorded it",
           expand=_latencies("lat_ns", "lat")),
)


def _metadata(column: str, section: str, key: str, what: str) -> Column:
    return Column(column, "str", "", what, field(section, key))


METADATA_COLUMNS: tuple[Column, ...] = (
    _metadata("hostname", "host", "hostname", "the machine's name"),
    _metadata("cpu_model", "host", "cpu_model", "its CPU"),
    _metadata("fuse_enable_uring", "host", "fuse_enable_uring",
              "`/sys/module/fuse/parameters/enable_uring`"),
    _metadata("cache", "export", "cache", "the export's cache mode"),
    Column("read_only", "bool", "", "a read-only export", field("export", "read_only")),
    _metadata("fio_version", "versions", "fio", "fio"),
    _metadata("libfuse_version", "versions", "libfuse", "libfuse"),
    _metadata("liburing_version", "versions", "liburing", "liburing"),
    _metadata("python_version", "versions", "python", "Python"),
)


def rows(data: dict[str, Any], source: str = "") -> list[dict[str, Any]]:
    """The tidy rows of one result: one per direction that did I/O."""
    run = Run(data, source)
    common: dict[str, Any] = {}
    for column in RUN_COLUMNS:
        common.update(column.values(run))
    out = []
    for direction, measures in run.get("summary", "directions", default={}).items():
        run.direction, run.measures = direction, measures
        row = dict(common)
        for column in DIRECTION_COLUMNS:
            row.update(column.values(run))
        out.append(row)
    return out


def metadata_columns(data: dict[str, Any]) -> dict[str, Any]:
    """The METADATA_COLUMNS of one result (None where a section or key is missing)."""
    run = Run(data)
    values: dict[str, Any] = {}
    for column in METADATA_COLUMNS:
        values.update(column.values(run))
    return values


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


# -- the document ------------------------------------------------------------------------
BEGIN = ("<!-- columns: rendered from harness/results/columns.py by "
         "`python -m harness.results --write`; edit the registry, not these tables -->")
END = "<!-- end of columns -->"


def _table(columns: tuple[Column, ...]) -> list[str]:
    lines = ["| column | type | unit | what |", "|---|---|---|---|"]
    for column in columns:
        family = " (one per key)" if column.expand is not None else ""
        lines.append(f"| `{column.name}`{family} | {column.type} | {column.unit} | "
                     f"{column.what} |")
    return lines


def markdown() -> str:
    """FORMAT.md's column tables, between their markers, as the registry has them."""
    return "\n".join([
        BEGIN, "",
        "Per run (every row of a run holds them), in the table's order:", "",
        *_table(RUN_COLUMNS), "",
        "Per direction, after them:", "",
        *_table(DIRECTION_COLUMNS), "",
        "Added by the analysis' loader (`load_campaign`) beside the table, where the "
        "table lacks them:", "",
        *_table(METADATA_COLUMNS), "",
        END,
    ])


def documented(text: str) -> str:
    """The column tables a document holds, markers included ('' when it has none)."""
    start, end = text.find(BEGIN), text.find(END)
    return text[start:end + len(END)] if 0 <= start < end else ""
