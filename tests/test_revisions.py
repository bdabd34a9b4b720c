"""Pinning: drafter/dataset ``revision`` keys reach the loaders, the resolved commit of every hub model and HF
dataset is in the manifest, and a hub drafter's commit is part of the run hash (committed hashes unchanged)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import fake_hub as fh
from failfast_bench.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_committed_results_keep_their_config_hash():
    """New keys at their default (null) must not move a committed run: it would be rerun instead of skipped."""
    from failfast_bench.runner import config_hash

    checked = 0
    for config in sorted((ROOT / "results").glob("runs*/**/config.yaml")):
        summary = json.loads((config.parent / "summary.json").read_text())
        run_hash = config_hash(OmegaConf.load(config))
        assert run_hash == summary["config_hash"] and config.parent.name.endswith(run_hash[:10]), config.parent
        checked += 1
    assert checked > 0


def test_revision_keys_at_their_default_are_not_hashed():
    from failfast_bench.cli import compose
    from failfast_bench.runner import config_hash

    cfg = compose(["drafter=failfast"])
    legacy = OmegaConf.to_container(cfg, resolve=True)
    del legacy["drafter"]["revision"], legacy["dataset"]["revision"]
    assert config_hash(OmegaConf.create(legacy)) == config_hash(cfg)
    assert config_hash(compose(["drafter=failfast", "dataset.revision=abc"])) != config_hash(cfg)


@pytest.fixture
def two_commits(hub_env, tmp_path, monkeypatch):
    """A cache where the drafters' main branch moved to a new commit v2 and v1 is still there.

    v2 keeps the configs and tokenizers but lost its weights: loading v2 fails, so a pinned v1 that loads proves
    the revision reached the loader. The target is linked in unchanged.
    """
    from huggingface_hub import constants

    from failfast_bench import hub

    cache = tmp_path / "hub"
    cache.mkdir()
    for repo in (fh.TARGET_7B, fh.AR_DRAFTER, fh.FAST_DLLM, fh.EAGLE3_7B):
        (cache / fh.repo_folder(cache, repo).name).symlink_to(fh.repo_folder(hub_env.cache, repo))
    v1, v2 = {}, {}
    for repo in (fh.AR_DRAFTER, fh.FAST_DLLM, fh.EAGLE3_7B):
        folder = cache / fh.repo_folder(cache, repo).name
        folder.unlink()
        _copy_repo(fh.repo_folder(hub_env.cache, repo), folder)
        v1[repo] = hub_env.commits[repo]
        snapshot = folder / "snapshots" / v1[repo]
        files = {p.name: p.read_bytes() for p in snapshot.iterdir() if p.suffix != ".safetensors"}
        v2[repo] = fh.write_repo(cache, repo, files, commit=fh.fake_commit(repo, "v2"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    hub.clear_cache()
    return v1, v2


def _copy_repo(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst, symlinks=True)  # snapshot links are relative: they point into the copy's blobs


DRAFTER = {fh.AR_DRAFTER: "ar", fh.FAST_DLLM: "failfast", fh.EAGLE3_7B: "eagle3"}


def _cfg(repo: str, *extra: str):
    from failfast_bench.cli import compose

    return compose(["target=qwen2.5-7b", f"drafter={DRAFTER[repo]}", f"drafter.model={repo}", "run.device=cpu", "dataset.num_questions=1", *extra])


def test_hub_drafter_commit_is_part_of_the_run_hash(two_commits):
    from failfast_bench import hub
    from failfast_bench.runner import Runner, config_hash, drafter_weights_id

    v1, v2 = two_commits
    for repo in v1:
        cfg = _cfg(repo)
        assert drafter_weights_id(cfg) == f"hub:{repo}@{v2[repo]}"
        moved = config_hash(cfg)
        assert Runner(cfg).run_dir.name.endswith(moved[:10])
        pinned = _cfg(repo, f"drafter.revision={v1[repo]}")
        assert drafter_weights_id(pinned) == f"hub:{repo}@{v1[repo]}"
        # The same config before the hub moved: another directory, so the update is not "already complete".
        (Path(hub.cache_dir()) / fh.repo_folder(hub.cache_dir(), repo).name / "refs" / "main").write_text(v1[repo])
        hub.clear_cache()
        assert config_hash(cfg) != moved


def test_drafter_revision_reaches_every_loader(two_commits):
    import torch

    from failfast_bench import models
    from failfast_bench.drafters import build_drafter
    from failfast_bench.runner import preflight

    v1, _ = two_commits
    t_src = models.resolve_source(fh.TARGET_7B)
    tokenizer, target = models.load_tokenizer(t_src), models.load_causal_lm(t_src, torch.float32, torch.device("cpu"))
    cpu = torch.device("cpu")
    for repo in v1:
        with pytest.raises(ConfigError):
            build_drafter(_cfg(repo), target, tokenizer, [fh.EOS_ID], cpu, torch.float32)  # main: v2, no weights
        cfg = _cfg(repo, f"drafter.revision={v1[repo]}")
        preflight(cfg)
        drafter = build_drafter(cfg, target, tokenizer, [fh.EOS_ID], cpu, torch.float32)
        assert drafter.describe()["name"] == DRAFTER[repo]


def test_missing_revision_is_named(hub_env):
    from failfast_bench.cli import check_command_line

    message = check_command_line(["target=qwen2.5-7b", "drafter=ar", "drafter.revision=v9", "run.device=cpu", "dataset.num_questions=1"])
    assert f"'{fh.AR_DRAFTER}' at revision 'v9' is not in the local Hugging Face cache" in message
    assert f"hf download {fh.AR_DRAFTER} --revision v9" in message


def test_revision_on_a_local_model_is_refused(hub_env, tmp_path):
    from failfast_bench.cli import check_command_line

    message = check_command_line(["target=qwen2.5-7b", "drafter=ar", f"drafter.model={tmp_path}", "drafter.revision=v1",
                                  "run.device=cpu", "dataset.num_questions=1"])
    assert message == f"drafter.revision=v1 pins a hub id, but drafter.model is the local path {tmp_path}; drop the revision"


def test_manifest_records_models_and_dataset_commits(hub_env, tmp_path, monkeypatch):
    from failfast_bench.cli import compose
    from failfast_bench.data import DataSource
    from failfast_bench.manifest import hub_records

    cfg = compose(["target=qwen2.5-7b", "drafter=ar", "run.device=cpu"])
    records = hub_records(cfg, DataSource("hf", "hf:openai/gsm8k[main]/test", "0" * 64, 5))
    assert records["target"] == {"repo": fh.TARGET_7B, "revision": None, "commit": hub_env.commits[fh.TARGET_7B]}
    assert records["drafter"] == {"repo": fh.AR_DRAFTER, "revision": None, "commit": hub_env.commits[fh.AR_DRAFTER]}
    assert records["dataset"] == {"repo": fh.GSM8K, "config": "main", "revision": None, "commit": hub_env.commits[fh.GSM8K]}
    # A local snapshot directory keeps its commit; a dataset read from a file has no hub record.
    local = compose(["target=qwen2.5-7b", "drafter=ar", f"drafter.model={hub_env.snapshot(fh.AR_DRAFTER)}", "run.device=cpu"])
    records = hub_records(local, DataSource("path", "x.jsonl", "0" * 64, 5))
    assert records["drafter"] == {"path": str(hub_env.snapshot(fh.AR_DRAFTER)), "commit": hub_env.commits[fh.AR_DRAFTER]}
    assert "dataset" not in records


def test_dataset_commit_from_the_datasets_cache(hub_env, tmp_path, monkeypatch):
    """Offline, ``datasets`` reads its own prepared copy, whose directory is named after the hub commit."""
    from datasets import config as datasets_config

    from failfast_bench.cli import compose
    from failfast_bench.manifest import dataset_record

    commit = "ab" * 20
    (tmp_path / "openai___gsm8k" / "main" / "0.0.0" / commit).mkdir(parents=True)
    monkeypatch.setattr(datasets_config, "HF_DATASETS_CACHE", tmp_path)
    ds = compose(["dataset.revision=v2-not-in-hub-cache"]).dataset
    assert dataset_record(ds) == {"repo": fh.GSM8K, "config": "main", "revision": "v2-not-in-hub-cache", "commit": commit}
    pinned = compose([f"dataset.revision={'cd' * 20}"]).dataset
    assert dataset_record(pinned)["commit"] == "cd" * 20
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_dataset_revision_reaches_load_dataset(monkeypatch):
    import datasets

    from failfast_bench import data
    from failfast_bench.cli import compose

    seen = {}

    class Rows:
        def to_list(self):
            return [{"question": q, "answer": a} for q, a in fh.QUESTIONS]

    def load_dataset(*args, **kwargs):
        seen.update(kwargs)
        return Rows()

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    rows, source = data._from_hf(compose(["dataset.revision=v1.0"]).dataset)
    assert source.kind == "hf" and seen.get("revision") == "v1.0"
