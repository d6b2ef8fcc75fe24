"""`-t LABEL=SPEC`: a long spec shows as its label in tables; results keep both."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from harness.analysis.campaign_results import load_campaign
from harness.analysis.synthetic import write_campaign
from harness.cli import main
from transports.base import SpecError, check_unique, parse_spec

LONG = "external:/opt/c-server/bin/serve --image {image} --threads 4 -o a=1,b=2 {mountpoint}"


def test_label_and_spec_are_split():
    spec = parse_spec("libfuse-uring=libfuse:mode=uring")
    assert (spec.label, spec.name, str(spec)) == ("libfuse-uring", "libfuse", "libfuse:mode=uring")
    assert spec.display == "libfuse-uring" and spec.settings["mode"] == "uring"
    # A spec's own '=' comes after its ':': no label there.
    plain = parse_spec("uring:depth=16")
    assert plain.label == "" and plain.display == "uring:depth=16"
    c = parse_spec(f"c={LONG}")
    assert c.label == "c" and c.settings["command"] == LONG.removeprefix("external:")


@pytest.mark.parametrize("text, message", [
    ("my label=devfuse", "bad label 'my label'"),
    ("=devfuse", "bad label ''"),
    ("-x=devfuse", "bad label '-x'"),
    (f"{'x' * 33}=devfuse", "bad label"),
    ("uring=libfuse:mode=uring", "is the name of a transport"),
    ("fast=", "names no transport"),
    ("fast=nosuch", "unknown transport 'nosuch'"),
])
def test_bad_labels_are_refused(text, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(text)


def test_duplicate_labels_are_refused():
    with pytest.raises(SpecError, match="label 'a' is given twice"):
        check_unique([parse_spec("a=devfuse"), parse_spec("a=pyfuse3")])
    with pytest.raises(SpecError, match="transport 'devfuse' is given twice"):
        check_unique([parse_spec("devfuse"), parse_spec("devfuse")])
    # The same spec under two labels is an A/A comparison.
    check_unique([parse_spec("a=devfuse"), parse_spec("b=devfuse")])


def test_campaign_refuses_a_duplicate_label_before_running(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "campaign", "randread-4k-qd1", "-t", "x=devfuse",
         "-t", "x=pyfuse3", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "label 'x' is given twice" in proc.stderr


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    directory = write_campaign(tmp_path_factory.mktemp("labels") / "c",
                               {"devfuse": 1.0, LONG: 1.5}, paired=True, repetitions=3)
    for path in directory.glob("*.json"):
        data = json.loads(path.read_text())
        if data.get("transport", {}).get("spec") == LONG:
            data["transport"]["label"] = "c-server"  # as the runner writes it
            path.write_text(json.dumps(data))
    return directory


def test_compare_shows_the_label_not_the_spec(labelled, capsys):
    assert main(["compare", str(labelled), "--format", "email",
                 "--baseline", "devfuse"]) == 0
    out = capsys.readouterr().out
    assert "c-server" in out and "/opt/c-server" not in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_campaign_keeps_label_and_spec(labelled):
    campaign = load_campaign(labelled)
    assert campaign.transports() == ["c-server", "devfuse"]
    assert campaign.transport_settings()["c-server"]["spec"] == LONG
    assert set(campaign.table["transport_spec"]) == {"devfuse", LONG}
