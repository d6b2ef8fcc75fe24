"""What to serve and how: the export's options in one object, from command line to result.

`ExportSpec` is to the export what `TransportSpec` is to a transport: the measuring
commands and `serve` parse it from the same arguments (`add_arguments`, `from_args`),
the runner hands it to its `serve` child as argv (`argv`), and results record it
(`describe`). `backing_spec()` and `options()` give what transports.export.image.Export takes.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from transports.export.backing import FILL_CHOICES, BackingSpec, parse_backing, parse_size
from transports.export.image import ExportOptions

CACHE_CHOICES = ("pagecache", "direct")


@dataclass(frozen=True)
class ExportSpec:
    backing: str = "memory:1G"  # file:PATH or memory:SIZE
    size: str | None = None  # the size of a new image file (--size)
    fill: str = "none"  # what a backing created here holds: "data" or "none" (sparse)
    read_only: bool = False
    growable: bool = False
    cache: str = "pagecache"  # for opens without O_DIRECT: "pagecache" or "direct"
    attr_timeout: float = 1.0  # seconds the client may cache the file's attributes

    def __post_init__(self) -> None:
        if self.fill not in FILL_CHOICES:
            raise ValueError(f"fill must be one of {', '.join(FILL_CHOICES)}, not {self.fill!r}")
        if self.cache not in CACHE_CHOICES:
            raise ValueError(f"cache must be 'pagecache' or 'direct', not {self.cache!r}")
        if self.attr_timeout < 0:
            raise ValueError(f"--attr-timeout {self.attr_timeout}: must be >= 0")

    # -- command line ---------------------------------------------------------------------
    @staticmethod
    def add_arguments(
        parser: argparse.ArgumentParser, fill: str = "none", suite_backing: bool = False
    ) -> None:
        """The arguments of every command that serves the export; `fill` is its default.
        With `suite_backing`, --backing defaults to None: the caller takes its suite's
        backing when the suite names one, else ExportSpec's."""
        default_text = (
            f"the suite's backing, else {ExportSpec.backing}" if suite_backing else "%(default)s"
        )
        parser.add_argument(
            "--backing",
            default=None if suite_backing else ExportSpec.backing,
            help="file:PATH (raw image, created sparse with --size if missing) or "
            f"memory:SIZE (default: {default_text})",
        )
        parser.add_argument("--size", help="size of a new image file, e.g. 1G")
        parser.add_argument(
            "--fill",
            choices=FILL_CHOICES,
            default=fill,
            help="what a backing created here holds (a memory backing, a new image file): "
            "data (written full of pseudo-random bytes, so reads copy real memory) or none "
            "(sparse: reads of holes only copy the zero page); an existing image is never "
            "written (default: %(default)s)",
        )
        parser.add_argument("--read-only", action="store_true", help="refuse writes (EROFS)")
        parser.add_argument(
            "--growable", action="store_true", help="writes past the end extend the image"
        )
        parser.add_argument(
            "--cache",
            choices=CACHE_CHOICES,
            default=ExportSpec.cache,
            help="for opens without O_DIRECT: use the client's page cache, or bypass it "
            "(O_DIRECT opens always bypass it) (default: %(default)s)",
        )
        parser.add_argument(
            "--attr-timeout",
            type=float,
            default=ExportSpec.attr_timeout,
            help="seconds the client may cache the file's attributes; 0 sends every stat "
            "to the server (default: %(default)s)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExportSpec:
        """From the arguments add_arguments declared; ValueError names a bad one."""
        return cls(
            backing=args.backing,
            size=args.size,
            fill=args.fill,
            read_only=args.read_only,
            growable=args.growable,
            cache=args.cache,
            attr_timeout=args.attr_timeout,
        )

    def argv(self) -> list[str]:
        """The arguments from_args reads back into this spec (defaults left out)."""
        out = ["--backing", self.backing, "--fill", self.fill]
        if self.size is not None:
            out += ["--size", self.size]
        if self.read_only:
            out.append("--read-only")
        if self.growable:
            out.append("--growable")
        if self.cache != ExportSpec.cache:
            out += ["--cache", self.cache]
        if self.attr_timeout != ExportSpec.attr_timeout:
            out += ["--attr-timeout", str(self.attr_timeout)]
        return out

    # -- use ------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> ExportSpec:
        """This spec with some options changed (e.g. a scenario's [export] table)."""
        return dataclasses.replace(self, **changes)

    def backing_spec(self) -> BackingSpec:
        """The parsed backing; BackingError names what is wrong."""
        return parse_backing(self.backing, parse_size(self.size) if self.size else None)

    def options(self) -> ExportOptions:
        return ExportOptions(
            read_only=self.read_only,
            growable=self.growable,
            cache=self.cache,
            attr_timeout=self.attr_timeout,
            fill=self.fill == "data",
        )

    def describe(self) -> dict[str, Any]:
        """The export section of a result, as asked for (the server adds what it found)."""
        return {
            "backing": self.backing,
            "size": None,
            "read_only": self.read_only,
            "growable": self.growable,
            "cache": self.cache,
            "fill": self.fill,
        }
