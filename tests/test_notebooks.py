"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel (house style: run or delete)."""

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.slow


def test_there_is_a_notebook_to_run():
    assert NOTEBOOKS, "notebooks/ has no notebook; the README says they are executed here"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_clean(path, tmp_path, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        f"{path.name} is committed with outputs; clear them"
    )
    monkeypatch.setenv("DXPIPE_NOTEBOOK_WORKDIR", str(tmp_path))
    # The kernel inherits this environment; a failing cell (its asserts included) raises here.
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    text = "\n".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )
    assert os.listdir(tmp_path), "the notebook wrote nothing to its work directory"
    if path.stem == "clinic_walkthrough":
        assert "refused:" in text and "approve: version 1 by dr-reviewer" in text, text[-3000:]
        # The cached nodes are listed sorted (ClinicalEvaluator first); ExampleGen among them is what counts.
        assert re.search(r"cached: [^\n]*CsvExampleGen", text) and "probability" in text, text[-3000:]
