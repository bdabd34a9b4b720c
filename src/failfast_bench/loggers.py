"""Experiment loggers. ``logger=wandb`` logs the resolved config, summary metrics, the per-round table
and any figures of a run; its mode is ``offline`` unless the user asks for ``logger.mode=online``."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import pandas as pd
from omegaconf import OmegaConf

ROUND_TABLE_COLUMNS = [
    "question_id", "round", "prefix_len", "draft_len", "accepted_len", "bonus", "drafter_passes",
    "stop_reason", "drafter_seconds", "verify_seconds",
]


def flat_metrics(summary: dict) -> dict:
    """``<profile>/<metric>`` for every numeric metric under every profile."""
    out = {}
    for profile, metrics in summary.get("metrics_by_profile", {}).items():
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{profile}/{key}"] = value
    return out


def log_run(cfg, summary: dict, rounds: pd.DataFrame, run_dir: Path, figures: Optional[Iterable[Path]] = None) -> None:
    if cfg.logger.name == "none" or cfg.logger.mode == "disabled":
        return
    if cfg.logger.name != "wandb":
        raise ValueError(f"unknown logger {cfg.logger.name!r}; valid: none, wandb")
    import wandb

    run = wandb.init(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        mode=cfg.logger.mode,
        name=f"{summary['target']}/{summary['dataset']}/{summary['config_name']}",
        config=OmegaConf.to_container(cfg, resolve=True),
        tags=list(cfg.logger.tags),
        dir=str(run_dir),
        settings=wandb.Settings(start_method="thread", silent=True),
        reinit="finish_previous",
    )
    try:
        run.summary.update(flat_metrics(summary))
        run.summary["config_hash"] = summary["config_hash"]
        cols = [c for c in ROUND_TABLE_COLUMNS if c in rounds.columns]
        run.log({"rounds": wandb.Table(dataframe=rounds[cols].astype({"bonus": bool}) if "bonus" in cols else rounds[cols])})
        for fig in figures or []:
            run.log({Path(fig).stem: wandb.Image(str(fig))})
    finally:
        run.finish()
