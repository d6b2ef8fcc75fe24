"""The notebooks execute top to bottom: against a synthetic campaign always, and against
the committed reference campaign's runs (which CI must have).

Each point is a panel of most figures, and drawing panels is what a notebook spends its
time on: between them the two campaigns take every branch with the fewest points (the
reference's runs at a sweep of each kind and a bandwidth point; a synthetic point without
sweeps or qsd). tests/test_plots.py draws every figure from the whole reference campaign."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from harness.analysis.campaign_results import DEFAULT_CAMPAIGN, ENV_CAMPAIGN
from harness.analysis.synthetic import default_points, write_campaign
from harness.results import load

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def execute(notebook: Path, campaign: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every cell in a fresh kernel; a failing cell fails the test with its error."""
    monkeypatch.setenv(ENV_CAMPAIGN, str(campaign))  # the kernel inherits our environment
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", shutdown_kernel="immediate",
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    errors = [o for cell in nb.cells for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    images = sum(1 for cell in nb.cells for o in cell.get("outputs", [])
                 if "image/png" in o.get("data", {}))
    assert images > 0, f"{notebook.name} showed no figure"


def test_the_notebooks_exist() -> None:
    assert [p.name for p in NOTEBOOKS] == ["pinned_vs_mapped.ipynb", "transports.ipynb"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One point and no qsd: the branches the reference campaign's runs do not take (a
    campaign without sweeps or qsd says so instead of drawing), in one panel a figure."""
    return write_campaign(tmp_path_factory.mktemp("nb") / "synthetic",
                          {"pyfuse3": 1.0, "devfuse": 1.3, "uring": 2.0,
                           "uring:buffers=pinned": 2.2},
                          points=default_points()[:1], repetitions=2)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_synthetic_campaign(notebook: Path, synthetic: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    execute(notebook, synthetic, monkeypatch)


# The committed campaign's points the notebooks run on (real results, a third of them).
REFERENCE_POINTS = (
    "randread-4k-depth-jobs@iodepth=1,numjobs=1",
    "randread-4k-depth-jobs@iodepth=16,numjobs=1",
    "randread-4k-depth-jobs@iodepth=1,numjobs=2",
    "seqread-1m",
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference campaign's runs at REFERENCE_POINTS, with its manifest; a campaign
    named by $RINGSIDE_CAMPAIGN whole."""
    if os.environ.get(ENV_CAMPAIGN):
        return Path(os.environ[ENV_CAMPAIGN])
    campaign = REPO / DEFAULT_CAMPAIGN
    if not campaign.is_dir():
        message = f"the reference campaign {campaign} is missing"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": it must be committed (results/reference/)")
        pytest.skip(message)
    runs = load(campaign)
    missing = sorted(set(REFERENCE_POINTS) - set(runs["point"]))
    assert not missing, f"{campaign} has no {missing}: name its points in REFERENCE_POINTS"
    subset = tmp_path_factory.mktemp("nb") / campaign.name
    subset.mkdir()
    for file in runs.loc[runs["point"].isin(REFERENCE_POINTS), "file"].unique():
        for twin in Path(file).parent.glob(Path(file).stem + ".*"):  # the result, its job
            shutil.copy(twin, subset / twin.name)
    manifest = json.loads((campaign / "campaign.json").read_text())
    manifest["runs"] = [r for r in manifest["runs"] if r["point"] in REFERENCE_POINTS]
    (subset / "campaign.json").write_text(json.dumps(manifest))
    return subset


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_reference_campaign(notebook: Path, reference: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    execute(notebook, reference, monkeypatch)
