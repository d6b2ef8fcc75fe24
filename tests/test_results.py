"""Result files: round trip, unique names, format_version checks, the tidy table."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from harness.results import (
    DIRECTION_COLUMNS,
    FORMAT_VERSION,
    MANIFEST_FORMAT,
    METADATA_COLUMNS,
    RUN_COLUMNS,
    NotAResult,
    ResultError,
    load,
    metadata_columns,
    read_result,
    result_stem,
    rows,
    write_result,
)
from harness.results.columns import FORMAT_DOCUMENT, documented, markdown
from transports.spec import Spec


def direction(iops: float, p99: int) -> dict[str, Any]:
    return {
        "iops": iops,
        "bw_bytes": int(iops * 4096),
        "io_bytes": int(iops * 4096 * 2),
        "total_ios": int(iops * 2),
        "runtime_ms": 2000,
        "clat_ns": {
            "p50": 30000,
            "p90": 40000,
            "p99": p99,
            "p99.9": 90000,
            "min": 10000,
            "mean": 31000.5,
            "max": 200000,
        },
    }


def sample(
    transport: str = "uring:depth=16",
    start: str = "2025-01-02T03:04:05+00:00",
    directions: tuple[str, ...] = ("read",),
) -> dict[str, Any]:
    dirs = {d: direction(1000.0, 70000) for d in directions}
    total = sum(d["total_ios"] for d in dirs.values())
    return {
        "kind": "run",
        "scenario": {
            "name": "randrw",
            "point": "randrw@iodepth=4",
            "sweep": {"iodepth": 4},
            "fio": {"rw": "randrw", "bs": "4k", "iodepth": 4},
        },
        "transport": {
            "spec": transport,
            "name": transport.split(":")[0],
            # as the runner records them: every option, defaults filled in
            "settings": dict(Spec.parse(transport).settings),
        },
        "export": {"backing": "memory:268435456", "size": 268435456},
        "start": start,
        "end": start,
        "summary": {
            "directions": dirs,
            "total_ios": total,
            "client": {"usr_cpu_pct": 1.0, "sys_cpu_pct": 10.0, "ctx": total},
        },
        "server": {
            "window": {
                "ctxt_switches": total,
                "voluntary_ctxt_switches": total,
                "nonvoluntary_ctxt_switches": 0,
                "cpu_s": 1.5,
                "utime_s": 1.0,
                "stime_s": 0.5,
            }
        },
        "system": {"ctxt_delta": 3 * total},
        "derived": {"server_ctxsw_per_io": 1.0, "server_cpu_us_per_io": 1.5e6 / total},
        "git": {"commit": "abc", "dirty": False},
        "host": {"kernel": "6.18", "cpu_count": 2},
        "fio_raw": {"fio version": "fio-3.33", "jobs": [{"jobname": "x", "nested": [1, 2]}]},
    }


def test_round_trip(tmp_path: Path) -> None:
    data = sample()
    path = write_result(tmp_path, data)
    assert path.parent == tmp_path and path.suffix == ".json"
    assert path.name == "randrw_iodepth_4__uring_depth_16__20250102T030405.000000.json"
    back = read_result(path)
    assert back["format_version"] == FORMAT_VERSION
    assert back["fio_raw"] == data["fio_raw"]  # verbatim
    assert {k: v for k, v in back.items() if k != "format_version"} == data
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left"


def test_names_are_unique(tmp_path: Path) -> None:
    a = write_result(tmp_path, sample())
    b = write_result(tmp_path, sample())
    assert a != b and a.exists() and b.exists()


def test_stem_sorts_by_scenario_then_time() -> None:
    stem = result_stem("s@bs=4k", "uring:depth=8", datetime(2025, 1, 2, 3, 4, 5, 6))
    assert stem == "s_bs_4k__uring_depth_8__20250102T030405.000006"


def test_unknown_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.json"
    path.write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ResultError, match="format_version 99.*reads 1, 2"):
        read_result(path)


def test_version_1_pinned_is_read_as_mlock(tmp_path: Path) -> None:
    """In formats 1 and 2 uring:buffers=pinned meant user-space mlock; 3 calls that mlock."""
    old = {
        "format_version": 1,
        "transport": {"name": "uring", "spec": "uring:depth=8,buffers=pinned,pin=off",
                      "settings": {"depth": 8, "buffers": "pinned", "pin": False,
                                   "sched": "normal"}},
        "transport_stats": {"settings": {"buffers": "pinned"}, "pinning": "user-space mlock"},
        "checks": [{"name": "ring_share", "ok": True}, {"name": "pinned", "ok": True}],
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    data = read_result(path)
    assert data["format_version"] == FORMAT_VERSION == 5 and data["upgraded_from"] == 1
    spec = "uring:depth=8,buffers=mlock,affinity=off,datapath=python,sched=normal"
    assert data["transport"]["spec"] == spec
    assert data["transport"]["settings"]["buffers"] == "mlock"
    assert data["transport"]["settings"]["affinity"] is False  # was called pin
    assert data["transport_stats"]["settings"]["buffers"] == "mlock"
    assert [c["name"] for c in data["checks"]] == ["ring_share", "mlock"]
    # a version-2 file (before protocol 7.46 modes) meant mlock too; its label, the spec,
    # follows, so it never shares a label with the kernel's pin
    labelled = dict(old["transport"], label=old["transport"]["spec"])
    path.write_text(json.dumps(dict(old, format_version=2, transport=labelled)))
    data = read_result(path)
    assert data["transport"]["spec"] == data["transport"]["label"] == spec
    # a version-3 file's pinned is the kernel pin and stays pinned
    path.write_text(json.dumps(dict(old, format_version=3)))
    assert read_result(path)["transport"]["spec"] == (
        "uring:depth=8,buffers=pinned,affinity=off,datapath=python,sched=normal")


@pytest.mark.parametrize(("spec", "label", "want"), [
    ("uring", "uring", "uring:datapath=python,sched=normal"),
    ("uring:sched=idle", "fast", "uring:sched=idle,datapath=python,idle_guard=off"),
    ("devfuse:threads=2", "devfuse:threads=2",
     "devfuse:threads=2,datapath=python,follow=off,sched=normal"),
    ("pyfuse3", "pyfuse3", "pyfuse3"),
])
def test_version_3_runs_served_data_in_python(tmp_path: Path, spec: str, label: str,
                                              want: str) -> None:
    """Before format 4 devfuse and uring answered READ/WRITE in Python and uring's queue
    threads ran SCHED_OTHER: a version-3 result says so, never reads as today's default."""
    name = spec.partition(":")[0]
    old = {"format_version": 3,
           "transport": {"name": name, "spec": spec, "label": label, "settings": {}},
           "transport_stats": {"settings": {}}}
    path = tmp_path / "v3.json"
    path.write_text(json.dumps(old))
    data = read_result(path)
    assert data["transport"]["spec"] == want
    assert data["transport"]["label"] == (want if label == spec else label)
    if name != "pyfuse3":
        for settings in (data["transport"]["settings"], data["transport_stats"]["settings"]):
            assert settings["datapath"] == "python"


