"""`ringside bench`: the main job. A suite on every available transport, then the report.

It runs the campaign as `ringside campaign` does and then the analysis `ringside report` and
`ringside compare` use, so that what `make bench` shows is exactly what a user gets from
running them one by one.
"""

from __future__ import annotations

import argparse
import sys

from harness.analysis.campaign_results import CampaignError, load_campaign
from harness.analysis.compare import CompareError, compare
from harness.analysis.report import write_report
from harness.analysis.tables import render
from harness.commands import campaign as campaign_cmd


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="run a suite (default: quick) on every available transport, then plot, "
        "report and print the comparison",
        description="Run the suite as `ringside campaign` would, then draw the figures, "
        "write the report and print the comparison table with the report's path.",
    )
    p.add_argument("--suite", default="quick", help="suite to run (default: %(default)s)")
    campaign_cmd.add_campaign_arguments(p, with_targets=False)
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    args.targets = [args.suite]
    try:
        campaign = campaign_cmd.build(args)
    except Exception as e:  # the same messages and codes as `ringside campaign`
        return campaign_cmd.run_campaign_error(e)
    code = campaign_cmd.execute(campaign, progress=not args.no_progress)
    if code == 130:
        return code
    try:
        loaded = load_campaign(str(campaign.directory))
        report = write_report(loaded, "markdown", None, args.baseline)
        print(f"ringside report: {report}")
        print()
        sys.stdout.write(render(compare(loaded, args.baseline), "terminal"))
    except (CampaignError, CompareError) as e:
        print(f"ringside bench: {e}", file=sys.stderr)
        return code or 2
    print(f"\nreport: {report}", file=sys.stdout)
    return code
