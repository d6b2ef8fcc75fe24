"""`ringside` command line: one subcommand per module in harness.commands."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines register(subparsers), which adds its parser with func=handler.
COMMANDS = (
    "serve", "run", "doctor", "compare", "plot", "report", "campaign", "bench", "table",
    "kernel", "guest", "peers",
)
ALIASES = {"export": "table"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that subcommand's module is imported.

    Analysis commands pull in pandas and matplotlib (seconds of imports): a server
    started by the runner for every run must not pay for them.
    """
    parser = argparse.ArgumentParser(
        prog="ringside",
        description="Serve one disk image through interchangeable FUSE transports and "
        "compare them with fio.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        if only is not None and name != only:
            continue
        importlib.import_module(f"harness.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    command = ALIASES.get(command, command)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("ringside: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