# What each version's writer recorded as the settings of a spec without options.
DRAFT_SETTINGS = {
    2: {"uring": {"depth": 8, "buffers": "mapped", "pin": True, "sched": "normal"},
        "devfuse": {"threads": 1}},
    3: {"uring": {"depth": 8, "buffers": "mapped", "zerocopy": False, "pin": True,
                  "sched": "normal"}, "devfuse": {"threads": 1}},
    4: {"uring": {"depth": 8, "buffers": "mapped", "zerocopy": False, "datapath": "native",
                  "pin": True, "sched": "batch"}, "devfuse": {"threads": 1, "datapath": "native"}},
}


def draft(version: int, spec: str, label: str | None = None) -> dict[str, Any]:
    """A result of an unreleased draft of the format, its settings as its writer
    recorded them (the spec's options over the defaults of the time)."""
    name, _, options = spec.partition(":")
    settings = dict(DRAFT_SETTINGS[version].get(name, {}))
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        settings[key] = int(value) if value.isdigit() else value
    return {"format_version": version,
            "transport": {"name": name, "spec": spec, "label": label or spec,
                          "settings": settings},
            "transport_stats": {"settings": dict(settings)}}


@pytest.mark.parametrize(("version", "spec", "want"), [
    # the defaults of each draft's time are in its recorded settings
    (4, "uring", "uring:sched=batch"),
    (4, "uring:depth=4,sched=idle", "uring:depth=4,sched=idle,idle_guard=off"),
    (4, "uring:sched=normal", "uring:sched=normal"),
    (4, "uring:datapath=python", "uring:datapath=python,sched=batch"),
    (4, "devfuse:threads=2", "devfuse:threads=2,follow=off,sched=normal"),
    (3, "uring", "uring:datapath=python,sched=normal"),
    (3, "uring:buffers=pinned", "uring:buffers=pinned,datapath=python,sched=normal"),
    (3, "devfuse", "devfuse:datapath=python,follow=off,sched=normal"),
    # before 3, buffers=pinned was user-space mlock
    (2, "uring:buffers=pinned", "uring:buffers=mlock,datapath=python,sched=normal"),
    (2, "pyfuse3", "pyfuse3"),
])
def test_drafts_read_by_their_recorded_settings(tmp_path: Path, version: int, spec: str,
                                                want: str) -> None:
    """Formats 2-4 were drafts of 5 that differ from it in defaults only (and 2 in what
    it called pinned): each reads as the old per-version upgrades read it, the settings
    it recorded saying what its time defaulted to."""
    path = tmp_path / "draft.json"
    path.write_text(json.dumps(draft(version, spec)))
    data = read_result(path)
    assert data["format_version"] == FORMAT_VERSION and data["upgraded_from"] == version
    assert data["transport"]["spec"] == data["transport"]["label"] == want
    written = dict(Spec.read(want).given)
    for settings in (data["transport"]["settings"], data["transport_stats"]["settings"]):
        assert all(str(settings[k]) == v or settings[k] in (True, False) for k, v in
                   written.items())
    labelled = draft(version, spec, label="fast")
    path.write_text(json.dumps(labelled))
    assert read_result(path)["transport"]["label"] == "fast"


