"""What every fetch from Debian's archive takes (`kernel fetch`, `peers fetch`)."""

from __future__ import annotations

import argparse


def add_fetch_options(p: argparse.ArgumentParser, cached: str) -> None:
    """`--if-missing` (do nothing when `cached` already cached) and `--mirror URL`."""
    p.add_argument("--if-missing", action="store_true",
                   help=f"do nothing when {cached} already cached (for make and CI)")
    p.add_argument("--mirror", metavar="URL",
                   help="Debian archive to fetch from (default: the Debian mirror of the "
                   "machine's apt sources)")
