"""`ringside compare CAMPAIGN`: every transport against a baseline, per scenario point."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.analysis.campaign_results import CampaignError, load_campaign
from harness.analysis.compare import CompareError, compare
from harness.analysis.tables import FORMATS, render


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare transports over a campaign: throughput, latency, cost per I/O, ratios",
        description="Per scenario point, every transport against the baseline: median "
        "IOPS or bandwidth, p50 and p99 latency, server context switches and CPU per I/O, "
        "and the throughput ratio to the baseline with a 95%% confidence interval over "
        "the repetitions (warmup runs excluded), or 'not significant'.",
    )
    p.add_argument("campaign", metavar="CAMPAIGN",
                   help="directory of result files, or a campaign id under results/")
    p.add_argument("--baseline", metavar="SPEC",
                   help="transport spec (or transport name) to compare against "
                   "(default: pyfuse3 when present, else the first transport)")
    p.add_argument("--format", "-f", choices=FORMATS, default="terminal",
                   help="terminal table, markdown, CSV, or plain text at most 72 columns "
                   "wide for email (default: %(default)s)")
    p.add_argument("--output", "-o", type=Path, metavar="FILE",
                   help="write to FILE instead of standard output")
    p.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    try:
        campaign = load_campaign(args.campaign)
        comparison = compare(campaign, args.baseline)
    except (CampaignError, CompareError) as e:
        print(f"ringside compare: {e}", file=sys.stderr)
        return 2
    text = render(comparison, args.format)
    if args.format == "csv":
        # CSV has no place for prose; the warnings still must be seen.
        for warning in comparison.warnings + comparison.cautions:
            print(f"ringside compare: warning: {warning}", file=sys.stderr)
    if args.output:
        args.output.write_text(text)
        print(f"ringside compare: wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
