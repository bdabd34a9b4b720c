"""The project's small autoregressive drafters: a k-layer decoder trunk that borrows the target's token
embeddings and LM head.

On-disk layout (the same convention as the project's block-diffusion drafters, see
:mod:`.blockdiff_model`): ``config.json`` is a Llama/Qwen2 config with ``num_hidden_layers = k`` plus
``failfast_bench: {kind: "causal", shares_target_embeddings: true, target: <target name>}``;
``model.safetensors`` holds only ``model.layers.*`` and ``model.norm.weight`` (bf16). Shipping only
what differs from the target keeps a drafter a few MB per layer.

:func:`load_shared_trunk_lm` returns a module used exactly like a transformers causal LM for inference
(``model(input_ids=..., past_key_values=DynamicCache, use_cache=True).logits``, ``.config``,
``.parameters()``). The target's embedding and head are held by reference, not registered as
submodules: moving or casting the drafter never touches the target's tables, and ``.parameters()``
lists only the drafter's own weights.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..config import ConfigError

CAUSAL_KIND = "causal"
TRUNK_PREFIX = "model."


def trunk_config(raw: dict):
    """A transformers config for the trunk, from a drafter's ``config.json`` dict."""
    from transformers import AutoConfig

    fields = {k: v for k, v in raw.items() if k not in ("failfast_bench", "architectures", "auto_map", "transformers_version", "_name_or_path")}
    model_type = fields.pop("model_type", None)
    if model_type not in ("llama", "qwen2"):
        raise ConfigError(f"project drafter has model_type={model_type!r}; expected llama or qwen2")
    config = AutoConfig.for_model(model_type, **fields)
    config._attn_implementation = "sdpa"
    return config


def build_trunk(config) -> nn.Module:
    """An empty decoder body (``AutoModel``) for ``config`` without allocating a vocab x hidden table."""
    from transformers import AutoModel
    from transformers.initialization import no_init_weights

    vocab, pad = config.vocab_size, getattr(config, "pad_token_id", None)
    # The body's own embedding is never used (the target's is): a 1-row table, and no padding row in it.
    config.vocab_size, config.pad_token_id = 1, None
    try:
        with no_init_weights():
            body = AutoModel.from_config(config)
    finally:
        config.vocab_size, config.pad_token_id = vocab, pad
    # The unused 1-row table: defined values, never trained.
    body.embed_tokens.weight.data.zero_()
    body.embed_tokens.requires_grad_(False)
    return body


def trunk_state_dict(body: nn.Module, dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    """The tensors a shipped drafter stores: decoder layers and final norm, named ``model.*``."""
    return {
        TRUNK_PREFIX + k: v.detach().to(dtype).contiguous()
        for k, v in body.state_dict().items()
        if not k.startswith("embed_tokens") and "rotary_emb" not in k
    }


def drafter_config_dict(body: nn.Module, meta: dict) -> dict:
    """``config.json`` contents: the trunk's config (full vocabulary size) plus the ``failfast_bench`` block."""
    config = body.config.to_dict()
    for key in ("architectures", "auto_map", "_name_or_path", "torch_dtype", "dtype", "transformers_version"):
        config.pop(key, None)
    config["failfast_bench"] = dict(meta)
    return config


def head_copy(head: nn.Module, dtype, rows: Optional[torch.Tensor] = None, device=None) -> nn.Linear:
    """A frozen copy of an LM head in ``dtype`` (on ``device``, default the head's), keeping only ``rows``
    (output ids) when given."""
    weight, bias = head.weight, getattr(head, "bias", None)
    if rows is not None:
        weight = weight.index_select(0, rows.to(weight.device))
        bias = None if bias is None else bias.index_select(0, rows.to(weight.device))
    copy = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=device or weight.device, dtype=dtype)
    with torch.no_grad():
        copy.weight.copy_(weight)
        if bias is not None:
            copy.bias.copy_(bias)
    copy.requires_grad_(False)
    return copy


