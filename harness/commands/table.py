"""`ringside table CAMPAIGN` (formerly `export`): a campaign's tidy table as CSV or Parquet."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("csv", "parquet")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "table",
        aliases=["export"],  # its first name; "export" is the served image
        help="write a campaign's tidy table (one row per run x direction) as CSV or Parquet",
        description="Load every result of CAMPAIGN with harness.results.load and write the "
        "table: one row per run and direction, scenario parameters and transport settings "
        "as columns, warmup runs included and flagged.",
    )
    p.add_argument(
        "campaign",
        metavar="CAMPAIGN",
        help="directory of result files, or a campaign id under results/",
    )
    p.add_argument(
        "--format",
        "-f",
        choices=FORMATS,
        default="csv",
        help="output format (default: %(default)s)",
    )
    p.add_argument(
        "--output",
        "-o",
        type=Path,
        metavar="FILE",
        help="output file (default: CAMPAIGN/runs.FORMAT; '-' for CSV on stdout)",
    )
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from harness.analysis.campaign_results import CampaignError, resolve
    from harness.results import ResultError, load

    try:
        directory = resolve(args.campaign)
        table = load(directory)
    except (CampaignError, ResultError) as e:
        print(f"ringside export: {e}", file=sys.stderr)
        return 2
    if table.empty:
        print(f"ringside export: {directory} holds no result files", file=sys.stderr)
        return 2
    if str(args.output) == "-":
        if args.format != "csv":
            print("ringside export: only CSV can go to stdout", file=sys.stderr)
            return 2
        table.to_csv(sys.stdout, index=False)
        return 0
    output = args.output or directory / f"runs.{args.format}"
    if args.format == "csv":
        table.to_csv(output, index=False)
    else:
        try:
            table.to_parquet(output, index=False)
        except ImportError as e:
            print(
                f"ringside export: Parquet needs pyarrow ({e}): run `make setup`", file=sys.stderr
            )
            return 1
    print(output)
    return 0
