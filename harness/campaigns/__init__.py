"""Campaigns: suites (suites.py, the files in scenarios/suites/) and the interleaved,
repeated runs of every scenario point x transport with their manifest (interleaved.py)."""
