"""Drafter-training recipes on tiny random models: the packed training forward must compute exactly what
the inference code computes, and a few optimisation steps must lower the loss."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from failfast_bench.drafters.blockdiff_model import BlockDiffusionLM, load_block_diffusion_drafter
from failfast_bench.drafters.shared_trunk import load_shared_trunk_lm
from failfast_bench.train.ar_recipe import ArSettings, CausalTrainee, ar_loss, build_ar_batch
from failfast_bench.train.data import Example
from failfast_bench.train.dllm_recipe import BlockDiffusionTrainee, DllmSettings, build_dllm_batch, dllm_loss

from tiny_models import VOCAB, tiny_model

# Hundreds of tiny forwards: one torch thread (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

torch.set_num_threads(1)


def _examples(n: int = 3, seed: int = 0, k: int = 4) -> list[Example]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        prompt = rng.integers(3, VOCAB, size=int(rng.integers(5, 40))).tolist()
        response = rng.integers(3, VOCAB, size=int(rng.integers(20, 70))).tolist()
        lp = np.log(rng.dirichlet(np.ones(k), size=len(response)).astype(np.float32) * 0.9)
        ids = np.stack([rng.choice(VOCAB, size=k, replace=False) for _ in response])
        out.append(Example(i, "math", prompt, response, ids, lp))
    return out


@pytest.fixture(scope="module")
def target():
    return tiny_model(layers=4, seed=1)


def test_dllm_training_forward_matches_inference(target):
    """Every loss row of the packed forward equals the BlockDiffusionLM pass FailFast would run."""
    settings = DllmSettings(block_size=8, sub_block_size=4, noisy_copies=2, far_weight=0.5)
    model = BlockDiffusionTrainee(target, [0, 2], mask_token_id=VOCAB).eval()
    with torch.no_grad():
        model.mask_embedding.normal_()  # something other than the mean embedding
    examples = _examples()
    batch = build_dllm_batch(examples, settings, random.Random(0), VOCAB)
    with torch.no_grad():
        hidden = model.hidden(batch)
        train_logits = model.logits_at(hidden, batch.source_rows).float()
    infer = BlockDiffusionLM(model.body, model.embed, model.head, block_size=8, mask_token_id=VOCAB, mask_embedding=model.mask_embedding.detach())
    width = batch.input_ids.shape[1]
    checked = 0
    for r in range(batch.num_targets):
        row_in_batch, row = divmod(int(batch.source_rows[r]), width)
        ids = batch.input_ids[row_in_batch].tolist()
        position = int(batch.position_ids[row_in_batch, row])
        block_start = position // 8 * 8
        infer.reset()
        ex = examples[row_in_batch]
        seq = ex.prompt_ids + ex.response_ids
        if block_start:
            infer.write_blocks(seq[:block_start])
        if int(batch.offsets[r]) < 0:  # clean block end: the cache-update pass's logit
            expected = infer.write_blocks(seq[block_start: block_start + 8])[0]
        else:
            block = ids[row - (position - block_start): row - (position - block_start) + 8]
            expected = infer.denoise(block, [position - block_start + 1])[0]
        assert torch.allclose(train_logits[r], expected, atol=1e-4), (r, position)
        assert int(batch.labels[r]) == seq[position + 1]
        checked += 1
    assert checked > 20


def test_dllm_noisy_blocks_look_like_failfast_passes(target):
    settings = DllmSettings(block_size=8, sub_block_size=4, noisy_copies=1, aligned_fraction=1.0)
    batch = build_dllm_batch(_examples(1), settings, random.Random(1), VOCAB)
    ids = batch.input_ids[0].tolist()
    # Aligned prefixes: every noisy block masks from a sub-block boundary (or position 1) to its end.
    offsets = batch.offsets[batch.offsets >= 0]
    assert int(offsets.max()) < 4 and int(offsets.min()) == 0
    assert ids.count(VOCAB) > 0


def test_a_long_prompt_keeps_its_end_so_the_response_is_trained_on():
    ex = _examples(1)[0]
    long = Example(0, "chat", list(range(3, 3 + 60)), ex.response_ids, ex.topk_ids, ex.topk_logprobs)
    settings = DllmSettings(block_size=8, sub_block_size=4, noisy_copies=1, max_len=64)
    batch = build_dllm_batch([long], settings, random.Random(0), VOCAB)
    ids = batch.input_ids[0].tolist()
    assert ids[:32] == long.prompt_ids[-32:]  # the prompt's last max_len // 2 tokens, then the response
    assert ids[32:64] == long.response_ids[:32]
    assert batch.num_targets > 0 and int(batch.labels[0]) in long.response_ids


def test_ar_training_forward_matches_inference(target, tmp_path):
    model = CausalTrainee(target, [1, 3]).eval()
    examples = _examples(2)
    batch = build_ar_batch(examples, ArSettings(), random.Random(0), pad_id=0)
    with torch.no_grad():
        logits = model.logits_at(model.hidden(batch), batch.source_rows).float()
    model.export(tmp_path / "ar", "tiny")
    loaded = load_shared_trunk_lm(tmp_path / "ar", target, dtype=torch.float32)
    assert not any(p is target.model.embed_tokens.weight for p in loaded.parameters())
    width = batch.input_ids.shape[1]
    for r in range(0, batch.num_targets, 7):
        b, row = divmod(int(batch.source_rows[r]), width)
        seq = examples[b].prompt_ids + examples[b].response_ids
        with torch.no_grad():
            out = loaded(input_ids=torch.tensor([seq[: row + 1]]), past_key_values=DynamicCache(config=loaded.config), use_cache=True)
        # bf16 export: compare argmax agreement and closeness loosely.
        assert torch.allclose(out.logits[0, -1].float(), logits[r], atol=0.15)


def test_dllm_export_roundtrip(target, tmp_path):
    model = BlockDiffusionTrainee(target, [0, 1], mask_token_id=VOCAB)
    model.export(tmp_path / "dllm", "tiny", block_size=8)
    loaded = load_block_diffusion_drafter(str(tmp_path / "dllm"), target_model=target, dtype=torch.float32)
    assert loaded.block_size == 8 and loaded.mask_token_id == VOCAB
    assert torch.allclose(loaded.mask_embedding.float(), model.mask_embedding.detach().to(torch.bfloat16).float())
    # Warm start (train.init_from): a fresh trainee picks the exported weights up again.
    fresh = BlockDiffusionTrainee(target, [2, 3], mask_token_id=VOCAB)
    fresh.load_exported(tmp_path / "dllm")
    for (name, a), (_, b) in zip(model.body.state_dict().items(), fresh.body.state_dict().items()):
        if "embed_tokens" not in name:
            assert torch.allclose(a.to(torch.bfloat16).float(), b), name
    assert torch.equal(fresh.mask_embedding.detach(), model.mask_embedding.detach().to(torch.bfloat16).float())
    # ... and so does an AR drafter's trunk (the Fast-dLLM v2 path: adapt an AR model to block diffusion).
    ar = CausalTrainee(target, [1, 2])
    ar.export(tmp_path / "ar", "tiny")
    adapted = BlockDiffusionTrainee(target, [0, 1], mask_token_id=VOCAB)
    before = adapted.mask_embedding.detach().clone()
    adapted.load_exported(tmp_path / "ar")
    assert torch.allclose(adapted.body.layers[0].mlp.up_proj.weight, ar.body.layers[0].mlp.up_proj.weight.to(torch.bfloat16).float())
    assert torch.equal(adapted.mask_embedding.detach(), before)


def test_a_deeper_trunk_starts_as_the_shallower_export(target, tmp_path):
    """recipe.num_layers above the export's depth: the export's layers come first and the extra ones start as
    the identity, so step 0 computes exactly what the exported drafter computes; the extra layers still learn."""
    model = BlockDiffusionTrainee(target, [0, 1], mask_token_id=VOCAB).eval()
    model.export(tmp_path / "two", "tiny", block_size=8)
    shallow = BlockDiffusionTrainee(target, [0, 1], mask_token_id=VOCAB).eval()
    shallow.load_exported(tmp_path / "two")
    deep = BlockDiffusionTrainee(target, [0, 1, 2, 3], mask_token_id=VOCAB).eval()
    deep.load_exported(tmp_path / "two")
    settings = DllmSettings(block_size=8, sub_block_size=4, noisy_copies=2)
    batch = build_dllm_batch(_examples(), settings, random.Random(0), VOCAB)
    with torch.no_grad():
        expected = shallow.logits_at(shallow.hidden(batch), batch.source_rows)
        got = deep.logits_at(deep.hidden(batch), batch.source_rows)
    assert torch.allclose(got, expected, atol=1e-5)
    deep.train()
    dllm_loss(deep, batch, settings)["loss"].backward()
    assert deep.body.layers[3].mlp.down_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="does not match this trunk"):  # a shallower trunk than the export
        BlockDiffusionTrainee(target, [0], mask_token_id=VOCAB).load_exported(tmp_path / "two")


@pytest.mark.parametrize("recipe", ["dllm", "ar"])
def test_a_few_steps_lower_the_loss(target, recipe):
    torch.manual_seed(0)
    examples = _examples(4, seed=3)
    if recipe == "dllm":
        model, settings = BlockDiffusionTrainee(target, [0, 1], mask_token_id=VOCAB), DllmSettings(block_size=8, sub_block_size=4)
        make = lambda rng: build_dllm_batch(examples, settings, rng, VOCAB)  # noqa: E731
        step_loss = lambda batch: dllm_loss(model, batch, settings)  # noqa: E731
    else:
        model, settings = CausalTrainee(target, [0, 1]), ArSettings()
        make = lambda rng: build_ar_batch(examples, settings, rng, 0)  # noqa: E731
        step_loss = lambda batch: ar_loss(model, batch, settings)  # noqa: E731
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    fixed = make(random.Random(0))
    first = float(step_loss(fixed)["loss"].detach())
    for step in range(15):
        out = step_loss(make(random.Random(step)))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert float(step_loss(fixed)["loss"].detach()) < first
    assert target.model.embed_tokens.weight.grad is None



def test_conditioned_training_forward_matches_inference(target, tmp_path):
    """The dllm_cond recipe: each loss row equals the conditioned drafter's pass with the target's taps of
    the context known up to the row's frontier; the export loads as that drafter."""
    from failfast_bench.drafters.conditioned_model import ConditionedBlockLM
    from failfast_bench.train.conditioned_recipe import ConditionedTrainee

    settings = DllmSettings(block_size=8, sub_block_size=4, noisy_copies=2)
    model = ConditionedTrainee(target, [0, 2], mask_token_id=VOCAB, feature_layers=(0, 1, 2)).eval()
    with torch.no_grad():
        model.fusion.fuse.weight.normal_(0, 0.3)  # the recipe starts it at zero; any value must match
    examples = _examples()
    batch = build_dllm_batch(examples, settings, random.Random(0), VOCAB, with_features=True)
    with torch.no_grad():
        train_logits = model.logits_at(model.hidden(batch), batch.source_rows).float()
    infer = ConditionedBlockLM(model.body, model.embed, model.head, block_size=8, mask_token_id=VOCAB,
                               mask_embedding=model.mask_embedding.detach(), feature_layers=(0, 1, 2), fusion=model.fusion)
    width = batch.input_ids.shape[1]
    for r in range(batch.num_targets):
        b, row = divmod(int(batch.source_rows[r]), width)
        ex = examples[b]
        seq = ex.prompt_ids + ex.response_ids
        taps = model.taps([seq])[0]
        position = int(batch.position_ids[b, row])
        block_start = position // 8 * 8
        block_rows = range(row - (position - block_start), row - (position - block_start) + 8)
        featured = [int(batch.feature_index[b, i]) for i in block_rows if int(batch.feature_index[b, i]) >= 0]
        known = len(seq) if int(batch.offsets[r]) < 0 else (max(featured) + 1 if featured else block_start - 1)
        infer.reset()
        infer.set_features(taps[:known])
        if block_start:
            infer.write_blocks(seq[:block_start])
        if int(batch.offsets[r]) < 0:
            expected = infer.write_blocks(seq[block_start: block_start + 8])[0]
        else:
            expected = infer.denoise([int(batch.input_ids[b, i]) for i in block_rows], [position - block_start + 1])[0]
        assert torch.allclose(train_logits[r], expected, atol=1e-4), (r, position)
    model.export(tmp_path / "cond", "tiny", block_size=8)
    loaded = load_block_diffusion_drafter(str(tmp_path / "cond"), target_model=target, dtype=torch.float32)
    assert isinstance(loaded, ConditionedBlockLM) and loaded.feature_layers == (0, 1, 2)
    fresh = ConditionedTrainee(target, [0, 2], mask_token_id=VOCAB, feature_layers=(0, 1, 2))
    fresh.load_exported(tmp_path / "cond")
    assert torch.allclose(fresh.fusion.fuse.weight, model.fusion.fuse.weight.to(torch.bfloat16).float())
