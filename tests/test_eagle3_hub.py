"""EAGLE-3 heads by hub id: checked against the target's config (they ship no tokenizer), refused with the real cause."""
from __future__ import annotations

import json
import shutil

import pytest

import fake_hub as fh
from failfast_bench.config import ConfigError

BASE = ["target=qwen2.5-7b", "drafter=eagle3", "run.device=cpu", "dataset.num_questions=1"]


def problem(*overrides):
    from failfast_bench.cli import check_command_line

    return check_command_line([*BASE, *overrides])


def test_head_by_hub_id_passes_the_start_up_checks(hub_env):
    assert problem(f"drafter.model={fh.EAGLE3_7B}") is None


def test_head_for_another_target_names_the_hidden_sizes(hub_env):
    message = problem(f"drafter.model={fh.EAGLE3_14B}")
    assert "trained on a target with hidden size 40" in message and "qwen2.5-7b" in message and "hidden size 32" in message
    assert "hub access" not in message.lower()


def test_head_of_another_model_family_names_the_vocabularies(hub_env):
    message = problem(f"drafter.model={fh.EAGLE3_LLAMA}")
    assert "128256-token vocabulary" in message and "152064" in message


def test_head_missing_from_the_offline_cache_says_so(hub_env):
    message = problem("drafter.model=someone/not-downloaded-head")
    assert "not in the local Hugging Face cache" in message and "HF_HUB_OFFLINE=1" in message and "hf download someone/not-downloaded-head" in message


def test_head_whose_maps_disagree_with_its_config(hub_env, tmp_path):
    from failfast_bench.drafters.eagle3_head import check_head_for_target
    from transformers import AutoConfig

    target = AutoConfig.from_pretrained(fh.TARGET_7B)
    head = tmp_path / "head"
    shutil.copytree(hub_env.snapshot(fh.EAGLE3_7B), head)  # follows the snapshot symlinks
    check_head_for_target(str(head), target)
    config = json.loads((head / "config.json").read_text())
    (head / "config.json").write_text(json.dumps({**config, "draft_vocab_size": 1024}))
    with pytest.raises(ConfigError, match=r"d2t has shape \(512,\), its config .* says \(1024,\)"):
        check_head_for_target(str(head), target)
    plain = {k: v for k, v in config.items() if k != "draft_vocab_size"}
    (head / "config.json").write_text(json.dumps({**plain, "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ConfigError, match="is not an EAGLE-3 head"):
        check_head_for_target(str(head), target)


def test_head_checks_never_load_a_tokenizer(hub_env, monkeypatch):
    from failfast_bench import models

    def no_tokenizer(*args, **kwargs):
        raise AssertionError("an EAGLE-3 head has no tokenizer to compare")

    monkeypatch.setattr(models, "load_tokenizer", no_tokenizer)
    assert problem(f"drafter.model={fh.EAGLE3_7B}") is None
