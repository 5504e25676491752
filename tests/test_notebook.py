"""The evaluation notebook runs top to bottom against a real champion, so it cannot rot."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT, TrainedHome

pytestmark = pytest.mark.slow


def test_evaluation_notebook_executes(trained_home: TrainedHome, monkeypatch: pytest.MonkeyPatch) -> None:
    path = ROOT / "notebooks" / "evaluate.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "strip outputs"
    for key, value in trained_home.env().items():
        monkeypatch.setenv(key, value)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", ""))
        for c in notebook.cells
        for o in c.get("outputs", [])
    )
    assert f"version {trained_home.version}" in text
    assert "likelihood)" in text
