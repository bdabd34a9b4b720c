"""Figures F1–F11 and tables T1–T2 of the FailFast paper, drawn from failfast-bench results.

Inputs are the report module's DataFrames (``runs`` per run and latency profile, ``rounds`` per
verification round); see :mod:`failfast_bench.plots.figures` for each figure's required columns.
Command line: ``python -m failfast_bench.plots --runs runs.parquet --rounds rounds.parquet --out DIR``.
"""
from .figures import (NoDataError, best_per_method, plot_calibration, plot_concavity, plot_difficulty_raster,
                      plot_easy_region_cdf, plot_latency_breakdown, plot_length_cdf, plot_nmax_sensitivity,
                      plot_tau_sensitivity, plot_theoretical_speedup, plot_training_curve)
from .tables import table_t1, table_t2, write_t1, write_t2, write_tables
from .trajectory import plot_trajectory, render_trajectory_html

__all__ = [
    "NoDataError", "best_per_method", "plot_calibration", "plot_concavity", "plot_difficulty_raster",
    "plot_easy_region_cdf", "plot_latency_breakdown", "plot_length_cdf", "plot_nmax_sensitivity",
    "plot_tau_sensitivity", "plot_theoretical_speedup", "plot_training_curve", "plot_trajectory",
    "render_trajectory_html", "table_t1", "table_t2", "write_t1", "write_t2", "write_tables",
]
