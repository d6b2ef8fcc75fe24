"""One failure per unmet machine precondition that the collected tests need (see
tests/preconditions.py); the tests that need it are skipped, pointing here."""

from __future__ import annotations

import pytest
from preconditions import OPTIONAL, PRECONDITIONS, optional, unmet


@pytest.mark.parametrize("precondition", sorted(PRECONDITIONS))
def test_machine_preconditions(precondition: str):
    reason = unmet(precondition)
    if reason and optional(precondition):
        where = "" if precondition in OPTIONAL else " off CI"
        pytest.skip(f"optional{where}, unmet here (its tests skip): {reason}")
    if reason:
        pytest.fail(f"this machine lacks what the tests need: {reason}", pytrace=False)
