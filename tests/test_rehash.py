"""Run names: the drafter is named by the model it runs, not by the target's table of default drafters; runs
recorded under the old scheme are renamed by failfast_bench.rehash only when they still hash as recorded."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from failfast_bench import rehash, trace
from failfast_bench.cli import compose
from failfast_bench.runner import Runner, config_hash


def test_default_and_explicit_drafter_are_one_run_and_other_defaults_do_not_matter(tmp_path):
    base = [f"run.output_dir={tmp_path}", "run.replay=true"]
    default = compose([*base, "drafter=failfast"])
    explicit = compose([*base, "drafter=failfast", f"drafter.model={default.target.drafters.failfast}"])
    assert config_hash(default) == config_hash(explicit)
    ar = compose([*base, "drafter=ar"])
    OmegaConf.update(ar, "target.drafters.failfast", "shipped:ar")  # another family's default changes
    assert config_hash(ar) == config_hash(compose([*base, "drafter=ar"]))
    assert config_hash(ar, legacy_target_drafters=True) != config_hash(compose([*base, "drafter=ar"]), legacy_target_drafters=True)
    assert config_hash(default) != config_hash(compose([*base, "drafter=failfast", "drafter.model=shipped:dllm"]))


def _recorded_run(cfg, name_hash: str, recorded_hash: str):
    run_dir = Runner(cfg).run_dir.with_name(f"vanilla__{name_hash[:10]}")
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    trace.write_json({"config_hash": recorded_hash}, run_dir / "manifest.json")
    trace.write_json({"config_hash": recorded_hash, "run_dir": str(run_dir)}, run_dir / "summary.json")
    (run_dir / trace.COMPLETE_MARKER).write_text("")
    return run_dir


def test_rehash_moves_runs_that_hash_as_recorded_and_keeps_the_rest(tmp_path):
    cfg = compose([f"run.output_dir={tmp_path}", "drafter=vanilla", "run.replay=true"])
    legacy = config_hash(cfg, legacy_target_drafters=True)
    old = _recorded_run(cfg, legacy, legacy)
    stale_cfg = compose([f"run.output_dir={tmp_path}", "drafter=vanilla", "run.replay=true", "run.max_new_tokens=7"])
    stale = _recorded_run(stale_cfg, "0" * 10, "f" * 64)  # recorded under another config
    assert rehash.main([str(tmp_path), "--dry-run"]) == 0 and old.exists()
    assert rehash.main([str(tmp_path)]) == 0
    new = Runner(cfg).run_dir
    assert not old.exists() and trace.is_complete(new) and stale.exists()
    assert json.loads((new / "manifest.json").read_text())["config_hash"] == config_hash(cfg)
    assert json.loads((new / "summary.json").read_text())["run_dir"].endswith(new.name)
    assert rehash.main([str(tmp_path)]) == 0 and new.exists()  # idempotent


def test_committed_runs_record_the_directory_they_live_in():
    """A run moved between results directories (e.g. when the default drafter changes) has its recorded
    ``run_dir`` and ``run.output_dir`` rewritten too, so no committed file names a machine-local or stale path."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    summaries = sorted(root.glob("results/runs*/*/*/*/summary.json"))
    assert summaries, "no committed results"
    for path in summaries:
        run = path.parent.relative_to(root)
        assert json.loads(path.read_text())["run_dir"] == str(run), run
        assert OmegaConf.load(path.parent / "config.yaml").run.output_dir == str(run.parents[2]), run


def test_relocate_moves_a_run_and_the_paths_it_records(tmp_path, capsys):
    """A moved run is found complete where it now lives, and records that place (summary and config)."""
    from failfast_bench import relocate

    cfg = compose([f"run.output_dir={tmp_path / 'runs'}", "drafter=vanilla", "run.replay=true"])
    run = _recorded_run(cfg, config_hash(cfg), config_hash(cfg))
    to = tmp_path / "runs_drafters"
    assert relocate.main([str(tmp_path / "runs"), "--to", str(to), "--dry-run"]) == 0 and run.exists()
    assert relocate.main([str(tmp_path / "runs"), "--to", str(to)]) == 0
    moved = to / run.relative_to(tmp_path / "runs")
    assert not run.exists() and trace.is_complete(moved)
    assert json.loads((moved / "summary.json").read_text())["run_dir"] == str(moved)
    assert OmegaConf.load(moved / "config.yaml").run.output_dir == str(to)
    assert Runner(compose([f"run.output_dir={to}", "drafter=vanilla", "run.replay=true"])).run_dir == moved
    # Nothing is overwritten: a second copy at the old place refuses as a whole.
    again = _recorded_run(cfg, config_hash(cfg), config_hash(cfg))
    with pytest.raises(SystemExit) as refused:
        relocate.main([str(again), "--to", str(to)])
    assert refused.value.code == 2 and "destination exists" in capsys.readouterr().err and again.exists()
