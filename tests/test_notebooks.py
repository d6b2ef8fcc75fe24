"""The notebooks execute top to bottom: against a synthetic campaign always, and against
the committed reference campaign's runs (which CI must have).

Each point is a panel of most figures, and drawing panels is what a notebook spends its
time on: between them the two campaigns take every branch with the fewest points (the
reference's runs at a sweep of each kind, tests/conftest.py's reference_runs; a synthetic
bandwidth point without sweeps or qsd)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from nbclient import NotebookClient

from harness.analysis.campaign_results import ENV_CAMPAIGN
from harness.analysis.synthetic import default_points, write_campaign

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


class Kernel:
    """One kernel for every execution here, as long as it lives: starting one and importing
    pandas, matplotlib and the analysis into it takes longer than most notebooks' cells."""

    def __init__(self) -> None:
        self.km: KernelManager | None = None

    def live(self) -> KernelManager:
        if self.km is None or not self.km.is_alive():  # first, or a notebook killed it
            self.km = KernelManager(kernel_name="python3")
            self.km.start_kernel(cwd=str(REPO / "notebooks"))
        return self.km

    def stop(self) -> None:
        if self.km is not None and self.km.is_alive():
            self.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    k = Kernel()
    yield k
    k.stop()


def execute(notebook: Path, campaign: Path, kernel: Kernel) -> None:
    """Run every cell, in an emptied namespace with $RINGSIDE_CAMPAIGN naming `campaign` (as
    a kernel started for it would have them); a failing cell fails the test with its error."""
    km = kernel.live()
    fresh = f"%reset -f\nimport os\nos.environ[{ENV_CAMPAIGN!r}] = {str(campaign)!r}\ndel os"
    NotebookClient(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(fresh)]),
                   km=km, timeout=60).execute()
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, km=km, timeout=600).execute()
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
    """One bandwidth point and no qsd: the branches the reference campaign's runs do not
    take (MiB/s, not IOPS; no sweep or qsd to draw, said instead), one panel a figure."""
    points = [p for p in default_points() if p.scenario == "seqread-1m"]
    return write_campaign(tmp_path_factory.mktemp("nb") / "synthetic",
                          {"pyfuse3": 1.0, "devfuse": 1.3, "uring": 2.0,
                           "uring:buffers=pinned": 2.2},
                          points=points, repetitions=2)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_synthetic_campaign(notebook: Path, synthetic: Path,
                                               kernel: Kernel) -> None:
    execute(notebook, synthetic, kernel)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_reference_campaign(notebook: Path, reference_runs: Path,
                                                 kernel: Kernel) -> None:
    execute(notebook, reference_runs, kernel)
