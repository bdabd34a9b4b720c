"""drafter.dtype: every drafter family can run in bfloat16 next to a float32 target, stays lossless, and never
casts or replaces the target's own embedding and LM head."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModel

from failfast_bench.config import ConfigError, DrafterConfig, validate
from failfast_bench.drafters import build_drafter
from failfast_bench.drafters.shared_trunk import save_shared_trunk_lm
from failfast_bench.engine import first_divergence, generate
from failfast_bench.verify import TargetVerifier

from helpers_blockdiff import write_project_drafter
from test_eagle3_head import write_tiny_eagle3
from tiny_models import EOS, greedy_reference, tiny_config, tiny_model

PROMPT = [1, 40, 41, 42, 43, 44, 45, 46, 47, 7, 9, 14]


def _write(kind: str, target, directory):
    if kind in ("failfast", "dllm"):
        return write_project_drafter(directory, target, seed=3)
    if kind == "eagle3":
        return write_tiny_eagle3(directory, target, draft_vocab=64, seed=3)
    torch.manual_seed(3)
    body = AutoModel.from_config(tiny_config("llama", layers=1))
    return save_shared_trunk_lm(directory, body, target="tiny")


@pytest.mark.parametrize("kind", ["ar", "failfast", "dllm", "eagle3"])
def test_bfloat16_drafter_next_to_float32_target_is_lossless(kind, tmp_path):
    target = tiny_model("llama", seed=2, layers=4 if kind == "eagle3" else 2)
    embed_before, head_before = target.get_input_embeddings(), target.get_output_embeddings()
    directory = _write(kind, target, tmp_path / kind)
    cfg = SimpleNamespace(
        target=SimpleNamespace(name="tiny", drafters={}),
        drafter=DrafterConfig(name=kind, model=str(directory), dtype="bfloat16", theta=0.05, spec_len=4),
    )
    drafter = build_drafter(cfg, target, None, [EOS], torch.device("cpu"), torch.float32)

    own = drafter.head if kind == "eagle3" else getattr(drafter.model, "body", drafter.model)
    assert {p.dtype for p in own.parameters()} == {torch.bfloat16}
    assert target.get_input_embeddings() is embed_before and target.get_output_embeddings() is head_before
    assert {p.dtype for p in target.parameters()} == {torch.float32}
    if kind != "eagle3":  # EAGLE-3 has its own draft-vocabulary head
        head = drafter.model.head
        assert head is not head_before and head.weight.dtype == torch.bfloat16
        torch.testing.assert_close(head.weight.float(), head_before.weight, atol=0.02, rtol=0.01)

    gen = generate(TargetVerifier(target, getattr(drafter, "target_feature_layers", ())), drafter, PROMPT, 40, stop_ids=[EOS])
    ref = greedy_reference(target, PROMPT, 40)
    assert first_divergence(gen.output_tokens, ref) is None and gen.output_tokens[: len(ref)] == ref
    assert sum(r.draft_len for r in gen.rounds) > 0


def test_same_dtype_borrows_the_target_head(tmp_path):
    target = tiny_model("llama", seed=2)
    directory = write_project_drafter(tmp_path / "pj", target, seed=3)
    cfg = SimpleNamespace(target=SimpleNamespace(name="tiny", drafters={}), drafter=DrafterConfig(name="failfast", model=str(directory), dtype="float32"))
    drafter = build_drafter(cfg, target, None, [EOS], torch.device("cpu"), torch.float32)
    assert drafter.model.head is target.get_output_embeddings()


def test_unknown_drafter_dtype_is_refused():
    from failfast_bench.cli import compose

    cfg = compose(["drafter=failfast", "drafter.dtype=float8"])
    with pytest.raises(ConfigError, match="drafter.dtype='float8'; valid: float32, bfloat16, float16, auto"):
        validate(cfg)