def borrowed_head(target_model, dtype, device=None) -> nn.Module:
    """The target's LM head for a drafter computing in ``dtype`` on ``device``: the target's own module when
    both agree, else a frozen copy (vocab x hidden more memory). A bf16 drafter next to a float32 target then
    runs its head at bf16 speed; a drafter on the first GPU of a target spread over several gets a local copy
    of the head, which lives on the last GPU, instead of shipping hidden states across GPUs every pass."""
    head = target_model.get_output_embeddings()
    here = head.weight.device
    device = torch.device(device) if device is not None else here
    # "cuda" without an index means the current GPU, where a single-GPU target's head already is.
    if head.weight.dtype == dtype and device.type == here.type and device.index in (None, here.index):
        return head
    return head_copy(head, dtype, device=device)


def save_shared_trunk_lm(directory, body: nn.Module, target: str, dtype=torch.bfloat16, extra_meta: Optional[dict] = None) -> Path:
    """Write a causal shared-trunk drafter (config.json + model.safetensors) to ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"kind": CAUSAL_KIND, "shares_target_embeddings": True, "target": target, **(extra_meta or {})}
    save_file(trunk_state_dict(body, dtype), str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(drafter_config_dict(body, meta), indent=2, sort_keys=True) + "\n")
    return directory


class SharedTrunkLM(nn.Module):
    """Causal LM = target embedding -> own trunk -> target LM head (the last two by reference)."""

    def __init__(self, body: nn.Module, embed: nn.Module, head: nn.Module):
        super().__init__()
        self.model = body
        # Plain attributes (a tuple hides them from nn.Module registration on purpose, see module doc).
        self._shared = (embed, head)
        self.config = body.config

    @property
    def embed(self) -> nn.Module:
        return self._shared[0]

    @property
    def head(self) -> nn.Module:
        return self._shared[1]

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def get_output_embeddings(self) -> nn.Module:
        return self.head

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        past_key_values: Any = None,
        use_cache: Optional[bool] = None,
        logits_to_keep: int = 0,
        inputs_embeds: Optional[torch.Tensor] = None,
        **kwargs,
    ):
        from transformers.modeling_outputs import CausalLMOutputWithPast

        dtype = next(self.model.parameters()).dtype
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids)
        out = self.model(
            inputs_embeds=inputs_embeds.to(dtype),
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        head_dtype = getattr(self.head, "weight", hidden).dtype
        logits = self.head(hidden.to(head_dtype))
        return CausalLMOutputWithPast(logits=logits, past_key_values=out.past_key_values)


def load_shared_trunk_lm(path, target_model, dtype=torch.float32, device="cpu") -> SharedTrunkLM:
    """Load a shared-trunk causal drafter next to ``target_model`` (frozen, eval mode)."""
    from .weight_files import read_safetensors

    path = Path(path)
    config_file, weights_file = path / "config.json", path / "model.safetensors"
    if not config_file.exists() or not weights_file.exists():
        raise ConfigError(f"{path} is not a shared-trunk drafter: it needs config.json and model.safetensors")
    raw = json.loads(config_file.read_text())
    meta = raw.get("failfast_bench") or {}
    if meta.get("kind", CAUSAL_KIND) != CAUSAL_KIND or not meta.get("shares_target_embeddings"):
        raise ConfigError(f"{path} is not a causal shared-trunk drafter (failfast_bench={meta})")
    if target_model is None:
        raise ConfigError(f"{path} borrows the target's embeddings and LM head: load it with the target model")
    config = trunk_config(raw)
    embed = target_model.get_input_embeddings()
    if embed.weight.shape[1] != config.hidden_size:
        raise ConfigError(
            f"drafter {path} has hidden size {config.hidden_size} but the target's embeddings have {embed.weight.shape[1]}; "
            f"it was trained for target {meta.get('target')!r}"
        )
    body = build_trunk(config)
    state = {k[len(TRUNK_PREFIX):] if k.startswith(TRUNK_PREFIX) else k: v for k, v in read_safetensors(weights_file).items()}
    missing, unexpected = body.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("embed_tokens") and "rotary_emb" not in k]
    if missing or unexpected:
        raise ConfigError(f"{weights_file} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    body.to(device=device, dtype=dtype)
    model = SharedTrunkLM(body, embed, borrowed_head(target_model, dtype, device))
    model.eval()
    model.requires_grad_(False)
    return model
