"""Experiment loggers. ``logger=wandb`` logs the resolved config, summary metrics, the per-round table
and the run's figures; its mode is ``offline`` unless the user asks for ``logger.mode=online``.

Summary keys: ``<profile>/<metric>`` for every hardware profile, plus the primary profile's metrics
without a prefix (``modeled_speedup``...), which is what W&B sweeps (``conf/sweeps/``) optimise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import pandas as pd
from omegaconf import OmegaConf

ROUND_TABLE_COLUMNS = [
    "question_id", "round", "prefix_len", "draft_len", "accepted_len", "bonus", "drafter_passes",
    "stop_reason", "drafter_seconds", "verify_seconds",
]


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def flat_metrics(summary: dict) -> dict:
    """``<profile>/<metric>`` for every numeric metric under every profile, and the primary profile's
    metrics unprefixed."""
    out = {}
    for profile, metrics in summary.get("metrics_by_profile", {}).items():
        for key, value in metrics.items():
            if _numeric(value):
                out[f"{profile}/{key}"] = value
    for key, value in summary.get("metrics", {}).items():
        if _numeric(value):
            out[key] = value
    return out


def run_figures(rounds: pd.DataFrame, summary: dict, out_dir: Path) -> list[Path]:
    """PNG figures of one run: accepted/rejected raster per question (F2) and, for AR and FailFast
    drafters, the CDF of drafted and accepted length per round (F6). Figures with nothing to draw are skipped."""
    from .plots import figures

    if rounds.empty:
        return []
    name = summary["config_name"]
    frame = rounds.assign(config_name=name, dataset=summary["dataset"])
    draws = [lambda: figures.plot_difficulty_raster(frame, out_dir, config_name=name, stem="difficulty_raster")]
    if summary["drafter"] == "failfast":
        draws.append(lambda: figures.plot_length_cdf(frame, out_dir, failfast_config=name, ar_config="-", stem="length_cdf"))
    elif summary["drafter"] == "ar":
        draws.append(lambda: figures.plot_length_cdf(frame, out_dir, ar_config=name, failfast_config="-", stem="length_cdf"))
    paths: list[Path] = []
    for draw in draws:
        try:
            paths.extend(Path(p) for p in draw() if Path(p).suffix == ".png")
        except ValueError:  # plots.figures.NoDataError: nothing to draw for this run
            continue
    return paths


def log_run(cfg, summary: dict, rounds: pd.DataFrame, run_dir: Path, figures: Optional[Iterable[Path]] = None) -> None:
    if cfg.logger.name == "none" or cfg.logger.mode == "disabled":
        return
    if cfg.logger.name != "wandb":
        raise ValueError(f"unknown logger {cfg.logger.name!r}; valid: none, wandb")
    import wandb

    if figures is None:
        figures = run_figures(rounds, summary, Path(run_dir) / "figures")
    run = wandb.init(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        mode=cfg.logger.mode,
        name=f"{summary['target']}/{summary['dataset']}/{summary['config_name']}",
        config=OmegaConf.to_container(cfg, resolve=True),
        tags=list(cfg.logger.tags),
        dir=str(run_dir),
        settings=wandb.Settings(silent=True),
        reinit="finish_previous",
    )
    try:
        run.summary.update(flat_metrics(summary))
        run.summary["config_hash"] = summary["config_hash"]
        run.summary["replay"] = bool(summary.get("replay", False))
        cols = [c for c in ROUND_TABLE_COLUMNS if c in rounds.columns]
        run.log({"rounds": wandb.Table(dataframe=rounds[cols].astype({"bonus": bool}) if "bonus" in cols else rounds[cols])})
        for fig in figures or []:
            run.log({Path(fig).stem: wandb.Image(str(fig))})
    finally:
        run.finish()