def test_a_changed_default_needs_no_new_format(tmp_path: Path) -> None:
    """A current result whose recorded settings differ from today's defaults (as after a
    default changed) writes them out in its spec; one missing an option reads as from
    before the option (its `absent`); placement recorded by the run stays out of the
    spec, since the command line may have given it."""
    data = sample("uring")
    data["transport"]["label"] = "uring"
    data["transport"]["settings"].update(depth=4, sched="normal")
    del data["transport"]["settings"]["datapath"]
    data["transport_stats"] = {"settings": {}, "placement": {"sched": "normal"}}
    path = write_result(tmp_path, data)
    back = read_result(path)
    assert back["transport"]["spec"] == back["transport"]["label"] == (
        "uring:depth=4,datapath=python")
    assert back["transport"]["settings"]["datapath"] == "python"
    assert back["transport_stats"]["settings"] == {"datapath": "python", "depth": "4"}
    assert "upgraded_from" not in back
    # without recorded placement, a server that places its own threads had sched as a
    # setting of its own; one placed from outside did not
    del data["transport_stats"]["placement"]
    path.write_text(json.dumps(dict(data, format_version=FORMAT_VERSION)))
    assert read_result(path)["transport"]["spec"] == "uring:depth=4,datapath=python,sched=normal"
    for name in ("pyfuse3", "qsd"):
        other = sample(name)
        other["transport"]["settings"] = {}
        path.write_text(json.dumps(dict(other, format_version=FORMAT_VERSION)))
        assert read_result(path)["transport"]["spec"] == name


def campaign_dir(tmp_path: Path, campaign_format: int | None, specs: dict[str, dict]) -> Path:
    """A campaign directory: a manifest naming `specs` (spec -> its result's document, or
    {} for a run that failed) and those results."""
    runs = []
    for i, (spec, doc) in enumerate(specs.items()):
        if doc:
            doc = dict(doc, kind="run", campaign={"id": "c"}, start=f"2026-01-01T00:00:0{i}",
                       summary={"directions": {"read": direction(1.0, 1)}})
            write_result(tmp_path, doc, stem=f"r{i}")
            runs.append({"transport": spec, "status": "done", "result": f"r{i}.json"})
        else:
            runs.append({"transport": spec, "status": "failed"})
    manifest = {"id": "c", "transports": list(specs), "runs": runs,
                "labels": {spec: spec for spec in specs}}
    if campaign_format is not None:
        manifest["campaign_format"] = campaign_format
    (tmp_path / "campaign.json").write_text(json.dumps(manifest))
    return tmp_path


