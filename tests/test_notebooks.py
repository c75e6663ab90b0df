"""The notebooks execute top to bottom (small sizes), so they cannot rot."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_exist_explore_and_have_a_documented_front_end():
    assert {path.stem for path in NOTEBOOKS} >= {"quickstart", "batch", "tradeoff", "verifier",
                                                 "block"}
    for path in NOTEBOOKS:
        code = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells
                         if cell.cell_type == "code")
        assert code.count("plt.") >= 6 and "interact(" in code, path.stem  # plots, a slider
    makefile = (ROOT / "Makefile").read_text()
    assert "lab:" in makefile and "'.[notebooks]'" in makefile
    assert "jupyterlab" in (ROOT / "pyproject.toml").read_text()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs(path):
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    # every cell that plots shows its figure (a backend switched to Agg by an import shows none)
    for cell in notebook.cells:
        if cell.cell_type == "code" and "plt." in cell.source:
            assert any("image/png" in output.get("data", {}) for output in cell.outputs), \
                cell.source.splitlines()[0]
