"""`ringside plot CAMPAIGN`: PNG and SVG figures in results/<campaign>/plots/."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from harness.analysis.campaign_results import CampaignError, load_campaign
from harness.analysis.compare import CompareError
from harness.analysis.plots import FORMATS, PLOTS, render


def register(sub: argparse._SubParsersAction) -> None:
    names = "\n".join(f"  {p.name:<20} {p.description}" for p in PLOTS.values())
    p = sub.add_parser(
        "plot",
        help="draw the campaign's figures (PNG and SVG) into CAMPAIGN/plots/",
        description=textwrap.fill(
            "Draw figures from a campaign's results into CAMPAIGN/plots (PNG and SVG), "
            "each with units, a legend, and host, kernel and campaign in its footer. A "
            "plot that does not apply (no sweep, no pinned/mapped pair) is skipped and "
            "says why.", 79) + "\n\nPlots:\n" + names,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("campaign", metavar="CAMPAIGN",
                   help="directory of result files, or a campaign id under results/")
    p.add_argument("--plot", "-p", action="append", choices=list(PLOTS), metavar="NAME",
                   help="draw only this plot (repeatable; default: all); see the list above")
    p.add_argument("--baseline", metavar="SPEC",
                   help="transport the ratio plots compare against (default: pyfuse3)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="directory for the figures (default: CAMPAIGN/plots)")
    p.add_argument("--format", action="append", choices=FORMATS, dest="formats",
                   help="file format (repeatable; default: png and svg)")
    p.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    try:
        campaign = load_campaign(args.campaign)
        drawn = render(campaign, args.plot, args.out, tuple(args.formats or FORMATS),
                       args.baseline)
    except (CampaignError, CompareError) as e:
        print(f"ringside plot: {e}", file=sys.stderr)
        return 2
    for item in drawn:
        if item.skipped:
            print(f"{item.name:<20} skipped: {item.skipped}")
        else:
            print(f"{item.name:<20} {' '.join(str(f) for f in item.files)}")
    return 0 if any(item.files for item in drawn) else 1
