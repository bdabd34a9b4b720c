"""EAGLE-3 head: the published checkpoint layout loads (hand-written tiny checkpoints, EAGLE repo and
SpecForge styles), bad checkpoints fail with one clear line, save/load round-trips, tap conventions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from failfast_bench.config import ConfigError
from failfast_bench.drafters.eagle3_head import (
    HeadKVCache,
    default_tap_layers,
    head_config_from_dict,
    load_head,
    save_head,
    tap_layers,
)

from tiny_models import draft_vocab_maps, eagle3_head_state, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


TAPS = [0, 1, 2]  # output-of-layer ids for a 4-layer tiny target


def write_tiny_eagle3(directory: Path, target, draft_vocab: int = 64, seed: int = 0, weights: str = "safetensors",
                      style: str = "specforge", with_embedding: bool = False, scale: float = 0.3) -> Path:
    """A random head for a tiny target, written by hand with the public tools' key names (not our save code)."""
    tc = target.config
    h, heads, kv = tc.hidden_size, tc.num_attention_heads, tc.num_key_value_heads
    inter = 2 * h
    g = torch.Generator().manual_seed(seed)
    state = eagle3_head_state(h, heads, kv, draft_vocab, g, scale)
    others = [t for t in torch.randperm(tc.vocab_size, generator=g).tolist() if t != tc.eos_token_id]
    state["d2t"], state["t2d"] = draft_vocab_maps(others[: draft_vocab - 1] + [tc.eos_token_id], tc.vocab_size)
    if with_embedding:
        state["embed_tokens.weight"] = target.get_input_embeddings().weight.detach().clone()
    config = {
        "architectures": ["LlamaForCausalLMEagle3"] if style == "specforge" else ["LlamaForCausalLM"],
        "model_type": "llama", "hidden_size": h, "intermediate_size": inter, "num_attention_heads": heads,
        "num_key_value_heads": kv, "num_hidden_layers": 1, "hidden_act": "silu", "rms_norm_eps": 1e-6,
        "max_position_embeddings": 1024, "rope_theta": 10000.0, "rope_scaling": None, "tie_word_embeddings": False,
        "vocab_size": tc.vocab_size, "draft_vocab_size": draft_vocab, "torch_dtype": "float32",
    }
    if style == "specforge":
        config["eagle_config"] = {"eagle_aux_hidden_state_layer_ids": TAPS}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    if weights == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
    else:
        torch.save(state, directory / "pytorch_model.bin")
    return directory


@pytest.fixture(scope="module")
def target():
    return tiny_model("llama", seed=1, layers=4)


@pytest.mark.parametrize("weights,style,with_embedding", [("safetensors", "specforge", False), ("bin", "eagle", True)])
def test_published_layout_loads(tmp_path, target, weights, style, with_embedding):
    path = write_tiny_eagle3(tmp_path / "head", target, weights=weights, style=style, with_embedding=with_embedding)
    head = load_head(str(path), target)
    assert head.draft_vocab_size == 64 and head.lm_head.weight.shape == (64, 48)
    assert head.embed_tokens is target.get_input_embeddings()  # shared, not copied
    assert "embed_tokens.weight" not in head.state_dict()
    # d2t maps every draft id onto a marked target id
    ids = head.to_target_ids(torch.arange(64))
    assert bool(head.t2d[ids].all()) and int(head.t2d.sum()) == 64
    taps = tap_layers(head.config, 4)
    assert taps == ((0, 1, 2) if style == "specforge" else default_tap_layers(4))


def test_head_step_matches_uncached_recompute(tmp_path, target):
    head = load_head(str(write_tiny_eagle3(tmp_path / "h", target)), target)
    feats = torch.randn(1, 7, 3 * 48)
    ids = torch.randint(0, 96, (1, 7))
    pos = torch.arange(7)[None]
    with torch.no_grad():
        full = head.step(head.fuse(feats), ids, pos, HeadKVCache())
        cache = HeadKVCache()
        part = [head.step(head.fuse(feats[:, :4]), ids[:, :4], pos[:, :4], cache)]
        part += [head.step(head.fuse(feats[:, i : i + 1]), ids[:, i : i + 1], pos[:, i : i + 1], cache) for i in range(4, 7)]
    assert torch.allclose(full, torch.cat(part, dim=1), atol=1e-5)
    assert len(cache) == 7
    cache.crop(3)
    assert len(cache) == 3


