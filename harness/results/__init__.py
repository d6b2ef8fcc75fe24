"""The result format: one JSON document per run, and a tidy table over many of them.

This package owns the format (FORMAT.md here describes it):
- document.py: `run_result` builds a document, `write_result` writes it, `read_result`
  reads one of any supported version;
- upgrade.py: older documents read as the current format;
- table.py: `rows`/`load` turn documents into the tidy table.
Read results through these, never by hand.
"""

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
from harness.results.table import (
    METADATA_COLUMNS,
    NO_SERVER,
    SERVING_CPU_SHARE,
    UNKNOWN,
    load,
    metadata_columns,
    placement_columns,
    rows,
)
from harness.results.upgrade import (
    FORMAT_VERSION,
    SUPPORTED_VERSIONS,
    upgrade,
    upgrade_spec_text,
)

__all__ = [
    "FORMAT_VERSION", "METADATA_COLUMNS", "NO_SERVER", "OPTIONAL_RUN_SECTIONS",
    "RUN_SECTIONS", "SERVING_CPU_SHARE", "SUPPORTED_VERSIONS", "UNKNOWN", "NotAResult",
    "ResultError", "glob_escape", "load", "metadata_columns", "placement_columns",
    "read_result", "result_files", "result_stem", "rows", "run_result", "unique_stem",
    "upgrade", "upgrade_spec_text", "write_result",
]
