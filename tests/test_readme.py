"""The README's transport table names each transport's own options, as the transports
declare them (the placement keys, common to all, are said once below the table)."""

from __future__ import annotations

import re

import pytest

from conftest import REPO
from transports.base import known_transports, transport_class

ROW = re.compile(r"^\| `(?P<name>[a-z0-9]+)[:`]")


def _table() -> dict[str, set[str]]:
    rows = {}
    for line in (REPO / "README.md").read_text().splitlines():
        m = ROW.match(line)
        if m and m.group("name") in known_transports():
            options = line.rstrip(" |").rsplit(" | ", 1)[-1]
            rows[m.group("name")] = set(re.findall(r"`([a-z_]+)=", options))
    return rows


@pytest.mark.parametrize("name", known_transports())
def test_the_readme_lists_each_transports_options(name: str) -> None:
    cls = transport_class(name)
    declared = set(cls.options) - {getattr(cls, "raw_option", None)}
    assert _table().get(name) == declared, (
        f"README's row for {name} must list exactly its options {sorted(declared)}")
