"""Experiment presets, resumable multirun sweeps (SIGKILL mid-sweep), and the Slurm / submitit launchers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from failfast_bench import sweeps, trace
from failfast_bench.cli import CONF_DIR, compose
from failfast_bench.config import validate

from conftest import requires_smollm2, resolved_question_ids

# preset -> jobs of its default grid (paper-reference.md §12; micro_tau and concavity are thinned on CPU)
PRESETS = {
    "failfast_sweep": 18,
    "ar_sweep": 8,
    "ar_dynamic_sweep": 18,
    "dllm_sweep": 14,
    "eagle3_sweep": 6,
    "micro_tau": 5,
    "micro_nmax": 7,
    "micro_n": 5,
    "concavity": 6,
    "dllm_strategies": 5,
}
# Paper-scale presets (GPU): preset -> jobs
PAPER_PRESETS = {"paper_7b": 18, "paper_14b": 18, "paper_32b": 18, "paper_dllm_grid": 14, "paper_ar_grid": 8}


def test_every_preset_is_listed():
    listed = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml") if not p.stem.startswith("_"))
    assert listed == sorted({**PRESETS, **PAPER_PRESETS})


@pytest.mark.parametrize("name", sorted(PAPER_PRESETS))
def test_paper_presets_hold_the_paper_scale(name, tmp_path):
    found = sweeps.jobs([f"experiment={name}", f"run.output_dir={tmp_path}"])
    assert len(found) == PAPER_PRESETS[name] == len({j.run_dir for j in found})
    for job in found:
        cfg = job.config
        validate(cfg)
        assert cfg.target.name.startswith("qwen2.5-") and cfg.hardware.name == "a6000_paper"
        assert (cfg.dataset.name, cfg.dataset.num_questions, cfg.dataset.template, cfg.dataset.fallback) == ("gsm8k", 30, "code", "refuse")
        assert (cfg.run.max_new_tokens, cfg.run.dtype, cfg.run.seed) == (1024, "bfloat16", 42)
    if name.startswith("paper_") and name[6:] in ("7b", "14b", "32b"):
        assert found[0].config.target.name == f"qwen2.5-{name[6:]}"
        assert {j.config_name for j in found} == {f"dllm_0.05_df_{t:g}_{m}_10" for t in (0.35, 0.4, 0.45) for m in range(35, 61, 5)}


def test_building_blocks_are_not_presets():
    from failfast_bench.cli import group_options

    assert "_paper_scale" not in group_options("experiment") and "paper_32b" in group_options("experiment")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_expands_into_distinct_valid_jobs(name, tmp_path):
    found = sweeps.jobs([f"experiment={name}", f"run.output_dir={tmp_path}"])
    assert len(found) == PRESETS[name]
    assert len({j.run_dir for j in found}) == len(found), "two jobs of one sweep share a config hash"
    assert all(j.state == "missing" for j in found)
    for job in found:
        cfg = job.config
        validate(cfg)
        # CPU-sized by default; the paper-scale override is documented in the preset.
        assert cfg.dataset.num_questions <= 3 and cfg.run.max_new_tokens <= 64


def test_presets_hold_the_paper_settings(tmp_path):
    tau = compose(["experiment=micro_tau"])
    assert (tau.drafter.name, tau.drafter.theta, tau.drafter.n, tau.drafter.n_max, tau.run.replay) == ("failfast", 0.05, 10, 60, True)
    nmax = compose(["experiment=micro_nmax"])
    assert (nmax.drafter.tau, nmax.drafter.n) == (0.45, 10)
    grid = sweeps.jobs(["experiment=failfast_sweep", f"run.output_dir={tmp_path}"])
    names = {j.config_name for j in grid}
    assert names == {f"dllm_0.05_df_{t:g}_{m}_10" for t in (0.35, 0.4, 0.45) for m in range(35, 61, 5)}
    assert {j.config_name for j in sweeps.jobs(["experiment=dllm_sweep"])} == {f"dllm_0.9_sf_{k}" for k in range(3, 17)}
    concavity = compose(["experiment=concavity"])
    assert (concavity.drafter.name, concavity.drafter.spec_len) == ("dllm", 8)


def test_command_line_sweeps_and_groups_override_the_preset(tmp_path):
    found = sweeps.jobs(["experiment=micro_tau", "drafter.tau=0.3,0.4", "drafter=ar_dynamic", "drafter.model=target"])
    assert [j.config_name for j in found] == ["ar_None_df_0.3_60_10", "ar_None_df_0.4_60_10"]
    assert len(sweeps.jobs(["experiment=micro_tau", "drafter.tau=0.3"])) == 1


def test_sweeps_cli_lists_jobs_and_refuses_unknown_presets(tmp_path, capsys):
    assert sweeps.main(["-m", "experiment=micro_nmax", f"run.output_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("7 jobs: 0 complete, 0 partial, 7 missing") and "dllm_0.05_df_0.45_70_10" in out
    with pytest.raises(SystemExit) as exc:
        sweeps.main(["experiment=paper_everything"])
    assert exc.value.code == 2
    assert "unknown experiment 'paper_everything'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Launchers


def _hydra_compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from failfast_bench.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_slurm_preset_composes_into_valid_submitit_parameters(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e .[slurm]")
    import submitit
    from omegaconf import OmegaConf

    overrides = ["experiment=failfast_sweep", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"run.output_dir={tmp_path}"]
    assert OmegaConf.to_container(_hydra_compose(overrides).hydra.launcher, resolve=True)["gpus_per_node"] == 2  # a6000_paper: TP 2
    cfg = _hydra_compose(overrides + ["hardware.gpus=4"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["gpus_per_node"] == 4  # from the hardware profile
    assert launcher["partition"] == "gpu" and launcher["max_num_timeout"] >= 1
    assert launcher["submitit_folder"].startswith(str(tmp_path))
    # The launcher hands these to submitit's Slurm executor exactly like this; unknown keys would raise.
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    base = set(OmegaConf.structured(BaseQueueConf).keys())
    params = {(k if k in base else f"slurm_{k}"): v for k, v in launcher.items()
              if k not in ("_target_", "submitit_folder", "max_num_timeout")}
    from submitit.slurm import slurm

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun on this machine
    executor = submitit.AutoExecutor(folder=str(tmp_path / "submitit"), cluster="slurm")
    executor.update_parameters(**params)
    sbatch = slurm._make_sbatch_string(command="python -m failfast_bench", folder=str(tmp_path), **executor._executor.parameters)
    assert "#SBATCH --gpus-per-node=4" in sbatch and "#SBATCH --partition=gpu" in sbatch
    assert "#SBATCH --time=720" in sbatch and "#SBATCH --job-name=failfast-bench" in sbatch


@pytest.mark.integration
@requires_smollm2
def test_two_job_sweep_with_submitit_local_executor(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e .[slurm]")
    args = ["hydra/launcher=submitit_local", "drafter=ar", "drafter.model=target", "drafter.spec_len=2,3",
            "dataset.num_questions=1", "run.max_new_tokens=4", f"run.output_dir={tmp_path}", "run.progress=false", "run.threads=1"]
    done = subprocess.run([sys.executable, "-m", "failfast_bench", "-m", *args], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    found = sweeps.jobs(args)
    assert [j.state for j in found] == ["complete", "complete"]
    assert len(list(tmp_path.glob("sweeps/*/.submitit/*/*_result.pkl"))) == 2  # each config ran as its own job


# ------------------------------------------------------------------------------------------------
# Resumable sweeps


def _launch(args, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "failfast_bench", "-m", *args], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.integration
@requires_smollm2
def test_sigkill_mid_sweep_then_rerun_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "runs"
    args = ["experiment=micro_tau", "drafter=ar_dynamic", "drafter.model=target", "drafter.tau=0.2,0.5,0.8",
            "drafter.n=4", "drafter.n_max=8", "run.replay=false", "run.trajectories=false", "dataset.num_questions=2", "run.max_new_tokens=8",
            f"run.output_dir={out}", "run.progress=false", "run.threads=1"]
    first, second, third = sweeps.jobs(args)
    checkpoint = second.run_dir / "partial" / "q00000.json"
    proc = _launch(args, tmp_path / "killed.log")
    deadline = time.time() + 900
    try:
        while not (trace.is_complete(first.run_dir) and checkpoint.exists()):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-2000:]
            assert time.time() < deadline, "sweep made no progress"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [j.state for j in sweeps.jobs(args)] == ["complete", "partial", "missing"]
    saved_q0 = json.loads(checkpoint.read_text())["question"]
    first_stamp = (first.run_dir / trace.COMPLETE_MARKER).stat().st_mtime_ns
    assert not (second.run_dir / "summary.json").exists() and not (second.run_dir / "questions.parquet").exists()

    rerun = subprocess.run([sys.executable, "-m", "failfast_bench", "-m", *args], capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert f"complete results exist, skipping: {first.run_dir}" in rerun.stdout
    assert f"resuming {second.run_dir}: 1 of 2 questions already done" in rerun.stdout
    assert [j.state for j in sweeps.jobs(args)] == ["complete"] * 3
    assert (first.run_dir / trace.COMPLETE_MARKER).stat().st_mtime_ns == first_stamp  # not recomputed
    expected_ids = resolved_question_ids(compose(args[:1] + args[4:]).dataset)
    for job in (first, second, third):
        _, questions, summary = trace.load_run(job.run_dir)
        assert list(questions["question_id"]) == expected_ids  # nothing lost, nothing twice
        assert summary["metrics"]["lossless_mismatches"] == 0
        assert not (job.run_dir / "partial").exists()
    _, questions, _ = trace.load_run(second.run_dir)
    # question 0 of the killed config came from its checkpoint, not from a second run (same timings)
    assert questions.iloc[0]["wall_seconds"] == saved_q0["wall_seconds"]
    assert not [p for p in out.rglob("*.partial")], "temporary files left behind"

    again = subprocess.run([sys.executable, "-m", "failfast_bench", "-m", *args], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0
    assert again.stdout.count("complete results exist, skipping") == 3


def test_stray_temporaries_and_checkpoints_never_count_as_complete(tmp_path):
    from failfast_bench.report import find_runs
    from failfast_bench.runner import _remove_stray_temporaries

    run_dir = tmp_path / "t" / "d" / "cfg__abc"
    (run_dir / "partial").mkdir(parents=True)
    (run_dir / "partial" / "q00000.json").write_text("{}")
    (run_dir / ".summary.json.x1.partial").write_text("half")
    (run_dir / "partial" / ".q00001.json.x2.partial").write_text("half")
    assert find_runs([tmp_path]) == []
    _remove_stray_temporaries(run_dir)
    assert sorted(p.name for p in run_dir.rglob("*")) == ["partial", "q00000.json"]
