"""Ringside's harness: the CLI, runs, campaigns, results and their analysis."""

from pathlib import Path

# The checkout: where results/, .cache/ and the git history are.
REPO_DIR = Path(__file__).resolve().parent.parent
