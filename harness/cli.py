"""`ringside` command line: one subcommand per module in harness.commands."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines register(subparsers), which adds its parser with func=handler.
COMMANDS = ("serve", "run", "doctor", "compare", "plot", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringside",
        description="Serve one disk image through interchangeable FUSE transports and "
        "compare them with fio.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"harness.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("ringside: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
