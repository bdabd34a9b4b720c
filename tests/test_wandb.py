"""W&B logging (never online in tests) and the W&B sweep definitions in conf/sweeps/."""
from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from failfast_bench import loggers
from failfast_bench.cli import CONF_DIR, compose
from failfast_bench.config import ConfigError, validate

from conftest import requires_smollm2

SWEEP_FILES = sorted((CONF_DIR / "sweeps").glob("*.yaml"))  # CPU sweeps: run here on SmolLM2
GPU_SWEEP_FILES = sorted((CONF_DIR / "sweeps" / "gpu").glob("*.yaml"))  # paper scale: validated here


@pytest.fixture(autouse=True)
def _wandb_stays_local(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)


def fake_summary() -> dict:
    m = {"profile": "a6000_paper", "modeled_speedup": 2.5, "acceptance_rate": 0.5, "measured_speedup": float("nan"), "n_questions": 2}
    return {"target": "smollm2-135m", "dataset": "gsm8k", "config_name": "ar_None_sf_4", "drafter": "ar",
            "config_hash": "abc123", "metrics": m, "metrics_by_profile": {"a6000_paper": m, "cpu": {**m, "modeled_speedup": 1.5}},
            "replay": False}


def fake_rounds() -> pd.DataFrame:
    rows = []
    for q in ("0", "1"):
        for r, acc in enumerate([4, 1, 0, 4, 2]):
            rows.append({"question_id": q, "round": r, "prefix_len": 50 + 5 * r, "draft_len": 4, "accepted_len": acc,
                         "bonus": acc == 4, "drafter_passes": 4, "stop_reason": "fixed_length", "drafter_seconds": 0.01,
                         "verify_seconds": 0.02, "next_token": 7})
    return pd.DataFrame(rows)


def test_flat_metrics_prefix_every_profile_and_keep_the_primary_unprefixed():
    flat = loggers.flat_metrics(fake_summary())
    assert flat["a6000_paper/modeled_speedup"] == 2.5 and flat["cpu/modeled_speedup"] == 1.5
    assert flat["modeled_speedup"] == 2.5  # what conf/sweeps optimise
    assert "profile" not in flat and "a6000_paper/profile" not in flat


class FakeRun:
    def __init__(self, **kwargs):
        self.init = kwargs
        self.summary: dict = {}
        self.logged: list[dict] = []
        self.finished = False

    def log(self, data):
        self.logged.append(data)

    def finish(self):
        self.finished = True


def fake_wandb(runs: list):
    def init(**kwargs):
        runs.append(FakeRun(**kwargs))
        return runs[-1]

    return types.SimpleNamespace(init=init, Settings=lambda **k: k, Table=lambda dataframe: ("table", dataframe),
                                 Image=lambda path: ("image", path))


def test_log_run_sends_resolved_config_summary_round_table_and_figures(tmp_path, monkeypatch):
    runs: list[FakeRun] = []
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(runs))
    cfg = compose(["logger=wandb", f"run.output_dir={tmp_path}"])
    assert cfg.logger.mode == "offline"  # never online unless asked for
    loggers.log_run(cfg, fake_summary(), fake_rounds(), tmp_path)
    (run,) = runs
    assert run.init["mode"] == "offline" and run.init["project"] == "failfast-bench"
    assert run.init["config"] == OmegaConf.to_container(cfg, resolve=True)
    assert "${" not in str(run.init["config"])
    assert run.summary["modeled_speedup"] == 2.5 and run.summary["cpu/modeled_speedup"] == 1.5
    assert run.summary["config_hash"] == "abc123"
    tables = [v for d in run.logged for v in d.values() if v[0] == "table"]
    assert len(tables) == 1 and list(tables[0][1].columns) == loggers.ROUND_TABLE_COLUMNS
    images = {k: v[1] for d in run.logged for k, v in d.items() if v[0] == "image"}
    assert set(images) == {"difficulty_raster", "length_cdf"}
    assert all(Path(p).exists() and p.endswith(".png") for p in images.values())
    assert run.finished


