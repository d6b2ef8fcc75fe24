"""A run's document: built, written and read (files, names, the supported versions).

`run_result` builds a document, `write_result` writes it atomically, `read_result` reads
one of any supported version and upgrades it to the current one (upgrade.py). A result
keeps fio's JSON verbatim under "fio_raw" beside the parsed "summary", so a later
analysis can recompute anything from the raw numbers. harness/results/FORMAT.md says
what each section holds.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.results.upgrade import FORMAT_VERSION, SUPPORTED_VERSIONS, upgrade


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


# The sections of a run's document, in the order written (FORMAT.md says what
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
    """One result file, upgraded to the current format (ResultError if it cannot be)."""
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


def result_files(path: str | os.PathLike[str]) -> list[Path]:
    """A result file itself, or every *.json result below a directory (sorted)."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*.json") if not p.name.startswith("."))
    if not path.exists():
        raise ResultError(f"no result file or directory {path}")
    return [path]


