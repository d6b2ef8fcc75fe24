"""Scenario files: validation errors name file, key and expectation; sweeps expand."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.scenarios import (
    SCENARIO_DIR,
    ScenarioError,
    load_scenario,
    parse_scenario,
)


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


BASE = 'name = "t"\ndescription = "test"\n[fio]\nrw = "randread"\nbs = "4k"\n'


def test_shipped_baseline_is_the_issue_scenario() -> None:
    s = load_scenario(SCENARIO_DIR / "randread-4k-qd1.toml")
    (point,) = s.points()
    assert point.fio["rw"] == "randread"
    assert point.fio["bs"] == "4k"
    assert point.fio["iodepth"] == 1
    assert point.fio["ioengine"] == "psync"
    assert point.fio["direct"] == 1
    assert point.fio["runtime"] == 10
    assert point.fio["time_based"] == 1
    assert point.label == "randread-4k-qd1"
    assert point.fio["cpus_allowed"] == "0"


def test_floating_qd1_differs_from_the_baseline_only_in_client_placement() -> None:
    (pinned,) = load_scenario("randread-4k-qd1").points()
    (floating,) = load_scenario("randread-4k-qd1-floating").points()
    assert "cpus_allowed" not in floating.fio
    assert {k: v for k, v in pinned.fio.items() if k != "cpus_allowed"} == floating.fio


@pytest.mark.parametrize("path", sorted(SCENARIO_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_loads(path: Path) -> None:
    s = load_scenario(path)
    assert s.name == path.stem, "a scenario's name should match its file name"
    assert s.points()


def test_lookup_by_bare_name() -> None:
    assert load_scenario("randread-4k-qd1").name == "randread-4k-qd1"


def test_missing_scenario_names_it_and_the_directory() -> None:
    with pytest.raises(ScenarioError, match=r"'no-such-scenario' not found.*randread-4k-qd1"):
        load_scenario("no-such-scenario")


def test_missing_required_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "t"\n[fio]\nbs = "4k"\n')
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    assert str(path) in str(e.value) and "'rw'" in str(e.value)


def test_missing_fio_table(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "t"\n')
    with pytest.raises(ScenarioError, match=r"missing \[fio\] table"):
        load_scenario(path)


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + 'iodepth = "four"\n')
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    msg = str(e.value)
    assert str(path) in msg and "iodepth" in msg and "positive integer" in msg


@pytest.mark.parametrize(
    "line, expected",
    [
        ('rw = "randomread"', "one of read, write, randread"),
        ('ioengine = "spdk"', "one of psync"),
        ('bs = "4q"', "a size such as 4k"),
        ("bs = 0", "a size such as 4k"),
        ("direct = 2", "true or false"),
        ("runtime = 0", "whole number of seconds"),
        ("rwmixread = 101", "percentage from 0 to 100"),
        ("numjobs = true", "positive integer"),
    ],
)
def test_bad_fio_values(tmp_path: Path, line: str, expected: str) -> None:
    key = line.split()[0]
    doc = BASE.replace(f'{key} = "randread"\n', "").replace(f'{key} = "4k"\n', "")
    path = write(tmp_path, doc + line + "\n")
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    msg = str(e.value)
    assert str(path) in msg and key in msg and expected in msg


def test_unknown_fio_key_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "iodpeth = 4\n")
    with pytest.raises(ScenarioError, match=r"unknown key 'iodpeth' \(did you mean 'iodepth'\?\)"):
        load_scenario(path)


def test_runner_owned_option_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + 'filename = "/dev/sda"\n')
    with pytest.raises(ScenarioError, match="unknown key 'filename'"):
        load_scenario(path)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'nmae = "x"\n' + BASE)
    with pytest.raises(ScenarioError, match="did you mean 'name'"):
        load_scenario(path)


def test_bad_name(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace('name = "t"', 'name = "a b/c"'))
    with pytest.raises(ScenarioError, match="name = 'a b/c' is invalid"):
        load_scenario(path)


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "name = \n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(path)


def test_sweep_cross_product() -> None:
    s = parse_scenario(
        {
            "name": "sw",
            "fio": {"rw": "randread", "runtime": 5},
            "sweep": {"bs": ["4k", "64k"], "iodepth": [1, 4, 16]},
        },
        "sw.toml",
    )
    points = s.points()
    assert len(points) == 6
    assert [(p.fio["bs"], p.fio["iodepth"]) for p in points] == [
        ("4k", 1),
        ("4k", 4),
        ("4k", 16),
        ("64k", 1),
        ("64k", 4),
        ("64k", 16),
    ]
    assert all(p.fio["runtime"] == 5 and p.fio["rw"] == "randread" for p in points)
    assert points[1].sweep == {"bs": "4k", "iodepth": 4}
    assert points[1].label == "sw@bs=4k,iodepth=4"
    assert len({p.slug for p in points}) == 6
    assert "/" not in points[1].slug and "=" not in points[1].slug


def test_sweep_values_are_validated(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace('bs = "4k"\n', "") + '[sweep]\nbs = ["4k", -1]\n')
    with pytest.raises(ScenarioError, match=r"\[sweep\]: bs = -1 is invalid"):
        load_scenario(path)


@pytest.mark.parametrize(
    "sweep, expected",
    [
        ("bs = []", "non-empty list"),
        ('bs = "4k"', "non-empty list"),
        ("iodepth = [1, 1]", "lists a value twice"),
        ("size = [1, 2]", "unknown key 'size'"),
        ('rw = ["read"]', "set in both [fio] and [sweep]"),
    ],
)
def test_bad_sweeps(tmp_path: Path, sweep: str, expected: str) -> None:
    doc = BASE.replace('bs = "4k"\n', "") if sweep.startswith("bs") else BASE
    path = write(tmp_path, doc + "[sweep]\n" + sweep + "\n")
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    assert expected in str(e.value) and str(path) in str(e.value)


def test_overrides_apply_to_every_point_and_are_validated() -> None:
    s = parse_scenario(
        {"name": "o", "fio": {"rw": "read", "bs": "4k"}, "sweep": {"iodepth": [1, 8]}}, "o.toml"
    )
    points = s.points({"runtime": 2})
    assert [p.fio["runtime"] for p in points] == [2, 2]
    # Overriding a swept axis collapses the sweep to that one value.
    (only,) = s.points({"iodepth": 32})
    assert only.fio["iodepth"] == 32 and only.sweep == {}
    with pytest.raises(ScenarioError, match="override: runtime = 0 is invalid"):
        s.points({"runtime": 0})


def test_defaults_are_explicit() -> None:
    (p,) = parse_scenario({"name": "d", "fio": {"rw": "read", "bs": "1m"}}, "d.toml").points()
    assert p.fio == {
        "rw": "read",
        "bs": "1m",
        "iodepth": 1,
        "ioengine": "psync",
        "direct": 1,
        "runtime": 10,
        "time_based": 1,
        "numjobs": 1,
    }
