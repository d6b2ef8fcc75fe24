"""The result format: one JSON document per run, and a tidy table over many of them.

This package owns the format (FORMAT.md here describes it):
- document.py: `run_result` builds a document, `write_result` writes it, `read_result`
  reads one of any supported version;
- upgrade.py: older results and campaign manifests read as the current format;
- columns.py: the tidy table's columns, one registry that `rows` follows and FORMAT.md
  lists;
- table.py: `load` reads many results into the tidy table.
Read results through these, never by hand.
"""

from harness.results.columns import (
    DIRECTION_COLUMNS,
    METADATA_COLUMNS,
    NO_SERVER,
    RUN_COLUMNS,
    SERVING_CPU_SHARE,
    UNKNOWN,
    Column,
    metadata_columns,
    placement_columns,
    rows,
)
from harness.results.document import (
    OPTIONAL_RUN_SECTIONS,
    RUN_SECTIONS,
    NotAResult,
    ResultError,
    glob_escape,
    read_result,
    result_files,
    result_stem,
    run_result,
    unique_stem,
    write_result,
)
from harness.results.table import load
from harness.results.upgrade import (
    FORMAT_VERSION,
    MANIFEST_FORMAT,
    SUPPORTED_VERSIONS,
    settings_to_write,
    upgrade,
    upgrade_manifest,
)

__all__ = [
    "DIRECTION_COLUMNS", "FORMAT_VERSION", "MANIFEST_FORMAT", "METADATA_COLUMNS", "NO_SERVER",
    "OPTIONAL_RUN_SECTIONS", "RUN_COLUMNS", "RUN_SECTIONS", "SERVING_CPU_SHARE",
    "SUPPORTED_VERSIONS", "UNKNOWN", "Column", "NotAResult", "ResultError", "glob_escape",
    "load", "metadata_columns", "placement_columns", "read_result", "result_files",
    "result_stem", "rows", "run_result", "settings_to_write", "unique_stem", "upgrade",
    "upgrade_manifest", "write_result",
]
