"""Which Debian archive this machine uses, read from its own apt configuration.

Fetches of sid and experimental go to the mirror (or proxy) the machine already uses for
Debian, so nothing of one machine is written into the code. Read: the one-line format
(`deb [opt=value ...] URI SUITE COMPONENT...`, sources.list(5)) and deb822 stanzas
(Types/URIs/Suites/Components, `Enabled: no`) in the files apt itself reads.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_LIST = Path("/etc/apt/sources.list")
DEFAULT_PARTS = Path("/etc/apt/sources.list.d")
# Debian's release names and aliases: a suite named after one of these, with component
# main, is Debian's archive (a third party's repository uses its own suite names).
DEBIAN_SUITES = frozenset(
    "buzz rex bo hamm slink potato woody sarge etch lenny squeeze wheezy jessie stretch "
    "buster bullseye bookworm trixie forky duke sid experimental unstable testing stable "
    "oldstable oldoldstable".split()
)
# Suites served by other archives than the main one (different layout, no sid there).
OTHER_ARCHIVES = ("-security", "-debug")
MIRROR_FIX = (
    "give a Debian mirror with --mirror URL (one from https://www.debian.org/mirror/list, "
    "or a proxy of one), or add a Debian entry to the machine's apt sources"
)


class NoDebianArchive(RuntimeError):
    """The machine's apt sources name no Debian archive; the message says what was read."""


@dataclass(frozen=True)
class SourceEntry:
    """One (type, URI, suite) of an apt source, with where it was written."""

    type: str  # deb or deb-src
    uri: str
    suite: str
    components: tuple[str, ...]
    options: dict[str, str] = field(default_factory=dict)
    origin: str = ""  # FILE:LINE

    def is_debian_archive(self) -> bool:
        # "buster/updates" was the security archive's suite; "./" a flat repository's.
        if "/" in self.suite or self.suite.endswith(OTHER_ARCHIVES):
            return False
        if self.suite.split("-", 1)[0] not in DEBIAN_SUITES:
            return False
        if "main" not in self.components or self.uri.startswith("cdrom:"):
            return False
        # A repository signed by another key is a third party's, whatever its suite names.
        signed_by = self.options.get("signed-by", "")
        return not signed_by.startswith("/") or "debian-archive" in Path(signed_by).name

    def is_snapshot(self) -> bool:
        # snapshot.debian.org serves the archive as it was on one day: no new sid there.
        return "snapshot.debian.org" in self.uri


def parse_one_line(text: str, path: str = "sources.list") -> list[SourceEntry]:
    """Entries of a one-line-format file; comments and malformed lines are skipped."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        if kind not in ("deb", "deb-src"):
            continue
        options: dict[str, str] = {}
        rest = rest.strip()
        if rest.startswith("["):
            inside, bracket, rest = rest[1:].partition("]")
            if not bracket:
                continue
            for opt in inside.split():
                key, _, value = opt.partition("=")
                options[key.lower().rstrip("+-")] = value
        words = rest.split()
        if len(words) < 2:
            continue
        uri, suite, components = words[0], words[1], tuple(words[2:])
        out.append(SourceEntry(kind, uri.rstrip("/"), suite, components, options,
                               f"{path}:{number}"))
    return out


def _strip_comment(line: str) -> str:
    """The line up to a `#` (apt's rule: a `#` inside [options] does not start one)."""
    depth = 0
    for i, ch in enumerate(line):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        elif ch == "#" and depth == 0:
            return line[:i]
    return line


def parse_deb822(text: str, path: str = "x.sources") -> list[SourceEntry]:
    """Entries of a deb822 `.sources` file (sources.list(5)); stanzas with
    `Enabled: no` and stanzas lacking Types, URIs or Suites are skipped."""
    out = []
    for start, stanza in _stanzas(text):
        if stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        types, uris, suites = (stanza.get(k, "").split() for k in ("types", "uris", "suites"))
        components = tuple(stanza.get("components", "").split())
        options = {k: v.strip() for k, v in stanza.items()
                   if k not in ("types", "uris", "suites", "components", "enabled")}
        for kind in types:
            if kind not in ("deb", "deb-src"):
                continue
            for uri in uris:
                for suite in suites:
                    out.append(SourceEntry(kind, uri.rstrip("/"), suite, components, options,
                                           f"{path}:{start}"))
    return out


def _stanzas(text: str) -> list[tuple[int, dict[str, str]]]:
    """(first line number, {lower-case field: value}) of each paragraph."""
    stanzas: list[tuple[int, dict[str, str]]] = []
    fields: dict[str, str] = {}
    start, last = 0, None
    for number, line in enumerate(text.splitlines() + [""], 1):
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                stanzas.append((start, fields))
            fields, last = {}, None
            continue
        if line[0] in " \t":  # a continuation of the field above (e.g. an inline key)
            if last is not None:
                fields[last] += "\n" + line.strip()
            continue
        key, colon, value = line.partition(":")
        if not colon:
            continue
        if not fields:
            start = number
        last = key.strip().lower()
        fields[last] = value.strip()
    return stanzas


def source_files() -> list[Path]:
    """The files apt reads, in its order: Dir::Etc::sourcelist, then the *.list and
    *.sources of Dir::Etc::sourceparts sorted by name (apt-config tells where they are)."""
    main, parts = DEFAULT_LIST, DEFAULT_PARTS
    if shutil.which("apt-config"):
        proc = subprocess.run(
            ["apt-config", "shell", "LIST", "Dir::Etc::sourcelist/f",
             "PARTS", "Dir::Etc::sourceparts/d"],
            capture_output=True, text=True,
        )
        found = dict(re.findall(r"^(LIST|PARTS)='(.*)'$", proc.stdout, re.M))
        main = Path(found.get("LIST") or main)
        parts = Path(found.get("PARTS") or parts)
    files = [main]
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir()
                        if p.suffix in (".list", ".sources") and not p.name.startswith("."))
    return files


def read_entries(files: list[Path]) -> list[SourceEntry]:
    entries = []
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        parse = parse_deb822 if path.suffix == ".sources" else parse_one_line
        entries += parse(text, str(path))
    return entries


def debian_archive(files: list[Path] | None = None) -> SourceEntry:
    """The Debian archive entry this machine uses: the first binary (`deb`) entry of a
    Debian suite with component main, one not on snapshot.debian.org preferred.
    NoDebianArchive names the files read and the fix when there is none."""
    files = source_files() if files is None else files
    entries = [e for e in read_entries(files) if e.is_debian_archive()]
    entries.sort(key=lambda e: (e.is_snapshot(), e.type != "deb"))  # stable: file order
    if entries:
        return entries[0]
    read = ", ".join(f"{p}{'' if p.exists() else ' (absent)'}" for p in files) or "none"
    raise NoDebianArchive(
        f"this machine's apt sources name no Debian archive (a Debian suite with component "
        f"main; read {read}): {MIRROR_FIX}"
    )
