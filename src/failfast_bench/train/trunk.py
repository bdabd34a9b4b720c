"""A drafter trunk initialised from the target: copies of some of its decoder layers and its final norm.

Both recipes train such a trunk; the token embedding and the (tied) LM head stay the target's, frozen
and shared, so a shipped drafter stores only the trunk (see :mod:`failfast_bench.drafters.shared_trunk`).
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch
from torch import nn

from ..drafters.shared_trunk import build_trunk


def target_decoder(target_model) -> nn.Module:
    """The decoder body (``model.model`` for Llama/Qwen2 causal LMs)."""
    body = getattr(target_model, "model", None)
    if body is None or not hasattr(body, "layers"):
        raise ValueError(f"{type(target_model).__name__} has no .model.layers; only Llama/Qwen2-style targets are supported")
    return body


def resolve_layers(spec: Optional[Sequence[int]], num_layers: int, target_layers: int) -> list[int]:
    """Which target layers initialise the trunk: ``spec`` (negative = from the end), else the first k."""
    if spec is None or len(spec) == 0:
        if not 1 <= num_layers <= target_layers:
            raise ValueError(f"trunk num_layers={num_layers} must be in 1..{target_layers} (the target's depth)")
        return list(range(num_layers))
    layers = [int(i) % target_layers if -target_layers <= int(i) < target_layers else int(i) for i in spec]
    bad = [i for i in layers if not 0 <= i < target_layers]
    if bad:
        raise ValueError(f"trunk init_layers {bad} outside the target's 0..{target_layers - 1}")
    return layers


def trunk_from_target(target_model, layers: Sequence[int]) -> nn.Module:
    """A fresh trunk (``AutoModel`` body without its own embedding) holding copies of ``layers``."""
    source = target_decoder(target_model)
    config = copy.deepcopy(target_model.config)
    config.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in layers]
    for key in ("_name_or_path", "output_hidden_states"):
        if hasattr(config, key):
            setattr(config, key, "" if key == "_name_or_path" else False)
    # A trunk has no embedding table of its own, hence no padding row (loaders that build the body with a
    # 1-row table would reject pad_token_id >= 1).
    config.pad_token_id = None
    config._attn_implementation = "sdpa"
    body = build_trunk(config)
    for j, i in enumerate(layers):
        body.layers[j].load_state_dict(source.layers[i].state_dict())
    body.norm.load_state_dict(source.norm.state_dict())
    body.to(torch.float32)
    body.train()
    return body


def shared_tables(target_model) -> tuple[nn.Module, nn.Module]:
    """The target's embedding and LM head, frozen (they are shared, never trained)."""
    embed, head = target_model.get_input_embeddings(), target_model.get_output_embeddings()
    embed.requires_grad_(False)
    head.requires_grad_(False)
    return embed, head


def load_exported_trunk(body: nn.Module, directory) -> dict[str, torch.Tensor]:
    """Copy a shipped/exported drafter's trunk weights into ``body``; returns the other tensors it holds.

    Lets a run start from a committed drafter (a warm start with a fresh optimizer) when its checkpoint is
    gone, e.g. on another machine. A trunk deeper than the export keeps the export's layers first and starts
    its extra layers as the identity (:func:`_zero_residual_outputs`).
    """
    from pathlib import Path

    from ..drafters.weight_files import read_safetensors

    state = read_safetensors(Path(directory) / "model.safetensors")
    trunk = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    exported = 1 + max((int(k.split(".")[1]) for k in trunk if k.startswith("layers.")), default=-1)
    missing, unexpected = body.load_state_dict({k: v.float() for k, v in trunk.items()}, strict=False)
    grown = range(exported, len(body.layers)) if 0 < exported < len(body.layers) else range(0)
    missing = [k for k in missing if not k.startswith("embed_tokens") and "rotary_emb" not in k
               and not (k.startswith("layers.") and int(k.split(".")[1]) in grown)]
    if missing or unexpected:
        raise ValueError(f"{directory} does not match this trunk (missing {missing[:3]}, unexpected {unexpected[:3]}); check recipe.num_layers")
    for i in grown:
        _zero_residual_outputs(body.layers[i])
    return {k: v for k, v in state.items() if not k.startswith("model.")}


def _zero_residual_outputs(layer: nn.Module) -> None:
    """Make a decoder layer the identity: zero the projections that write into the residual stream.

    A deeper trunk warm-started from a shallower export appends such layers (still copies of target layers
    otherwise), so its step 0 is exactly the exported drafter and the new depth is learned from there.
    """
    outputs = [m for name, m in layer.named_modules() if name.rsplit(".", 1)[-1] in ("o_proj", "down_proj")]
    if len(outputs) != 2:
        raise ValueError(f"cannot grow this trunk: a {type(layer).__name__} has no o_proj/down_proj pair to zero")
    with torch.no_grad():
        for module in outputs:
            module.weight.zero_()
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
