"""`ringside bench`: the main job. A suite on every available transport, then the report.

It chains the other commands (campaign, report with its figures, compare) so that what
`make bench` shows is exactly what a user gets from running them one by one.
"""

from __future__ import annotations

import argparse
import sys

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
    from harness.cli import main

    args.targets = [args.suite]
    try:
        campaign = campaign_cmd.build(args)
    except Exception as e:  # the same messages and codes as `ringside campaign`
        return campaign_cmd.run_campaign_error(e)
    code = campaign_cmd.execute(campaign, progress=not args.no_progress)
    if code == 130:
        return code
    baseline = ["--baseline", args.baseline] if args.baseline else []
    directory = str(campaign.directory)
    report_code = main(["report", directory, *baseline])
    print()
    compare_code = main(["compare", directory, *baseline])
    print(f"\nreport: {campaign.directory / 'report.md'}", file=sys.stdout)
    return code or report_code or compare_code