def test_save_load_roundtrip(tmp_path, target):
    head = load_head(str(write_tiny_eagle3(tmp_path / "a", target)), target)
    save_head(head, tmp_path / "b", dtype=torch.float32, extra={"note": "test"})
    again = load_head(str(tmp_path / "b"), target)
    for (k, v), (k2, v2) in zip(head.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLMEagle3"] and cfg["draft_vocab_size"] == 64
    assert cfg["failfast_bench"] == {"note": "test"} and "rope_theta" in cfg


def test_speculators_key_names_load(tmp_path, target):
    path = write_tiny_eagle3(tmp_path / "s", target)
    from safetensors.torch import load_file, save_file

    state = load_file(str(path / "model.safetensors"))
    save_file({k.replace("midlayer.", "layers.0."): v for k, v in state.items()}, str(path / "model.safetensors"))
    load_head(str(path), target)


def test_bad_checkpoints_fail_clearly(tmp_path, target):
    path = write_tiny_eagle3(tmp_path / "x", target)
    from safetensors.torch import load_file, save_file

    state = load_file(str(path / "model.safetensors"))
    del state["fc.weight"]
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ConfigError, match="missing"):
        load_head(str(path), target)
    other = tiny_model("llama", seed=2, layers=4, hidden=64)
    good = write_tiny_eagle3(tmp_path / "y", target)
    with pytest.raises(ConfigError, match="another target"):
        load_head(str(good), other)
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 48}))
    with pytest.raises(ConfigError, match="not an EAGLE-3 head"):
        load_head(str(tmp_path / "z"), target)
    with pytest.raises(ConfigError, match="does not exist"):
        load_head("/nonexistent/head", target)


def test_tap_conventions():
    base = {"hidden_size": 32, "num_attention_heads": 4, "vocab_size": 100, "draft_vocab_size": 50}
    assert default_tap_layers(32) == (1, 15, 28)  # = inputs of layers 2, 16, 29 (EAGLE repo for Llama-3.1-8B)
    assert tap_layers(head_config_from_dict(base), 32) == (1, 15, 28)
    nested = head_config_from_dict({**base, "eagle_config": {"eagle_aux_hidden_state_layer_ids": [1, 11, 21]}})
    assert tap_layers(nested, 24) == (1, 11, 21)  # SpecForge/SGLang: output-of-layer ids
    top = head_config_from_dict({**base, "eagle_aux_hidden_state_layer_ids": [2, 16, 29]})
    assert tap_layers(top, 32) == (1, 15, 28)  # vLLM speculators: input-of-layer ids
    with pytest.raises(ConfigError):
        tap_layers(nested, 12)


def test_specforge_fc_norm_variant_loads(tmp_path, target):
    path = write_tiny_eagle3(tmp_path / "n", target)
    cfg = json.loads((path / "config.json").read_text())
    cfg["fc_norm"] = True
    (path / "config.json").write_text(json.dumps(cfg))
    from safetensors.torch import load_file, save_file

    state = load_file(str(path / "model.safetensors"))
    state.update({f"fc_norm.{i}.weight": torch.full((48,), 0.5) for i in range(3)})
    save_file(state, str(path / "model.safetensors"))
    head = load_head(str(path), target)
    feats = torch.randn(1, 3, 3 * 48)
    with torch.no_grad():
        out = head.step(head.fuse(feats), torch.tensor([[5, 6, 7]]), torch.arange(3)[None], HeadKVCache())
    assert out.shape == (1, 3, 48) and head.fc_norm is not None
