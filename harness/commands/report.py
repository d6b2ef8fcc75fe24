"""`ringside report CAMPAIGN`: one page with the tables, the figures and the metadata."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.analysis.campaign_results import CampaignError, load_campaign
from harness.analysis.compare import CompareError
from harness.analysis.report import FORMATS, write_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write one shareable page (Markdown or HTML) with tables, figures and metadata",
        description="Draw the campaign's figures into CAMPAIGN/plots and write a report: "
        "the setup (host, kernel, versions, commit), any warning, the comparison table, "
        "the figures, the scenario points and how the numbers are measured. Markdown "
        "refers to the figures beside it; HTML embeds them and stands alone.",
    )
    p.add_argument("campaign", metavar="CAMPAIGN",
                   help="directory of result files, or a campaign id under results/")
    p.add_argument("--format", "-f", choices=FORMATS, default="markdown",
                   help="report format (default: %(default)s)")
    p.add_argument("--baseline", metavar="SPEC",
                   help="transport to compare against (default: pyfuse3 when present)")
    p.add_argument("--output", "-o", type=Path, metavar="FILE",
                   help="report path (default: CAMPAIGN/report.md or CAMPAIGN/report.html)")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    try:
        campaign = load_campaign(args.campaign)
        path = write_report(campaign, args.format, args.output, args.baseline)
    except (CampaignError, CompareError) as e:
        print(f"ringside report: {e}", file=sys.stderr)
        return 2
    print(f"ringside report: {path}")
    return 0
