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
            "settings": {"depth": 16, "buffers": "mapped"},
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
                      "settings": {"depth": 8, "buffers": "pinned"}},
        "transport_stats": {"settings": {"buffers": "pinned"}, "pinning": "user-space mlock"},
        "checks": [{"name": "ring_share", "ok": True}, {"name": "pinned", "ok": True}],
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    data = read_result(path)
    assert data["format_version"] == FORMAT_VERSION == 5 and data["upgraded_from"] == 1
    spec = "uring:depth=8,buffers=mlock,pin=off,datapath=python,sched=normal"
    assert data["transport"]["spec"] == spec
    assert data["transport"]["settings"]["buffers"] == "mlock"
    assert data["transport_stats"]["settings"]["buffers"] == "mlock"
    assert [c["name"] for c in data["checks"]] == ["ring_share", "mlock"]
    # a version-2 file (before protocol 7.46 modes) meant mlock too
    path.write_text(json.dumps(dict(old, format_version=2)))
    assert read_result(path)["transport"]["spec"] == spec
    # a version-3 file's pinned is the kernel pin and stays pinned
    path.write_text(json.dumps(dict(old, format_version=3)))
    assert read_result(path)["transport"]["spec"] == (
        "uring:depth=8,buffers=pinned,pin=off,datapath=python,sched=normal")


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


@pytest.mark.parametrize(("spec", "want", "settings"), [
    ("uring", "uring:sched=batch", {"sched": "batch"}),
    ("uring:depth=4,sched=idle", "uring:depth=4,sched=idle,idle_guard=off",
     {"idle_guard": "off"}),
    ("uring:sched=normal", "uring:sched=normal", {}),
    ("devfuse:threads=2", "devfuse:threads=2,follow=off,sched=normal",
     {"follow": "off", "sched": "normal"}),
    ("pyfuse3", "pyfuse3", {}),
])
def test_version_4_uring_ran_batch_and_idle_unguarded(tmp_path: Path, spec: str, want: str,
                                                      settings: dict) -> None:
    """Before format 5 uring's default was SCHED_BATCH, SCHED_IDLE had no guard, and
    devfuse's readers ran SCHED_OTHER where the scheduler put them."""
    old = {"format_version": 4,
           "transport": {"name": spec.partition(":")[0], "spec": spec, "label": spec,
                         "settings": {}},
           "transport_stats": {"settings": {}}}
    path = tmp_path / "v4.json"
    path.write_text(json.dumps(old))
    data = read_result(path)
    assert data["transport"]["spec"] == data["transport"]["label"] == want
    assert data["transport_stats"]["settings"] == settings
    assert data["transport"]["settings"] == settings


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
        "transport_depth", "transport_buffers", "clat_p50_us", "clat_p90_us", "clat_p99_us",
        "clat_p99.9_us", "clat_min_us", "clat_mean_us", "clat_max_us", "lat_p50_us"]
    assert table[0]["transport_depth"] == 16 and table[0]["clat_p99_us"] == 70.0
    assert table[0]["lat_p50_us"] == 40.0 and "lat_p50_us" not in table[1]
    assert table[0]["server_cpu_us_per_io"] == data["derived"]["server_cpu_us_per_io"]
    assert table[1]["direction"] == "write" and table[1]["bw_mib_s"] == 4096000 / (1 << 20)
    metadata = metadata_columns(dict(data, host={"hostname": "h"}))
    assert list(metadata) == [c.name for c in METADATA_COLUMNS]
    assert metadata["hostname"] == "h" and metadata["fio_version"] is None
