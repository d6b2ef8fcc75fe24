"""`python -m harness.results [--write]`: FORMAT.md's column tables, as the registry
(columns.py) renders them; --write puts them into FORMAT.md."""

from __future__ import annotations

import argparse
import sys

from harness.results.columns import BEGIN, END, FORMAT_DOCUMENT, documented, markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.results",
                                     description="FORMAT.md's column tables")
    parser.add_argument("--write", action="store_true",
                        help="rewrite them in FORMAT.md (default: print them)")
    args = parser.parse_args(argv)
    if not args.write:
        print(markdown())
        return 0
    text = FORMAT_DOCUMENT.read_text()
    old = documented(text)
    if not old:
        print(f"{FORMAT_DOCUMENT} has no column tables between {BEGIN!r} and {END!r}",
              file=sys.stderr)
        return 1
    FORMAT_DOCUMENT.write_text(text.replace(old, markdown()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
