"""The block-diffusion model wrapper and its two checkpoint layouts, on tiny random checkpoints.

Reference computations run the whole sequence in one forward with an explicit block-causal mask
(eager attention, no cache), independently of the cached block passes under test.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from failfast_bench.config import ConfigError
from failfast_bench.drafters.blockdiff_model import (
    FAST_DLLM_MASK_ID,
    block_causal_mask,
    detect_layout,
    load_block_diffusion_drafter,
)

from helpers_blockdiff import fast_dllm_config_dict, write_fast_dllm_checkpoint, write_project_drafter
from tiny_models import tiny_model

B = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def explicit_mask(n: int) -> torch.Tensor:
    """Fast-dLLM v2's eval mask written out by hand: query i may see key j iff i // B >= j // B."""
    mask = torch.full((1, 1, n, n), torch.finfo(torch.float32).min)
    for i in range(n):
        for j in range(n):
            if i // B >= j // B:
                mask[0, 0, i, j] = 0.0
    return mask


def shifted(logits: torch.Tensor, block_start: int) -> torch.Tensor:
    """Token shift of one block: position i is predicted by row i-1 (row 0 by itself)."""
    rows = logits[block_start : block_start + B]
    return torch.cat([rows[:1], rows[:-1]])


def sequence(prefix_len: int, filled: int, vocab: int, mask_id: int, seed: int = 0) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(0, vocab, (prefix_len,), generator=g).tolist()
    block = torch.randint(0, vocab, (filled,), generator=g).tolist() + [mask_id] * (B - filled)
    return prefix, block


