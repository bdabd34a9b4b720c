"""The results notebook runs top to bottom on the committed results (so it cannot rot)."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_reference_results_notebook_executes():
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    assert any((ROOT / "results" / "runs").rglob("summary.json")), "no committed results: run `make results`"
    nb = nbformat.read(ROOT / "notebooks" / "reference_results.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
