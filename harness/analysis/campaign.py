"""A campaign as the analysis sees it: its directory, its tidy table and its metadata.

The table comes from `harness.results.load`. Columns the analysis needs that the loader
does not (yet) provide are added here from each raw result; when the loader grows a
column of the same name, its value wins.
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

from harness.results import ResultError, load, read_result, upgrade_spec_text

REPO_DIR = Path(__file__).resolve().parent.parent.parent
RESULTS_DIR = REPO_DIR / "results"


class CampaignError(ValueError):
    """A campaign that cannot be found or holds no usable result."""


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _warmup(data: dict[str, Any]) -> bool:
    for value in (_get(data, "warmup"), _get(data, "campaign", "warmup"),
                  _get(data, "repetition", "warmup")):
        if value is not None:
            return bool(value)
    return False


# Column -> how to read it from a raw result, for columns the loader may not provide.
EXTRA_COLUMNS = {
    "hostname": lambda d: _get(d, "host", "hostname"),
    "cpu_model": lambda d: _get(d, "host", "cpu_model"),
    "fuse_enable_uring": lambda d: _get(d, "host", "fuse_enable_uring"),
    "cache": lambda d: _get(d, "export", "cache"),
    "read_only": lambda d: _get(d, "export", "read_only"),
    "fio_version": lambda d: _get(d, "versions", "fio"),
    "libfuse_version": lambda d: _get(d, "versions", "libfuse"),
    "liburing_version": lambda d: _get(d, "versions", "liburing"),
    "python_version": lambda d: _get(d, "versions", "python"),
    "campaign": lambda d: _get(d, "campaign", "id") if isinstance(d.get("campaign"), dict)
    else d.get("campaign"),
    "repetition": lambda d: _get(d, "campaign", "repetition") if isinstance(
        d.get("campaign"), dict) else d.get("repetition"),
    "warmup": _warmup,
}


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
class Campaign:
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
                f"{self.common('cpu_count')} CPUs · campaign {self.id}")

    def points(self) -> list[tuple[str, str]]:
        """(point, direction) pairs in natural order."""
        pairs = self.table[["point", "direction"]].drop_duplicates().itertuples(index=False)
        return sorted(((p, d) for p, d in pairs), key=lambda pd: (natural_key(pd[0]), pd[1]))

    def transport_settings(self) -> dict[str, dict[str, Any]]:
        """Each spec's settings as the results recorded them (defaults filled in)."""
        t = self.table
        columns = [c for c in t.columns if c.startswith("transport_") and c != "transport_spec"]
        out: dict[str, dict[str, Any]] = {}
        for spec, rows in t.groupby("transport_spec", sort=False):
            first = rows.iloc[0]
            out[spec] = {c.removeprefix("transport_"): _plain(first[c]) for c in columns
                         if not pandas.isna(first[c])}
        return out

    def transports(self) -> list[str]:
        """Transport specs, in a stable order: by name, then spec."""
        specs = self.table["transport_spec"].dropna().unique()
        return sorted(specs, key=natural_key)


def _plain(value: Any) -> Any:
    """A table cell as the result wrote it: pandas turns ints into floats beside NaN."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _manifest(path: Path) -> dict[str, Any]:
    for name in ("campaign.json", "manifest.json"):
        file = path / name
        if file.is_file():
            try:
                data = json.loads(file.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict):
                manifest = data.get("campaign", data) if isinstance(data.get("campaign"), dict) \
                    else data
                return _upgrade_manifest(manifest)
    return {}


def _upgrade_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """Manifests before format 2 said buffers=pinned for what is now buffers=mlock."""
    if int(manifest.get("campaign_format") or 1) < 2:
        specs = manifest.get("transports")
        if isinstance(specs, list):
            manifest["transports"] = [
                upgrade_spec_text(s) if isinstance(s, str) else s for s in specs
            ]
        for run in manifest.get("runs") or ():
            if isinstance(run, dict) and isinstance(run.get("transport"), str):
                run["transport"] = upgrade_spec_text(run["transport"])
    return manifest


def load_campaign(campaign: str | os.PathLike[str]) -> Campaign:
    """Resolve, load through harness.results.load and complete the table."""
    path = resolve(campaign)
    try:
        runs = load(path)
    except ResultError as e:
        raise CampaignError(str(e)) from None
    if runs.empty:
        raise CampaignError(f"{path} holds no result file")
    result = Campaign(path, runs, _manifest(path))
    missing = [c for c in EXTRA_COLUMNS if c not in runs]
    if missing:
        extra: dict[str, list[Any]] = {c: [] for c in missing}
        for file in runs["file"]:
            data = result.raw(file)
            for column in missing:
                extra[column].append(EXTRA_COLUMNS[column](data))
        for column, values in extra.items():
            runs[column] = values
    return result
