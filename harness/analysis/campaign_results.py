"""A campaign as the analysis sees it: its directory, its tidy table, its manifest and its metadata.

The table comes from `harness.results.load`, completed with the run metadata the
analysis shows (`harness.results.metadata_columns`); both read the one result format.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas

from harness import REPO_DIR
from harness.analysis import where
from harness.results import (
    METADATA_COLUMNS,
    ResultError,
    load,
    metadata_columns,
    read_result,
    upgrade_manifest,
)

RESULTS_DIR = REPO_DIR / "results"


class CampaignError(ValueError):
    """A campaign that cannot be found or holds no usable result."""


def resolve(campaign: str | os.PathLike[str]) -> Path:
    """A directory of result files, or a campaign id looked up under results/."""
    path = Path(campaign)
    if path.is_dir():
        return path
    text = os.fspath(campaign)
    if os.sep not in text:
        for base in (Path("results"), RESULTS_DIR):
            if (base / text).is_dir():
                return base / text
    known = sorted(p.name for p in RESULTS_DIR.iterdir() if p.is_dir()) if RESULTS_DIR.is_dir() \
        else []
    raise CampaignError(
        f"campaign {text!r} not found: give a directory of result files or a campaign id "
        f"under {RESULTS_DIR} (known: {', '.join(known) or 'none'})"
    )


ENV_CAMPAIGN = "RINGSIDE_CAMPAIGN"
DEFAULT_CAMPAIGN = "results/reference"


def from_environment() -> Path:
    """The campaign notebooks read: $RINGSIDE_CAMPAIGN, else results/reference; a
    relative path is taken from the current directory, then from the repository."""
    text = os.environ.get(ENV_CAMPAIGN) or DEFAULT_CAMPAIGN
    path = Path(text)
    if not path.is_absolute() and not path.is_dir() and (REPO_DIR / path).is_dir():
        path = REPO_DIR / path
    return resolve(path)


def _natural(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def natural_key(text: Any) -> list[Any]:
    """Sort key that orders 'iodepth=4' before 'iodepth=16'."""
    return _natural(str(text))


@dataclass
class CampaignResults:
    """A loaded campaign: `runs` is every row, `table` the rows statistics use (no warmup)."""

    path: Path
    runs: pandas.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.manifest.get("id") or self.path.resolve().name)

    @property
    def table(self) -> pandas.DataFrame:
        if "warmup" not in self.runs:
            return self.runs
        return self.runs[~self.runs["warmup"].fillna(False).astype(bool)]

    def raw(self, file: str) -> dict[str, Any]:
        """A run's full result (fio_raw included), read once and kept."""
        cache = self.__dict__.setdefault("_raw", {})
        if file not in cache:
            cache[file] = read_result(file)
        return cache[file]

    def common(self, column: str) -> str:
        """The value of `column` over all runs, or 'A, B' when they differ."""
        if column not in self.runs:
            return "?"
        values = Counter(str(v) for v in self.runs[column].dropna())
        return ", ".join(v for v, _ in values.most_common()) or "?"

    def footer(self) -> str:
        return (f"host {self.common('hostname')} · kernel {self.common('kernel')} · "
                f"{self.common('cpu_count')} CPUs · campaign {self.id}"
                + where.footer_note(self.runs))

    def points(self) -> list[tuple[str, str]]:
        """(point, direction) pairs in natural order."""
        pairs = self.table[["point", "direction"]].drop_duplicates().itertuples(index=False)
        return sorted(((p, d) for p, d in pairs), key=lambda pd: (natural_key(pd[0]), pd[1]))

    def transport_settings(self) -> dict[str, dict[str, Any]]:
        """Each transport's settings as the results recorded them (defaults filled in),
        by label (`-t LABEL=SPEC`, else the spec); a label's spec comes first."""
        t = self.table
        named = ("transport_spec", "transport_label")
        columns = [c for c in t.columns if c.startswith("transport_") and c not in named]
        out: dict[str, dict[str, Any]] = {}
        for label, rows in t.groupby("transport_label", sort=False):
            first = rows.iloc[0]
            out[label] = {c.removeprefix("transport_"): _plain(first[c]) for c in columns
                          if not pandas.isna(first[c])}
            if first["transport_spec"] != label:  # a label: say what it stands for
                out[label] = {"spec": first["transport_spec"], **out[label]}
        return out

    def transports(self) -> list[str]:
        """Transport labels (the spec where none was given), in a stable order."""
        specs = self.table["transport_label"].dropna().unique()
        return sorted(specs, key=natural_key)


def _plain(value: Any) -> Any:
    """A table cell as the result wrote it: pandas turns ints into floats beside NaN."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _manifest(path: Path, runs: pandas.DataFrame) -> dict[str, Any]:
    """The campaign's manifest (harness/campaigns/interleaved.py writes campaign.json), or
    {}, with its specs as the campaign's results read (harness/results/upgrade.py)."""
    try:
        data = json.loads((path / "campaign.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    result_specs = dict(zip(runs["file"].map(lambda f: Path(f).name), runs["transport_spec"],
                            strict=True))
    return upgrade_manifest(data, result_specs)


def load_campaign(campaign: str | os.PathLike[str]) -> CampaignResults:
    """Resolve, load through harness.results.load and complete the table."""
    path = resolve(campaign)
    try:
        runs = load(path)
    except ResultError as e:
        raise CampaignError(str(e)) from None
    if runs.empty:
        raise CampaignError(f"{path} holds no result file")
    result = CampaignResults(path, runs, _manifest(path, runs))
    extra: dict[str, list[Any]] = {c.name: [] for c in METADATA_COLUMNS if c.name not in runs}
    for file in runs["file"] if extra else ():
        meta = metadata_columns(result.raw(file))
        for column, values in extra.items():
            values.append(meta[column])
    for column, values in extra.items():
        runs[column] = values
    result.runs = where.series_by_kernel(runs)
    return result
