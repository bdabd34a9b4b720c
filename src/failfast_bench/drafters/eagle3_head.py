"""The EAGLE-3 draft head and its checkpoint format (the layout SpecForge and the EAGLE repo write).

Architecture (EAGLE repo ``eagle/model/cnets.py``, SpecForge ``LlamaForCausalLMEagle3``):

- ``fc``: the target's hidden states from three depths, concatenated (3·H_t), projected to H without bias;
  optional ``fc_norm`` (one RMSNorm per tap, newer SpecForge configs with ``fc_norm: true``);
- ``midlayer``: one Llama decoder layer whose attention reads ``[input_layernorm(token embedding),
  hidden_norm(hidden)]`` (2H wide) and whose residual stream is the (fused) hidden state;
- ``norm`` + ``lm_head`` over a reduced draft vocabulary; ``d2t[d]`` is the offset from draft id ``d`` to its
  target id, ``t2d`` marks the target ids that exist in the draft vocabulary;
- the token embedding is the target's own (frozen) matrix; checkpoints usually omit it.

Row convention: head row ``s`` reads the target features of position ``s`` and the embedding of token
``s + 1`` at rotary position ``s``; its output predicts token ``s + 2``. When drafting past the committed
tokens the head feeds its own (pre-norm) output back in place of the target features, which is what
"training-time test" trains it for.

Tap convention: ``tap_layers`` returns 0-based target layer indices whose *output* is used
(= Hugging Face ``hidden_states[i + 1]``). The EAGLE repo and SGLang read the *input* of layers 2, L/2, L−3,
i.e. the outputs of layers 1, L/2−1, L−4, which is the default here. SpecForge/SGLang configs may pin them as
``eagle_config.eagle_aux_hidden_state_layer_ids`` (same output-of-layer convention); vLLM "speculators"
configs pin a top-level ``eagle_aux_hidden_state_layer_ids`` counted as layer *inputs* (one more).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm, LlamaRotaryEmbedding, apply_rotary_pos_emb

from ..config import ConfigError

ARCHITECTURE = "LlamaForCausalLMEagle3"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Keys a checkpoint may carry that the head does not own (shared with the target or rebuilt at load).
_IGNORED_KEYS = ("embed_tokens.weight", "rotary_emb.inv_freq")

# attend(q, k, v) -> context; q [B, heads, T, d], k/v [B, kv_heads, T, d] (rotary applied, new rows only).
AttendFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------------
# Modules
class Eagle3Attention(nn.Module):
    """Llama attention whose projections read the 2H-wide [embedding, hidden] input."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        width = 2 * config.hidden_size
        bias = bool(getattr(config, "attention_bias", False))
        self.q_proj = nn.Linear(width, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(width, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(width, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        return q, k, v

    def output(self, context: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = context.shape
        return self.o_proj(context.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class Eagle3DecoderLayer(nn.Module):
    """The head's single decoder layer (parameter names as in the EAGLE repo's ``midlayer``)."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.self_attn = Eagle3Attention(config)
        self.mlp = LlamaMLP(config)
        self.hidden_norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, embeds: torch.Tensor, hidden: torch.Tensor, cos, sin, attend: AttendFn) -> torch.Tensor:
        residual = hidden
        x = torch.cat([self.input_layernorm(embeds), self.hidden_norm(hidden)], dim=-1)
        q, k, v = self.self_attn.project(x, cos, sin)
        hidden = residual + self.self_attn.output(attend(q, k, v))
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class HeadKVCache:
    """The head's own KV cache: one layer, rows in order; cropped back to the committed rows each round."""

    def __init__(self):
        self.keys: Optional[torch.Tensor] = None
        self.values: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return 0 if self.keys is None else int(self.keys.shape[2])

    def append(self, k: torch.Tensor, v: torch.Tensor):
        if self.keys is None:
            self.keys, self.values = k, v
        else:
            self.keys = torch.cat([self.keys, k], dim=2)
            self.values = torch.cat([self.values, v], dim=2)
        return self.keys, self.values

    def crop(self, keep: int) -> None:
        if self.keys is not None and keep < len(self):
            self.keys = self.keys[:, :, :keep]
            self.values = self.values[:, :, :keep]


class Eagle3Head(nn.Module):
    """EAGLE-3 draft head. ``embed_tokens`` is attached from the target and is not part of the state dict."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.target_hidden_size = int(getattr(config, "target_hidden_size", None) or hidden)
        self.draft_vocab_size = int(getattr(config, "draft_vocab_size", None) or config.vocab_size)
        self.fc = nn.Linear(3 * self.target_hidden_size, hidden, bias=False)
        if getattr(config, "fc_norm", False):
            self.fc_norm = nn.ModuleList(LlamaRMSNorm(self.target_hidden_size, eps=config.rms_norm_eps) for _ in range(3))
        else:
            self.fc_norm = None
        self.midlayer = Eagle3DecoderLayer(config)
        self.norm = LlamaRMSNorm(hidden, eps=config.rms_norm_eps)
        self.norm_output = bool(getattr(config, "norm_output", True))
        self.lm_head = nn.Linear(hidden, self.draft_vocab_size, bias=False)
        self.rotary_emb = LlamaRotaryEmbedding(config)
        self.register_buffer("d2t", torch.zeros(self.draft_vocab_size, dtype=torch.long))
        self.register_buffer("t2d", torch.ones(config.vocab_size, dtype=torch.bool))

    # -- the frozen embedding lives outside the module tree: never saved, never cast with the head --
    @property
    def embed_tokens(self) -> nn.Module:
        emb = self.__dict__.get("_embed_tokens")
        if emb is None:
            raise RuntimeError("Eagle3Head has no token embedding; call attach_embeddings(target embedding) first")
        return emb

    def attach_embeddings(self, embedding: nn.Module) -> None:
        if embedding.weight.shape[1] != self.config.hidden_size:
            raise ConfigError(
                f"EAGLE-3 head hidden size {self.config.hidden_size} != embedding width {embedding.weight.shape[1]}"
            )
        self.__dict__["_embed_tokens"] = embedding

    # -- computation --------------------------------------------------------------------------------
    def fuse(self, features: torch.Tensor) -> torch.Tensor:
        """Project concatenated target taps [..., 3·H_t] to the head width H."""
        if self.fc_norm is not None:
            features = torch.cat([norm(part) for norm, part in zip(self.fc_norm, features.chunk(3, dim=-1))], dim=-1)
        return self.fc(features)

    def layer(self, hidden: torch.Tensor, input_ids: torch.Tensor, positions: torch.Tensor, attend: AttendFn) -> torch.Tensor:
        """One pass of the decoder layer. ``hidden`` is H wide (fused target features or the head's own output)."""
        embeds = self.embed_tokens(input_ids).to(hidden.dtype)
        cos, sin = self.rotary_emb(hidden, positions)
        return self.midlayer(embeds, hidden, cos, sin, attend)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(hidden) if self.norm_output else hidden)

    def to_target_ids(self, draft_ids: torch.Tensor) -> torch.Tensor:
        return draft_ids + self.d2t[draft_ids]

    def step(
        self,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: HeadKVCache,
        allowed: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Inference pass over new rows (batch 1), appending them to ``cache``; returns the pre-norm output.

        ``hidden`` [1, T, H]: fused target taps (:meth:`fuse`) or the head's own earlier output. ``allowed``
        [T, past+T] is a boolean attention mask (None = causal over the new rows, all cached rows visible).
        """

        def attend(q, k, v):
            past = len(cache)
            keys, values = cache.append(k, v)
            mask = allowed
            if mask is None and q.shape[2] > 1:
                t = q.shape[2]
                mask = torch.ones(t, past + t, dtype=torch.bool, device=q.device).tril(diagonal=past)
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)

        return self.layer(hidden, input_ids, positions, attend)


# ------------------------------------------------------------------------------------------------
# Config and taps
def is_eagle3_config(raw: dict) -> bool:
    archs = [str(a) for a in raw.get("architectures") or []]
    return any("eagle3" in a.lower() for a in archs) or "draft_vocab_size" in raw


def head_config_from_dict(raw: dict) -> LlamaConfig:
    """A LlamaConfig for the head from a checkpoint's config.json (EAGLE repo, SpecForge or speculators)."""
    raw = dict(raw)
    layer_cfg = raw.pop("transformer_layer_config", None)
    if isinstance(layer_cfg, dict):  # vLLM "speculators" layout: layer fields nested, EAGLE fields on top
        raw = {**layer_cfg, **{k: v for k, v in raw.items() if k not in ("architectures", "model_type")}}
    if raw.get("norm_before_residual"):
        raise ConfigError("EAGLE-3 head with norm_before_residual=true is not supported (the residual is the raw fused hidden state here)")
    if int(raw.get("num_hidden_layers", 1)) != 1:
        raise ConfigError(f"EAGLE-3 head config has num_hidden_layers={raw.get('num_hidden_layers')}; only 1 is supported")
    raw["model_type"] = "llama"
    raw.pop("architectures", None)
    return LlamaConfig.from_dict(raw)


def default_tap_layers(num_target_layers: int) -> tuple[int, int, int]:
    """Outputs of layers 1, L/2−1, L−4 (= inputs of layers 2, L/2, L−3 as in the EAGLE repo and SGLang)."""
    n = num_target_layers
    return (1, n // 2 - 1, n - 4)


def tap_layers(config: Any, num_target_layers: int) -> tuple[int, ...]:
    """Target layers (0-based, output-of-layer) whose hidden states the head reads; see the module doc."""
    nested = getattr(config, "eagle_config", None) or {}
    ids = nested.get("eagle_aux_hidden_state_layer_ids") if isinstance(nested, dict) else None
    if ids is not None:
        layers = tuple(int(i) for i in ids)
    elif getattr(config, "eagle_aux_hidden_state_layer_ids", None) is not None:
        layers = tuple(int(i) - 1 for i in config.eagle_aux_hidden_state_layer_ids)
    else:
        layers = default_tap_layers(num_target_layers)
    if len(layers) != 3 or any(i < 0 or i >= num_target_layers for i in layers):
        raise ConfigError(f"EAGLE-3 tap layers {layers} are not three layers of a {num_target_layers}-layer target")
    return layers


def new_head_config(target_config: Any, draft_vocab_size: int, taps: Optional[Sequence[int]] = None, **overrides) -> LlamaConfig:
    """A head config shaped like the target (as SpecForge's per-target JSONs are), for training from scratch."""
    rope = dict(getattr(target_config, "rope_parameters", None) or {"rope_type": "default", "rope_theta": getattr(target_config, "rope_theta", 10000.0)})
    fields = dict(
        hidden_size=target_config.hidden_size,
        intermediate_size=target_config.intermediate_size,
        num_attention_heads=target_config.num_attention_heads,
        num_key_value_heads=target_config.num_key_value_heads,
        head_dim=getattr(target_config, "head_dim", None) or target_config.hidden_size // target_config.num_attention_heads,
        num_hidden_layers=1,
        hidden_act=getattr(target_config, "hidden_act", "silu"),
        rms_norm_eps=target_config.rms_norm_eps,
        max_position_embeddings=target_config.max_position_embeddings,
        vocab_size=target_config.vocab_size,
        rope_parameters=rope,
        bos_token_id=getattr(target_config, "bos_token_id", None),
        eos_token_id=getattr(target_config, "eos_token_id", None),
        pad_token_id=getattr(target_config, "pad_token_id", None),
        tie_word_embeddings=False,
    )
    fields.update(overrides)
    cfg = LlamaConfig(**fields)
    cfg.draft_vocab_size = int(draft_vocab_size)
    if taps is not None:
        cfg.eagle_config = {"eagle_aux_hidden_state_layer_ids": [int(i) for i in taps]}
    return cfg


def config_to_json_dict(config: LlamaConfig, dtype: torch.dtype) -> dict:
    """config.json in the layout SGLang/vLLM/SpecForge read (legacy ``rope_theta``/``rope_scaling`` keys)."""
    rope = dict(config.rope_parameters or {})
    theta = rope.pop("rope_theta", 10000.0)
    rope_type = rope.get("rope_type", "default")
    out = {
        "architectures": [ARCHITECTURE],
        "model_type": "llama",
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "num_hidden_layers": 1,
        "hidden_act": config.hidden_act,
        "rms_norm_eps": config.rms_norm_eps,
        "max_position_embeddings": config.max_position_embeddings,
        "rope_theta": theta,
        "rope_scaling": None if rope_type == "default" else rope,
        "attention_bias": bool(getattr(config, "attention_bias", False)),
        "mlp_bias": bool(getattr(config, "mlp_bias", False)),
        "tie_word_embeddings": False,
        "vocab_size": config.vocab_size,
        "draft_vocab_size": int(getattr(config, "draft_vocab_size", config.vocab_size)),
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "torch_dtype": str(dtype).replace("torch.", ""),
        "use_cache": True,
    }
    for key in ("eagle_config", "target_hidden_size", "fc_norm", "norm_output"):
        if getattr(config, key, None) is not None:
            out[key] = getattr(config, key)
    return out


# ------------------------------------------------------------------------------------------------
# Checkpoint I/O
def resolve_head_dir(model_ref: str, revision: Optional[str] = None) -> Path:
    """A local directory, or a hub id fetched into (or found in) the HF cache; one clear line when it cannot be."""
    from ..models import resolve_source

    src = resolve_source(model_ref, revision=revision)
    if src.is_local:
        path = Path(src.path)
        if not (path / "config.json").exists():
            raise ConfigError(f"EAGLE-3 head directory {path} has no config.json")
        return path
    try:
        from huggingface_hub import snapshot_download

        # Heads ship config + weights only (SpecForge writes no tokenizer: the head uses the target's).
        return Path(snapshot_download(model_ref, revision=revision, allow_patterns=["*.json", "*.safetensors", "*.bin"]))
    except Exception as exc:  # noqa: BLE001 - turned into one clear line
        from ..hub import explain

        raise ConfigError(explain(model_ref, exc, "EAGLE-3 head", revision)) from exc


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        path = directory / name
        if path.exists():
            if name.endswith(".safetensors"):
                from .weight_files import read_safetensors

                return read_safetensors(path)
            return torch.load(str(path), map_location="cpu", weights_only=True)
    index = directory / "model.safetensors.index.json"
    if index.exists():
        from .weight_files import read_safetensors

        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(read_safetensors(directory / f))
        return state
    raise ConfigError(f"EAGLE-3 head directory {directory} has no weights ({' or '.join(WEIGHT_FILES)})")


def _canonical_key(key: str) -> str:
    for prefix in ("model.", "draft_model."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    if key.startswith("layers.0."):  # speculators / vLLM naming of the single layer
        key = "midlayer." + key[len("layers.0."):]
    return key


def load_head_state(head: Eagle3Head, state: dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
    """Load checkpoint tensors into ``head``; returns the checkpoint's own embedding matrix if it has one."""
    state = {_canonical_key(k): v for k, v in state.items()}
    embedding = state.pop("embed_tokens.weight", None)
    for key in _IGNORED_KEYS:
        state.pop(key, None)
    own = head.state_dict()
    if "d2t" not in state:
        if head.draft_vocab_size != head.config.vocab_size:
            raise ConfigError("EAGLE-3 checkpoint has a reduced draft vocabulary but no d2t mapping")
        state["d2t"] = torch.zeros(head.draft_vocab_size, dtype=torch.long)
    if "t2d" not in state:
        state["t2d"] = torch.zeros(head.config.vocab_size, dtype=torch.bool)
        state["t2d"][head.to_target_ids(torch.arange(head.draft_vocab_size)).clamp(max=head.config.vocab_size - 1)] = True
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConfigError(f"EAGLE-3 checkpoint does not match the head layout: missing {missing[:6]}, unexpected {unexpected[:6]}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise ConfigError(f"EAGLE-3 checkpoint tensor {key} has shape {tuple(tensor.shape)}, config says {tuple(own[key].shape)}")
    state["d2t"] = state["d2t"].long()
    state["t2d"] = state["t2d"].bool()
    head.load_state_dict(state, strict=True)
    return embedding


def save_head(head: Eagle3Head, directory: Path, dtype: torch.dtype = torch.bfloat16, extra: Optional[dict] = None) -> None:
    """Write config.json + model.safetensors (weights in ``dtype``, vocab maps as int64/bool; no embedding)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, tensor in head.state_dict().items():
        tensor = tensor.detach().cpu()
        state[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors.tmp"), metadata={"format": "pt"})
    os.chmod(directory / "model.safetensors.tmp", 0o644)
    (directory / "model.safetensors.tmp").replace(directory / "model.safetensors")
    cfg = config_to_json_dict(head.config, dtype)
    if extra:
        cfg["failfast_bench"] = extra
    tmp = directory / "config.json.tmp"
    tmp.write_text(json.dumps(cfg, indent=2) + "\n")
    tmp.replace(directory / "config.json")


def load_head(model_ref: str, target_model, dtype: Optional[torch.dtype] = None, device=None, revision: Optional[str] = None) -> Eagle3Head:
    """Load an EAGLE-3 head (hub id or directory) next to an already-loaded target and check they fit."""
    directory = resolve_head_dir(model_ref, revision)
    raw = json.loads((directory / "config.json").read_text())
    if not is_eagle3_config(raw):
        raise ConfigError(f"{model_ref} is not an EAGLE-3 head (config.json has neither an Eagle3 architecture nor draft_vocab_size)")
    config = head_config_from_dict(raw)
    head = Eagle3Head(config)
    own_embedding = load_head_state(head, read_state_dict(directory))
    target_param = next(target_model.parameters())
    dtype = dtype or target_param.dtype
    device = device or target_param.device
    head.to(device=device, dtype=dtype)
    check_fits_target(head, target_model)
    target_embedding = target_model.get_input_embeddings()
    if target_embedding.weight.shape[1] == config.hidden_size:
        head.attach_embeddings(target_embedding)
    elif own_embedding is not None:  # a head narrower than its target keeps its own embedding (SGLang does too)
        emb = nn.Embedding.from_pretrained(own_embedding.to(device=device, dtype=dtype), freeze=True)
        head.attach_embeddings(emb)
    else:
        raise ConfigError(f"EAGLE-3 head width {config.hidden_size} differs from the target's and the checkpoint ships no embedding")
    head.eval()
    head.requires_grad_(False)
    return head


def check_fits_target(head: Eagle3Head, target_model) -> None:
    tcfg = target_model.config
    if head.target_hidden_size != tcfg.hidden_size:
        raise ConfigError(
            f"EAGLE-3 head expects target hidden size {head.target_hidden_size} (fc reads 3x{head.target_hidden_size}), "
            f"target has {tcfg.hidden_size}: this head belongs to another target"
        )
    n_target_vocab = target_model.get_input_embeddings().weight.shape[0]
    max_id = int(head.to_target_ids(torch.arange(head.draft_vocab_size, device=head.d2t.device)).max())
    if max_id >= n_target_vocab:
        raise ConfigError(f"EAGLE-3 head maps draft ids up to target id {max_id}, but the target vocabulary has {n_target_vocab} rows")


# ------------------------------------------------------------------------------------------------
# Preflight: a head checked against the target's config, before any weights load
def check_head_for_target(model_ref: str, target_config: Any, revision: Optional[str] = None, target_label: str = "the target") -> None:
    """Refuse a head that cannot draft for this target, reading only its config.json and weight-file headers.

    EAGLE-3 heads ship no tokenizer (they draft in the target's token ids), so what must match is the target's
    hidden size (the fc reads three of its layers), its vocabulary (the space d2t maps into) and its depth
    (the tap layers); the draft-vocabulary maps must agree with the head's own config.
    """
    directory = resolve_head_dir(model_ref, revision)
    raw = json.loads((directory / "config.json").read_text())
    if not is_eagle3_config(raw):
        raise ConfigError(f"drafter.model={model_ref} is not an EAGLE-3 head: its config.json has neither an Eagle3 architecture nor draft_vocab_size")
    config = head_config_from_dict(raw)
    expects = int(getattr(config, "target_hidden_size", None) or config.hidden_size)
    if expects != int(target_config.hidden_size):
        raise ConfigError(
            f"EAGLE-3 head {model_ref} was trained on a target with hidden size {expects} (its fc reads 3x{expects}); "
            f"{target_label} has hidden size {target_config.hidden_size}: use the head trained for this target"
        )
    if int(config.vocab_size) != int(target_config.vocab_size):
        raise ConfigError(
            f"EAGLE-3 head {model_ref} drafts into a {config.vocab_size}-token vocabulary; {target_label} has "
            f"{target_config.vocab_size}: the head was trained for another model family"
        )
    tap_layers(config, int(target_config.num_hidden_layers))
    draft = int(getattr(config, "draft_vocab_size", None) or config.vocab_size)
    shapes = checkpoint_shapes(directory)
    expected = {"d2t": (draft,), "t2d": (int(config.vocab_size),), "lm_head.weight": (draft, int(config.hidden_size))}
    for key, want in expected.items():
        got = shapes.get(key)
        if got is not None and got != want:
            raise ConfigError(
                f"EAGLE-3 head {model_ref}: {key} has shape {got}, its config (draft_vocab_size={draft}, vocab_size={config.vocab_size}) "
                f"says {want}; the checkpoint and its config.json do not belong together"
            )
    if shapes and "d2t" not in shapes and draft != config.vocab_size:
        raise ConfigError(f"EAGLE-3 head {model_ref} has a reduced draft vocabulary ({draft}) but no d2t map in its weights")
    if "d2t" in shapes:
        d2t = read_tensor(directory, "d2t")
        top = int((torch.arange(d2t.numel()) + d2t.long()).max())
        if top >= int(target_config.vocab_size):
            raise ConfigError(f"EAGLE-3 head {model_ref} maps draft ids up to target id {top}, past {target_label}'s vocabulary ({target_config.vocab_size})")


def _weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        return [directory / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [directory / "model.safetensors"] if (directory / "model.safetensors").exists() else []


def checkpoint_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes by canonical key, from the safetensors headers only ({} for ``.bin`` checkpoints)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for path in _weight_files(Path(directory)):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                shapes[_canonical_key(name)] = tuple(handle.get_slice(name).get_shape())
    return shapes


def read_tensor(directory: Path, key: str) -> torch.Tensor:
    """One (small) tensor by canonical key, without reading the rest of the checkpoint."""
    from safetensors import safe_open

    for path in _weight_files(Path(directory)):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                if _canonical_key(name) == key:
                    return handle.get_tensor(name)
    raise KeyError(key)
