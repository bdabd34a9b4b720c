"""Tiny random block-diffusion checkpoints in the two on-disk layouts the drafter loader accepts.

* :func:`write_fast_dllm_checkpoint` mimics ``Efficient-Large-Model/Fast_dLLM_v2_*``: a Qwen2 state dict
  under Qwen2 names, a ``config.json`` with ``model_type: Fast_dLLM_Qwen``, ``bd_size``, ``auto_map`` and
  the legacy ``rope_theta`` field of transformers 4.53, optionally sharded with an index file.
* :func:`write_project_drafter` writes the project's own layout: trunk layers + norm + mask embedding,
  sharing the target's embeddings and LM head.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file
from transformers import AutoModel, Qwen2Config, Qwen2ForCausalLM

from failfast_bench.drafters.blockdiff_model import save_project_drafter


def fast_dllm_config_dict(vocab_size: int = 128, hidden: int = 32, layers: int = 2, tie: bool = True, mask_token_id: Optional[int] = None) -> dict:
    """The fields a Fast-dLLM v2 config.json carries (values scaled down)."""
    config = {
        "architectures": ["Fast_dLLM_QwenForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration.Fast_dLLM_QwenConfig",
            "AutoModel": "modeling.Fast_dLLM_QwenModel",
            "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM",
        },
        "model_type": "Fast_dLLM_Qwen",
        "bd_size": 32,
        "attention_dropout": 0.0,
        "bos_token_id": 151643 % vocab_size,
        "eos_token_id": 151645 % vocab_size,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": hidden * 2,
        "max_position_embeddings": 1024,
        "max_window_layers": layers,
        "num_attention_heads": 4,
        "num_hidden_layers": layers,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": 1024,
        "tie_word_embeddings": tie,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.53.3",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }
    if mask_token_id is not None:
        config["mask_token_id"] = mask_token_id
    return config


def write_fast_dllm_checkpoint(
    directory,
    *,
    vocab_size: int = 128,
    hidden: int = 32,
    layers: int = 2,
    tie: bool = True,
    shards: int = 1,
    mask_token_id: Optional[int] = None,
    seed: int = 0,
    init_range: float = 0.3,
    init_from=None,
) -> tuple[Path, Qwen2ForCausalLM]:
    """Write a tiny random Fast-dLLM-layout checkpoint; return its directory and the reference model.

    ``init_from`` copies a same-shaped Qwen2 model's weights (embedding rows as far as they go), so the
    drafter proposes tokens a target of that model would often accept.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    raw = fast_dllm_config_dict(vocab_size, hidden, layers, tie, mask_token_id)
    torch.manual_seed(seed)
    fields = {k: v for k, v in raw.items() if k not in ("architectures", "auto_map", "model_type", "bd_size", "mask_token_id", "transformers_version")}
    config = Qwen2Config(**{**fields, "initializer_range": init_range})  # peaky random logits
    reference = Qwen2ForCausalLM(config).eval()
    reference.requires_grad_(False)
    if init_from is not None:
        with torch.no_grad():
            source = init_from.state_dict()
            for name, tensor in reference.state_dict().items():
                if name in source and "rotary_emb" not in name:
                    rows = min(tensor.shape[0], source[name].shape[0])
                    tensor[:rows].copy_(source[name][:rows])
    state = {k: v.contiguous() for k, v in reference.state_dict().items() if "rotary_emb" not in k}
    if tie:
        state.pop("lm_head.weight", None)
    keys = sorted(state)
    if shards == 1:
        save_file(state, str(directory / "model.safetensors"))
    else:
        weight_map = {}
        for s in range(shards):
            name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {k: state[k] for k in keys[s::shards]}
            save_file(part, str(directory / name))
            weight_map.update({k: name for k in part})
        (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (directory / "config.json").write_text(json.dumps(raw, indent=2))
    return directory, reference


def write_project_drafter(directory, target, *, layers: int = 2, mask_token_id: Optional[int] = None, seed: int = 0, target_name: str = "tiny",
                          feature_layers: Optional[tuple] = None) -> Path:
    """A random project-layout drafter for ``target`` (mask id past the target's vocabulary by default).

    With ``feature_layers`` it is target-conditioned, with a random nonzero fusion (so the target's
    features really move its drafts)."""
    torch.manual_seed(seed)
    trunk_config = type(target.config).from_dict(target.config.to_dict())
    trunk_config.num_hidden_layers = layers
    trunk_config.layer_types = trunk_config.layer_types[:layers] if getattr(trunk_config, "layer_types", None) else None
    body = AutoModel.from_config(trunk_config).eval()
    mask_embedding = torch.randn(trunk_config.hidden_size) * 0.3
    vocab = int(target.get_input_embeddings().weight.shape[0])
    return save_project_drafter(
        directory,
        body,
        mask_embedding,
        block_size=32,
        mask_token_id=vocab if mask_token_id is None else mask_token_id,
        target=target_name,
        **_conditioning(target, feature_layers, seed),
    )


def _conditioning(target, feature_layers, seed: int) -> dict:
    if not feature_layers:
        return {}
    from failfast_bench.drafters.conditioned_model import FeatureFusion

    hidden = int(target.config.hidden_size)
    torch.manual_seed(seed + 1)
    fusion = FeatureFusion(len(feature_layers) * hidden, hidden)
    with torch.no_grad():
        fusion.fuse.weight.normal_(0.0, 0.3)
    return {"extra_meta": {"feature_layers": list(feature_layers)}, "extra_tensors": fusion.state_for_file()}

