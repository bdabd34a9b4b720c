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
    assert any(o.get("output_type") in ("display_data", "execute_result") and "image/png" in o.get("data", {}) for o in outputs)


def test_committed_results_rebuild_every_figure_and_table(tmp_path):
    """`make figures` on the committed results writes every figure and table (no model runs)."""
    from failfast_bench.plots.__main__ import main

    status = main(["--results", str(ROOT / "results" / "runs"), "--training-curve", str(ROOT / "results" / "training" / "curves.csv"),
                   "--out", str(tmp_path)])
    assert status == 0
    written = {p.name for p in tmp_path.iterdir()}
    for stem in ("f1_concavity", "f2_difficulty_raster", "f3_easy_region_cdf", "f4_trajectory", "f5_latency_breakdown",
                 "f6_length_cdf", "f7_tau_sensitivity", "f8_nmax_sensitivity", "f9_training_curve", "f10_theoretical_speedup",
                 "f11_confidence_calibration"):
        assert f"{stem}.png" in written and f"{stem}.pdf" in written, stem
    assert {"t1_speedup.md", "t1_speedup.tex", "t2_eagle3.md", "t2_eagle3.tex"} <= written