def test_manifest_specs_read_as_their_results(tmp_path: Path) -> None:
    """A manifest records specs, not settings: each reads as the results it produced; a
    spec without any reads as 0.1.0's (format 1) or as given (the current format)."""
    from harness.analysis.campaign_results import load_campaign

    path = campaign_dir(tmp_path / "drafts", 2, {"uring:buffers=pinned":
                                                 draft(3, "uring:buffers=pinned"), "devfuse": {}})
    manifest = load_campaign(path).manifest
    assert manifest["transports"] == ["uring:buffers=pinned,datapath=python,sched=normal",
                                      "devfuse:datapath=python,follow=off,sched=normal"]
    assert [r["transport"] for r in manifest["runs"]] == manifest["transports"]
    assert list(manifest["labels"]) == manifest["transports"]
    old = campaign_dir(tmp_path / "old", None, {"uring:buffers=pinned": {}, "pyfuse3":
                                                sample("pyfuse3")})
    assert load_campaign(old).manifest["transports"] == [
        "uring:buffers=mlock,datapath=python,sched=normal", "pyfuse3"]
    current = campaign_dir(tmp_path / "now", MANIFEST_FORMAT, {"uring": {}, "uring:depth=16":
                                                              sample("uring:depth=16")})
    assert load_campaign(current).manifest["transports"] == ["uring", "uring:depth=16"]


@pytest.mark.parametrize("text", ['{"kind": "run"}', "not json", "[1, 2]"])
def test_not_a_result(tmp_path: Path, text: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(NotAResult):
        read_result(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ResultError, match="cannot read result"):
        read_result(tmp_path / "none.json")


def test_load_one_file_is_tidy(tmp_path: Path) -> None:
    path = write_result(tmp_path, sample(directions=("read", "write")))
    df = load(path)
    assert len(df) == 2
    assert sorted(df["direction"]) == ["read", "write"]
    row = df.iloc[0]
    assert row["scenario"] == "randrw" and row["point"] == "randrw@iodepth=4"
    assert row["transport"] == "uring" and row["transport_spec"] == "uring:depth=16"
    assert row["transport_depth"] == 16 and row["transport_buffers"] == "mapped"
    assert row["bs"] == "4k" and row["iodepth"] == 4
    assert row["iops"] == 1000.0 and row["clat_p99_us"] == 70.0
    assert row["clat_p99.9_us"] == 90.0
    assert row["server_ctxsw_per_io"] == 1.0
    assert row["file"] == str(path)


def test_load_directory_skips_other_json_but_not_unknown_versions(tmp_path: Path) -> None:
    write_result(tmp_path, sample("pyfuse3"))
    (tmp_path / "sub").mkdir()
    write_result(tmp_path / "sub", sample("uring:depth=16"))
    (tmp_path / "notes.json").write_text('{"campaign": "x"}')
    df = load(tmp_path)
    assert sorted(df["transport"]) == ["pyfuse3", "uring"]
    (tmp_path / "future.json").write_text('{"format_version": 99}')
    with pytest.raises(ResultError, match="format_version 99"):
        load(tmp_path)


def test_load_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ResultError, match="no result file or directory"):
        load(tmp_path / "nope")


def test_version_1_is_upgraded_on_reading(tmp_path: Path) -> None:
    old = sample("pyfuse3")
    old["format_version"] = 1
    old["transport_stats"] = {"transport": "pyfuse3", "requests": 3, "ops": {"read": 2, "open": 1}}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    data = read_result(path)
    assert data["format_version"] == FORMAT_VERSION
    assert data["export"]["fill"] == "none"  # version 1 files without fill were sparse
    assert data["transport_stats"]["ops"] == {"READ": 2, "OPEN": 1}
    devfuse = dict(old, transport_stats={"requests": 1, "requests_ring": 0, "ops": {}})
    path.write_text(json.dumps(devfuse))
    assert "requests_ring" not in read_result(path)["transport_stats"]
    assert load(path).iloc[0]["backing_fill"] == "none"


