"""A 50-run campaign in this process: the harness must not grow fds, threads or memory.

The campaign (harness.campaigns.interleaved.Campaign, as `ringside campaign` runs it) alternates two
transports on one mountpoint, 1 s of fio each. The harness process is sampled after
every run: open fds, threads and RSS after run 50 are compared with run 5, when imports,
caches and pools have settled. A leak of one fd or thread per run would show as 45; a
result kept in memory per run as megabytes.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import fuse_usable, require
from harness.campaigns.interleaved import Campaign, PlannedRun, plan
from harness.point.runner import RunOptions
from harness.scenarios import load_scenario
from transports.base import parse_spec
from transports.export.spec import ExportSpec
from transports.fuse import mounting

pytestmark = pytest.mark.mount

RUNS = 50
SETTLED_AFTER = 5
TRANSPORTS = ["devfuse", "uring"]
RSS_MARGIN_KIB = 4 << 10  # 45 runs grow it by ~0.3 MiB; one result kept per run is more


@dataclass
class Sample:
    run: int
    fds: int
    threads: int
    os_threads: int
    rss_kib: int
    children: int
    mounted: bool


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _children() -> int:
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                count += len(f.read().split())
        except OSError:
            continue
    return count


class SampledCampaign(Campaign):
    """The real campaign, sampling the harness process after each run."""

    samples: list[Sample]

    def _run_one(self, run: PlannedRun) -> Path:
        try:
            return super()._run_one(run)
        finally:
            self.samples.append(Sample(
                run=run.index + 1,
                fds=len(os.listdir("/proc/self/fd")),
                threads=threading.active_count(),
                os_threads=_status("Threads"),
                rss_kib=_status("VmRSS"),
                children=_children(),
                mounted=mounting.find_mount(self.options.mountpoint) is not None,
            ))


def test_fifty_runs_leak_nothing(tmp_path):
    require(fuse_usable())
    scenario = load_scenario("randread-4k-qd1")
    specs = [parse_spec(t) for t in TRANSPORTS]
    for spec in specs:
        spec.create().check_available()
    runs = plan([scenario], specs, reps=RUNS // len(specs), warmup=0, overrides={"runtime": 1})
    assert len(runs) == RUNS
    directory = tmp_path / "leaks"
    options = RunOptions(transport=specs[0], out=directory,
                         export=ExportSpec(backing="memory:64M", fill="data"),
                         mountpoint=str(tmp_path / "disk.img"))
    campaign = SampledCampaign("leaks", directory, runs, RUNS // len(specs), 0, "leaks",
                               options)
    campaign.samples = []
    manifest = campaign.execute(progress=False)

    statuses = [r["status"] for r in manifest["runs"]]
    assert statuses == ["done"] * RUNS, [r.get("error") for r in manifest["runs"]]
    samples = campaign.samples
    assert [s.run for s in samples] == list(range(1, RUNS + 1))
    settled, last = samples[SETTLED_AFTER - 1], samples[-1]
    table = "\n".join(
        f"run {s.run:2}: fds {s.fds} threads {s.threads}/{s.os_threads} "
        f"rss {s.rss_kib} KiB children {s.children}" for s in samples
    )
    print(table)
    assert last.fds <= settled.fds, table
    assert last.threads <= settled.threads and last.os_threads <= settled.os_threads, table
    assert last.rss_kib - settled.rss_kib < RSS_MARGIN_KIB, table
    # Nothing outlives its run: no server or fio child, no mount between runs.
    assert all(s.children == 0 for s in samples), table
    assert not any(s.mounted for s in samples), table
    assert len(list(directory.glob("*.json"))) == RUNS + 1  # results and the manifest
