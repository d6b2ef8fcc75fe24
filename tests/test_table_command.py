"""`ringside table` (alias `export`): the loader's tidy table written as CSV or Parquet."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO
from harness.results import load

REFERENCE = REPO / "results" / "reference"


def ringside(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("fmt, read", [("csv", pd.read_csv), ("parquet", pd.read_parquet)])
def test_table_round_trips_the_loader_table(tmp_path, fmt, read):
    out = tmp_path / f"runs.{fmt}"
    proc = ringside("table", str(REFERENCE), "--format", fmt, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    table = read(out)
    expected = load(REFERENCE)
    assert table.shape == expected.shape
    assert list(table.columns) == list(expected.columns)
    assert table["iops"].sum() == pytest.approx(expected["iops"].sum())
    assert table["warmup"].sum() == expected["warmup"].sum() > 0


def test_table_of_a_missing_campaign_names_it(tmp_path):
    proc = ringside("export", str(tmp_path / "nowhere"))  # the command's former name
    assert proc.returncode == 2
    assert "not found" in proc.stderr