def test_format_document_lists_the_column_registry() -> None:
    """FORMAT.md's column tables are the registry's (`python -m harness.results --write`
    renders them), so the document says what rows() gives."""
    assert documented(FORMAT_DOCUMENT.read_text()) == markdown(), (
        "FORMAT.md's column tables differ from harness/results/columns.py: run "
        "`python -m harness.results --write`")


def test_rows_give_the_registry_columns_in_its_order() -> None:
    data = sample(directions=("read", "write"))
    data["summary"]["directions"]["read"]["lat_ns"] = {"p50": 40000}
    data["transport_stats"] = {"placement": {"cpus": "all"}, "o_direct": {"note": "x"}}
    data["coverage"] = {"requests_per_io": 1.0}
    data["campaign"] = {"id": "c", "repetition": 0}
    table = rows(data, "f.json")
    registry = RUN_COLUMNS + DIRECTION_COLUMNS
    named = [c.name for c in registry if c.expand is None]
    for row in table:
        assert [c for c in row if c in named] == named, "every named column, in order"
        families = [c for c in row if c not in named]
        assert all(any(f.matches(c) for f in registry if f.expand) for c in families)
    assert [c for c in table[0] if c not in named] == [
        "server_ctxsw_per_io", "server_cpu_us_per_io", "rw", "bs", "iodepth",
        "transport_depth", "transport_buffers", "transport_zerocopy", "transport_datapath",
        "transport_affinity", "transport_sched", "transport_idle_guard", "transport_cpus",
        "clat_p50_us", "clat_p90_us", "clat_p99_us", "clat_p99.9_us", "clat_min_us",
        "clat_mean_us", "clat_max_us", "lat_p50_us"]
    assert table[0]["transport_depth"] == 16 and table[0]["clat_p99_us"] == 70.0
    assert table[0]["lat_p50_us"] == 40.0 and "lat_p50_us" not in table[1]
    assert table[0]["server_cpu_us_per_io"] == data["derived"]["server_cpu_us_per_io"]
    assert table[1]["direction"] == "write" and table[1]["bw_mib_s"] == 4096000 / (1 << 20)
    metadata = metadata_columns(dict(data, host={"hostname": "h"}))
    assert list(metadata) == [c.name for c in METADATA_COLUMNS]
    assert metadata["hostname"] == "h" and metadata["fio_version"] is None


def test_draft_names_read_as_today(tmp_path: Path) -> None:
    """Names a draft of format 5 wrote and 5 calls otherwise: uring's pin= (CPU affinity,
    now affinity=, pin being memory), the /dev/fuse counters (requests_devfuse: devfuse
    is a transport) and devfuse's follow counter unpins."""
    old = draft(4, "uring:pin=off")
    old["transport_stats"].update({
        "requests_devfuse": 3, "ops_devfuse": {"INIT": 1}, "follow": {"unpins": 2},
        "per_queue": [{"pin_error": None}],
        "placement": {"design": "each queue thread pinned to its CPU (pin=on)"}})
    path = tmp_path / "draft.json"
    path.write_text(json.dumps(old))
    data = read_result(path)
    assert data["transport"]["spec"].startswith("uring:affinity=off")
    assert data["transport"]["settings"]["affinity"] in (False, "off")
    assert "pin" not in data["transport"]["settings"]
    stats = data["transport_stats"]
    assert (stats["requests_device"], stats["ops_device"]) == (3, {"INIT": 1})
    assert "requests_devfuse" not in stats and stats["follow"] == {"releases": 2}
    assert stats["per_queue"] == [{"affinity_error": None}]
    assert stats["placement"]["design"] == "each queue thread on its queue's CPU (affinity=on)"


def test_reading_needs_no_compiled_module(tmp_path: Path) -> None:
    """Results read the same where transports._native cannot load (an analysis-only
    machine, no liburing): the transports' options are known without it."""
    import subprocess
    import sys

    path = tmp_path / "v3.json"
    path.write_text(json.dumps({"format_version": 3, "transport": {
        "name": "devfuse", "spec": "devfuse", "label": "devfuse", "settings": {}},
        "transport_stats": {"settings": {}}}))
    program = ("import sys; sys.modules['transports._native'] = None\n"
               "from harness.results import read_result\n"
               f"print(read_result({str(path)!r})['transport']['spec'])")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == read_result(path)["transport"]["spec"] == (
        "devfuse:datapath=python,follow=off,sched=normal")
