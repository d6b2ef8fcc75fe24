"""The tidy table of many results: `load` reads result files into the rows
columns.py makes of each."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from harness.results.columns import rows
from harness.results.document import NotAResult, ResultError, read_result, result_files

if TYPE_CHECKING:
    import pandas


def load(path: str | os.PathLike[str]) -> pandas.DataFrame:
    """A tidy DataFrame: one row per run x direction, from a result file or a directory."""
    import pandas

    table = []
    many = Path(path).is_dir()
    for file in result_files(path):
        try:
            data = read_result(file)
        except ResultError as e:
            # Other JSON may sit beside results in a directory (e.g. campaign notes);
            # only a file that claims a format version it cannot honour is an error.
            if many and isinstance(e, NotAResult):
                continue
            raise
        table += rows(data, str(file))
    return pandas.DataFrame(table)