@pytest.mark.parametrize("tie,shards", [(True, 1), (True, 3), (False, 2)])
def test_fast_dllm_layout_matches_explicit_mask_reference(tmp_path, tie, shards):
    directory, reference = write_fast_dllm_checkpoint(tmp_path / "fd", vocab_size=128, tie=tie, shards=shards, mask_token_id=120)
    assert not (directory / "modeling.py").exists()  # nothing to trust: stock Qwen2 classes only
    model = load_block_diffusion_drafter(str(directory))
    assert (model.layout, model.block_size, model.mask_token_id, model.vocab_limit) == ("fast_dllm", 32, 120, 128)
    prefix, block = sequence(2 * B, 9, 120, 120)
    boundary = model.write_blocks(prefix)
    assert model.cache_len == 2 * B
    got = model.denoise(block, list(range(B)))
    assert model.cache_len == 2 * B  # the denoised block never stays in the cache

    reference.config._attn_implementation = "eager"
    n = 3 * B
    with torch.inference_mode():
        full = reference(
            input_ids=torch.tensor([prefix + block]), attention_mask=explicit_mask(n), position_ids=torch.arange(n)[None]
        ).logits[0]
    torch.testing.assert_close(got, shifted(full, 2 * B), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(boundary[0], full[2 * B - 1], atol=1e-4, rtol=1e-4)
    # Partial row requests return the same rows; the first two blocks' ends as well.
    torch.testing.assert_close(model.denoise(block, [9, 31]), shifted(full, 2 * B)[[9, 31]], atol=1e-4, rtol=1e-4)
    model.reset()
    ends = model.write_blocks(prefix, every_block_end=True)
    torch.testing.assert_close(ends, full[[B - 1, 2 * B - 1]], atol=1e-4, rtol=1e-4)
    # Block by block (the cache-update path) gives the same cache as one prefill.
    model.reset()
    torch.testing.assert_close(model.write_blocks(prefix[:B])[0], full[B - 1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.write_blocks(prefix[B:])[0], full[2 * B - 1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.denoise(block, list(range(B))), shifted(full, 2 * B), atol=1e-4, rtol=1e-4)
    assert (model.head.weight is model.embed.weight) == tie


def test_cache_update_keeps_the_block_and_crop_rolls_back(tmp_path):
    directory, _ = write_fast_dllm_checkpoint(tmp_path / "fd", mask_token_id=120)
    model = load_block_diffusion_drafter(str(directory))
    prefix, block = sequence(B, B, 120, 120, seed=1)
    model.write_blocks(prefix)
    after_one = model.denoise(block[:5] + [120] * 27, [5, 6])
    model.write_blocks(block)  # the cache update
    assert model.cache_len == 2 * B
    model.crop(B)
    assert model.cache_len == B
    torch.testing.assert_close(model.denoise(block[:5] + [120] * 27, [5, 6]), after_one)
    with pytest.raises(ValueError):
        model.crop(B - 1)
    with pytest.raises(ValueError):
        model.denoise(block[:31], [0])


def test_block_causal_mask_layout():
    mask = block_causal_mask(64, 32, 32, torch.float32, "cpu")
    assert mask.shape == (1, 1, 32, 96) and (mask == 0).all()  # the last block sees everything
    mask = block_causal_mask(0, 64, 32, torch.float32, "cpu")
    assert (mask[0, 0, :32, :32] == 0).all() and (mask[0, 0, :32, 32:] < -1e30).all()
    assert (mask[0, 0, 32:, :] == 0).all()
    torch.testing.assert_close(mask, explicit_mask(64)[:, :, :64, :64])


def test_fast_dllm_mask_id_default_and_override(tmp_path):
    directory, _ = write_fast_dllm_checkpoint(tmp_path / "fd", vocab_size=128)  # no mask_token_id field
    assert "mask_token_id" not in json.loads((directory / "config.json").read_text())
    with pytest.raises(ConfigError, match=str(FAST_DLLM_MASK_ID)):
        load_block_diffusion_drafter(str(directory))  # 151665 is past this tiny table
    assert load_block_diffusion_drafter(str(directory), mask_token_id=127).mask_token_id == 127


def test_detect_layout():
    assert detect_layout(fast_dllm_config_dict()) == "fast_dllm"
    assert detect_layout({"model_type": "llama", "failfast_bench": {"kind": "block_diffusion"}}) == "project"
    with pytest.raises(ConfigError, match="not a block-diffusion drafter"):
        detect_layout({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})


def test_missing_directory_and_hub_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_block_diffusion_drafter(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache .* HF_HUB_OFFLINE=1"):
        load_block_diffusion_drafter("no-such-org/no-such-drafter")  # HF_HUB_OFFLINE=1 in tests


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_project_layout_shares_target_tables(tmp_path, arch):
    target = tiny_model(arch, seed=4)
    rows = target.get_input_embeddings().weight.shape[0]
    directory = write_project_drafter(tmp_path / "pj", target, layers=2, seed=5)
    meta = json.loads((directory / "config.json").read_text())["failfast_bench"]
    assert meta == {"kind": "block_diffusion", "block_size": 32, "mask_token_id": rows, "shares_target_embeddings": True, "target": "tiny"}
    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert all(f.get_tensor(k).dtype == torch.bfloat16 for k in keys)
    assert "mask_embedding" in keys and "model.norm.weight" in keys
    assert not any("embed_tokens" in k or "lm_head" in k for k in keys)
    assert {k.split(".")[2] for k in keys if k.startswith("model.layers.")} == {"0", "1"}

    with pytest.raises(ConfigError, match="with the target model"):
        load_block_diffusion_drafter(str(directory))
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    assert (model.layout, model.mask_token_id, model.vocab_limit) == ("project", rows, rows)
    assert model.embed is target.get_input_embeddings() and target.get_input_embeddings().weight.shape[0] == rows

    prefix, block = sequence(B, 4, rows, rows, seed=2)
    ids = torch.tensor([prefix + block])
    with torch.inference_mode():
        embeds = model.embed_ids(ids)
    torch.testing.assert_close(embeds[0, -1], model.mask_embedding)
    torch.testing.assert_close(embeds[0, 0], target.get_input_embeddings().weight[prefix[0]])

    model.write_blocks(prefix)
    got = model.denoise(block, list(range(B)))
    assert got.shape == (B, rows)
    model.body.config._attn_implementation = "eager"
    with torch.inference_mode():
        hidden = model.body(inputs_embeds=embeds, attention_mask=explicit_mask(2 * B), position_ids=torch.arange(2 * B)[None]).last_hidden_state
        full = target.get_output_embeddings()(hidden)[0]
    torch.testing.assert_close(got, shifted(full, B), atol=1e-4, rtol=1e-4)


def test_project_layout_rejects_a_target_of_another_width(tmp_path):
    directory = write_project_drafter(tmp_path / "pj", tiny_model("llama", seed=4))
    other = tiny_model("llama", seed=4, hidden=64)
    with pytest.raises(ConfigError, match="hidden size"):
        load_block_diffusion_drafter(str(directory), target_model=other)


def test_bfloat16_drafter_next_to_float32_target(tmp_path):
    target = tiny_model("llama", seed=4)
    directory = write_project_drafter(tmp_path / "pj", target)
    model = load_block_diffusion_drafter(str(directory), target_model=target, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and target.get_input_embeddings().weight.dtype == torch.float32
    prefix, block = sequence(B, 3, 96, 96)
    model.write_blocks(prefix)
    out = model.denoise(block, [3, 4])
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