def test_disabled_or_none_logger_never_imports_wandb(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # any import would fail
    for overrides in (["logger=none"], ["logger=wandb", "logger.mode=disabled"]):
        loggers.log_run(compose(overrides), fake_summary(), fake_rounds(), tmp_path)


def test_real_wandb_offline_writes_a_local_run_only(tmp_path):
    cfg = compose(["logger=wandb", "logger.mode=offline", f"run.output_dir={tmp_path}"])
    loggers.log_run(cfg, fake_summary(), fake_rounds(), tmp_path)
    (offline,) = list((tmp_path / "wandb").glob("offline-run-*"))
    blob = next(offline.glob("run-*.wandb")).read_bytes()
    for needle in (b"modeled_speedup", b"a6000_paper/modeled_speedup", b"config_hash", b"max_new_tokens"):
        assert needle in blob, needle
    assert list(offline.glob("files/media/table/rounds_*.table.json"))
    assert len(list(offline.glob("files/media/images/*.png"))) == 2


# ------------------------------------------------------------------------------------------------
# W&B sweep definitions


def load_sweep(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def fixed_args(spec: dict) -> list[str]:
    """The Hydra overrides a sweep's command passes before ${args_no_hyphens}."""
    command = spec["command"]
    return [c for c in command[: command.index("${args_no_hyphens}")] if "=" in str(c)]


def generated_overrides(spec: dict) -> list[list[str]]:
    """What the agent would pass: the grid for grid sweeps; the range ends and listed values otherwise."""
    axes = []
    for key, p in spec["parameters"].items():
        if "values" in p:
            values = p["values"]
        elif "value" in p:
            values = [p["value"]]
        else:
            values = [p["min"], p["max"]]
        axes.append([f"{key}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*axes)]


def test_there_are_sweep_files():
    assert {p.stem for p in SWEEP_FILES} >= {"failfast_grid", "micro_tau", "micro_nmax", "ar_grid", "dllm_grid"}
    assert {p.stem for p in GPU_SWEEP_FILES} >= {"failfast_grid", "ar_grid", "dllm_grid"}


@pytest.mark.parametrize("path", SWEEP_FILES + GPU_SWEEP_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_sweep_file_is_a_valid_wandb_sweep_of_the_hydra_app(path, tmp_path):
    spec = load_sweep(path)
    assert spec["method"] in ("grid", "random", "bayes")
    assert spec["metric"] == {"name": "modeled_speedup", "goal": "maximize"}
    command = spec["command"]
    assert command[:4] == ["${env}", "${interpreter}", "-m", "failfast_bench"]
    assert command[-1] == "${args_no_hyphens}"  # key=value pairs, as Hydra expects
    assert "logger=wandb" in command
    combos = generated_overrides(spec)
    if spec["method"] == "grid":
        assert len(combos) == math.prod(len(p["values"]) for p in spec["parameters"].values())
    hashes = set()
    for overrides in combos:
        cfg = compose([*fixed_args(spec), *overrides, f"run.output_dir={tmp_path}"])
        validate(cfg)
        for key, p in spec["parameters"].items():
            assert OmegaConf.select(cfg, key) is not None, f"{key} is not a config key"
        from failfast_bench.runner import config_hash

        hashes.add(config_hash(cfg))
    assert len(hashes) == len(combos)


def cheapest(combos: list[list[str]]) -> list[str]:
    """The generated override set with the shortest drafts (keeps the CPU test short)."""
    def length(combo):
        return sum(float(o.split("=", 1)[1]) for o in combo if o.startswith(("drafter.n_max=", "drafter.spec_len=")))

    return min(combos, key=length)


def _runnable_here(cfg_overrides: list[str]) -> list[str]:
    """Overrides that make a sweep's run fit this machine: tiny size, no network, and a stand-in drafter
    (the target itself, same length rule) where the shipped drafter has not been trained yet."""
    from failfast_bench.drafters import resolve_drafter_model

    cfg = compose(cfg_overrides)
    try:
        resolve_drafter_model(cfg)
        return []
    except ConfigError:
        pass
    if cfg.drafter.name == "ar":
        return ["drafter.model=target"]
    return [f"drafter={'ar_dynamic' if cfg.drafter.name == 'failfast' else 'ar'}", "drafter.model=target"]


@pytest.mark.integration
@requires_smollm2
@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_app_runs_with_overrides_generated_from_the_sweep(path, tmp_path):
    from failfast_bench import trace
    from failfast_bench.runner import run

    spec = load_sweep(path)
    overrides = [*fixed_args(spec), *cheapest(generated_overrides(spec))]
    overrides = [o.replace("logger.mode=online", "logger.mode=disabled") for o in overrides]
    small = ["dataset.num_questions=1", "run.max_new_tokens=4", f"run.output_dir={tmp_path}", "run.progress=false"]
    if "drafter.n_max" not in spec["parameters"]:
        small.append("drafter.n_max=10")  # drafters ignore max_new_tokens: cap the longest draft too
    overrides += small + _runnable_here(overrides + small)
    summary = run(compose(overrides))
    assert trace.is_complete(Path(summary["run_dir"]))
    assert summary["metrics"]["modeled_speedup"] > 0


@pytest.mark.integration
@requires_smollm2
def test_agent_style_command_runs_the_app_and_logs_offline(tmp_path):
    """The command a `wandb agent` would run (macros expanded), offline instead of online."""
    path = CONF_DIR / "sweeps" / "micro_tau.yaml"
    spec = load_sweep(path)
    args = generated_overrides(spec)[2]
    small = ["dataset.num_questions=1", "run.max_new_tokens=4", f"run.output_dir={tmp_path}", "run.progress=false",
             "run.threads=1", "drafter.n_max=10"]
    macros = {"${env}": [], "${interpreter}": [sys.executable], "${args_no_hyphens}": args + small}
    command = [part for c in spec["command"] for part in macros.get(c, [c.replace("logger.mode=online", "logger.mode=offline")])]
    command += _runnable_here([*fixed_args(spec), *args, *small])
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (run_dir,) = [p.parent for p in tmp_path.rglob("COMPLETE")]
    assert "df_0.15_10_10" in run_dir.name  # the swept τ reached the app
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
