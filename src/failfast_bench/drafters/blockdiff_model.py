"""Block-diffusion language model (Fast-dLLM v2 style) on top of a stock transformers decoder.

Geometry. Positions are cut into blocks of ``block_size`` (B = 32). Attention is bidirectional inside a
block and causal across blocks: a query in block k sees every key in blocks 0..k (Fast-dLLM v2's eval
mask ``block(q) >= block(kv)``). Completed blocks live in a KV cache; the block being denoised is run on
top of that cache and never stays in it. Logits use a one-position token shift: the prediction for
block position i is the output row at i-1 (row 0 predicts itself, as in the public generation code,
though the drafter never leaves block position 0 masked).

:class:`BlockDiffusionLM` is the only thing the drafting algorithm talks to:

* ``write_blocks(tokens)`` runs whole blocks at the cache end with the block-causal mask and keeps them
  in the cache (the drafter's "prefill" and "cache update" passes); it returns logits at block ends,
  which predict the first token of the following block;
* ``denoise(block_tokens, rows)`` runs the current (partly masked) block over the cache, drops its KV
  again, and returns the shifted logits of the requested block positions;
* ``crop(keep)`` / ``reset()`` roll the block cache back.

Two on-disk layouts load into it (:func:`load_block_diffusion_drafter` tells them apart):

* **Fast-dLLM v2** (``Efficient-Large-Model/Fast_dLLM_v2_1.5B`` / ``_7B``): a Qwen2 checkpoint whose
  ``config.json`` says ``model_type: Fast_dLLM_Qwen`` and carries ``bd_size``; parameter names are
  Qwen2's (``model.embed_tokens``, ``model.layers.N.self_attn.q_proj`` ..., ``model.norm``,
  ``lm_head``). It is loaded into :class:`transformers.Qwen2ForCausalLM` without remote code. The mask
  id is ``mask_token_id`` from the config when present, else 151665 (the public generation code's
  default; it sits in the padded embedding rows past the Qwen2.5 tokenizer).
* **Project drafter**: ``config.json`` = a Llama/Qwen2 trunk config (``num_hidden_layers`` = k) plus
  ``failfast_bench: {kind: block_diffusion, block_size, mask_token_id, shares_target_embeddings: true,
  target}``; ``model.safetensors`` holds only ``model.layers.*``, ``model.norm.weight`` and a learned
  ``mask_embedding`` vector. Token embeddings and the LM head are borrowed from the target at load
  time, so the mask id may lie past the target's vocabulary (49152 for SmolLM2): its embedding comes
  from ``mask_embedding`` and the target's tables are never resized. :func:`save_project_drafter`
  writes this layout.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..config import ConfigError

FAST_DLLM_MASK_ID = 151665  # default of the public Fast-dLLM v2 generation code
FAST_DLLM_STOP_ID = 151645  # <|im_end|> of Qwen2.5; the target's eos, passed in as a stop id
PROJECT_KIND = "block_diffusion"
MASK_EMBEDDING_KEY = "mask_embedding"
_FAST_DLLM_ARCH = "Fast_dLLM_QwenForCausalLM"
_FAST_DLLM_TYPE = "Fast_dLLM_Qwen"
# Fields of a Fast-dLLM config that are not Qwen2Config fields (or that would mislead it).
_FAST_DLLM_ONLY_FIELDS = ("architectures", "auto_map", "model_type", "bd_size", "mask_token_id", "transformers_version")


def block_causal_mask(q_start: int, q_len: int, block_size: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Additive 4D mask (1, 1, q_len, q_start + q_len): 0 where block(query) >= block(key), else -inf-ish.

    Works for sdpa and eager attention alike (eager adds the mask to the scores)."""
    q = torch.arange(q_start, q_start + q_len, device=device) // block_size
    k = torch.arange(q_start + q_len, device=device) // block_size
    allowed = q[:, None] >= k[None, :]
    mask = torch.zeros(q_len, q_start + q_len, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


class BlockDiffusionLM:
    """A decoder body + token embedding + LM head driven as a block-diffusion model.

    Not an ``nn.Module`` on purpose: in the project layout the embedding and head belong to the target,
    and moving this object between dtypes/devices must never touch the target's tables.
    """

    def __init__(
        self,
        body: nn.Module,
        embed: nn.Module,
        head: nn.Module,
        *,
        block_size: int,
        mask_token_id: int,
        mask_embedding: Optional[torch.Tensor] = None,
        vocab_limit: Optional[int] = None,
        layout: str = "custom",
        source: str = "",
    ):
        from transformers import DynamicCache

        self.body = body  # the loaders put it in eval mode; a trainer may hand in its live trunk
        self.embed = embed
        self.head = head
        self.block_size = int(block_size)
        self.mask_token_id = int(mask_token_id)
        self.mask_embedding = mask_embedding
        self.layout = layout
        self.source = source
        head_rows = int(head.weight.shape[0]) if hasattr(head, "weight") else None
        # Ids a draft may contain: never the mask id, never past the head or the verifier's vocabulary.
        limits = [int(x) for x in (vocab_limit, head_rows) if x is not None]
        self.vocab_limit = min(limits) if limits else None
        self.vocab_ids: Optional[torch.Tensor] = None  # set by restrict_vocab: head row r proposes vocab_ids[r]
        self._cache_factory = lambda: DynamicCache(config=self.body.config)
        self.cache = self._cache_factory()
        param = next(self.body.parameters())
        self.device, self.dtype = param.device, param.dtype
        embed_rows = int(embed.weight.shape[0]) if hasattr(embed, "weight") else None
        if mask_embedding is None and embed_rows is not None and self.mask_token_id >= embed_rows:
            raise ConfigError(
                f"mask id {self.mask_token_id} is outside the embedding table ({embed_rows} rows) and the drafter "
                f"has no learned mask_embedding"
            )

    def restrict_vocab(self, token_ids: Sequence[int]) -> None:
        """Propose only ``token_ids`` (a draft vocabulary): the head keeps just those rows, in the drafter's
        dtype; logits rows then index ``vocab_ids``. The mask id and ids past ``vocab_limit`` are refused."""
        ids = sorted(set(int(t) for t in token_ids))
        bad = [t for t in ids if t < 0 or t == self.mask_token_id or (self.vocab_limit is not None and t >= self.vocab_limit)]
        if bad:
            raise ConfigError(f"draft vocabulary holds ids the drafter may not propose (mask id or past the vocabulary): {bad[:5]}")
        from .shared_trunk import head_copy

        index = torch.tensor(ids, dtype=torch.long, device=self.head.weight.device)
        self.head, self.vocab_ids = head_copy(self.head, self.dtype, index), index

    def twin(self) -> "BlockDiffusionLM":
        """Another handle on the same weights with its own, empty block cache."""
        twin = BlockDiffusionLM(
            self.body,
            self.embed,
            self.head,
            block_size=self.block_size,
            mask_token_id=self.mask_token_id,
            mask_embedding=self.mask_embedding,
            vocab_limit=self.vocab_limit,
            layout=self.layout,
            source=self.source,
        )
        twin.vocab_ids, twin.vocab_limit = self.vocab_ids, self.vocab_limit  # a restricted head has fewer rows than ids
        return twin

    # -- cache -----------------------------------------------------------------------------------
    @property
    def cache_len(self) -> int:
        return int(self.cache.get_seq_length())

    def reset(self) -> None:
        self.cache = self._cache_factory()

    def crop(self, keep: int) -> None:
        """Keep the first ``keep`` cached positions (a multiple of the block size)."""
        if keep % self.block_size:
            raise ValueError(f"block cache can only be cropped to a block boundary, got {keep}")
        drop = self.cache_len - keep
        if keep == 0:
            self.reset()
        elif drop > 0:
            self.cache.crop(-drop)

    # -- forward pieces --------------------------------------------------------------------------
    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        if self.mask_embedding is None:
            out = self.embed(ids)
        else:
            is_mask = ids == self.mask_token_id
            out = self.embed(ids.masked_fill(is_mask, 0)).to(self.dtype)
            out = torch.where(is_mask[..., None], self.mask_embedding.to(out.dtype), out)
        return out.to(self.dtype)

    def _input_embeds(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        """Input rows for ``ids`` [rows, n] placed at positions start .. start+n-1 (a conditioned drafter adds
        the target's features here)."""
        return self.embed_ids(ids)

    def _run(self, tokens: Sequence[int], mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Run ``tokens`` at the cache end (KV appended to the cache); return final hidden states [n, H].

        ``mask=None`` means every query sees every key (a block over the cache of earlier blocks). That
        case runs without a mask, as a bidirectional decoder: sdpa then takes grouped KV heads as they
        are instead of copying the whole cache once per query group, which keeps a pass's cost from
        growing with the context beyond the attention itself.
        """
        return self._run_batch([tokens], mask, self.cache, self.cache_len)[0]

    def _run_batch(self, rows: Sequence[Sequence[int]], mask: Optional[torch.Tensor], cache, start: int) -> torch.Tensor:
        """Run equally long token rows at positions [start, start + n) over ``cache``; hidden states [rows, n, H]."""
        ids = torch.tensor([list(r) for r in rows], dtype=torch.long, device=self.device)
        positions = torch.arange(start, start + ids.shape[1], device=self.device)[None].expand(ids.shape[0], -1)
        kwargs = dict(inputs_embeds=self._input_embeds(ids, start), position_ids=positions, past_key_values=cache, use_cache=True)
        if mask is not None:
            return self.body(attention_mask=mask, **kwargs).last_hidden_state
        config = self.body.config
        was_causal = getattr(config, "is_causal", True)
        config.is_causal = False  # transformers builds no causal mask for a non-causal decoder config
        try:
            return self.body(attention_mask=None, is_causal=False, **kwargs).last_hidden_state
        finally:
            config.is_causal = was_causal

    def _logits(self, hidden_rows: torch.Tensor) -> torch.Tensor:
        weight = getattr(self.head, "weight", None)
        hidden_rows = hidden_rows.to(weight.dtype) if weight is not None else hidden_rows
        return self.head(hidden_rows).float()

    @torch.inference_mode()
    def write_blocks(self, tokens: Sequence[int], every_block_end: bool = False) -> torch.Tensor:
        """Append whole blocks to the cache (block-causal attention among them, full attention to the cache).

        Returns float logits at the last position of the final block ([1, V]), or of every block
        ([n_blocks, V]) with ``every_block_end``: row j predicts the token after block j.
        """
        start, n, bsz = self.cache_len, len(tokens), self.block_size
        if start % bsz or n % bsz or n == 0:
            raise ValueError(f"write_blocks needs whole blocks at a block boundary (cache {start}, tokens {n})")
        # One block on top of the cache needs no mask; several need block-causal attention among them.
        mask = None if n == bsz else block_causal_mask(start, n, bsz, self.dtype, self.device)
        hidden = self._run(tokens, mask)
        rows = torch.arange(bsz - 1, n, bsz, device=self.device) if every_block_end else torch.tensor([n - 1], device=self.device)
        return self._logits(hidden.index_select(0, rows))

    @torch.inference_mode()
    def denoise(self, block_tokens: Sequence[int], rows: Sequence[int]) -> torch.Tensor:
        """One denoising pass over the current block at the cache end; the cache is left as it was.

        ``rows`` are block positions; returns float logits [len(rows), V], row r predicting position
        ``rows[r]`` (token shift applied).
        """
        start, bsz = self.cache_len, self.block_size
        if start % bsz or len(block_tokens) != bsz:
            raise ValueError(f"denoise needs one whole block at a block boundary (cache {start}, tokens {len(block_tokens)})")
        try:
            hidden = self._run(block_tokens, None)  # the block sees the cache and all of itself
        finally:
            self.crop(start)
        source_rows = torch.tensor([max(r - 1, 0) for r in rows], device=self.device)
        return self._logits(hidden.index_select(0, source_rows))

    @torch.inference_mode()
    def denoise_batch(self, blocks: Sequence[Sequence[int]], rows: Sequence[int], prefix_len: int) -> torch.Tensor:
        """One denoising pass over several alternative versions of the block at ``prefix_len``, in one batch.

        Every block attends to the first ``prefix_len`` cached positions (a block boundary; the cache may hold
        more, which no block sees) and to all of itself; the cache is left as it was. Returns float logits
        [len(blocks), len(rows), V] with the token shift applied, as :meth:`denoise` does for one block.
        """
        bsz = self.block_size
        if prefix_len % bsz or prefix_len > self.cache_len or any(len(b) != bsz for b in blocks) or not blocks:
            raise ValueError(f"denoise_batch needs whole blocks over a cached block prefix (prefix {prefix_len}, cache {self.cache_len})")
        hidden = self._run_batch(blocks, None, self._prefix_copy(prefix_len, len(blocks)), prefix_len)
        source_rows = torch.tensor([max(r - 1, 0) for r in rows], device=self.device)
        return self._logits(hidden.index_select(1, source_rows))

    def _prefix_copy(self, keep: int, batch: int):
        """A throw-away cache holding the first ``keep`` cached positions once per batch row."""
        cache = self._cache_factory()
        if keep:
            for index, layer in enumerate(self.cache.layers):
                cache.update(layer.keys[:, :, :keep].expand(batch, -1, -1, -1), layer.values[:, :, :keep].expand(batch, -1, -1, -1), index)
        return cache

    def describe(self) -> dict[str, Any]:
        cfg = self.body.config
        return {
            "layout": self.layout,
            "source": self.source,
            "block_size": self.block_size,
            "mask_token_id": self.mask_token_id,
            "num_hidden_layers": getattr(cfg, "num_hidden_layers", None),
            "hidden_size": getattr(cfg, "hidden_size", None),
            "trunk_parameters": int(sum(p.numel() for p in self.body.parameters())),
            "dtype": str(self.dtype).replace("torch.", ""),
            "draft_vocab": None if self.vocab_ids is None else int(self.vocab_ids.numel()),
        }


# -- loading ---------------------------------------------------------------------------------------
def detect_layout(config: dict) -> str:
    """``"project"`` or ``"fast_dllm"``; anything else is not a block-diffusion drafter."""
    meta = config.get("failfast_bench")
    if isinstance(meta, dict) and meta.get("kind") == PROJECT_KIND:
        return "project"
    if _FAST_DLLM_ARCH in (config.get("architectures") or []) or config.get("model_type") == _FAST_DLLM_TYPE or "bd_size" in config:
        return "fast_dllm"
    raise ConfigError(
        "not a block-diffusion drafter: config.json has neither failfast_bench.kind=block_diffusion nor a Fast-dLLM v2 "
        f"model_type/bd_size (model_type={config.get('model_type')!r})"
    )


def _local_dir(path_or_hub_id: str, revision: Optional[str] = None) -> Path:
    path = Path(os.path.expanduser(str(path_or_hub_id)))
    if path.is_dir():
        return path
    if str(path_or_hub_id).startswith(("/", "./", "../", "~")):
        raise ConfigError(f"drafter directory {path_or_hub_id} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=str(path_or_hub_id), revision=revision, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as exc:  # noqa: BLE001 - turned into one clear line
        from ..hub import explain

        raise ConfigError(explain(str(path_or_hub_id), exc, "drafter", revision)) from exc


def _read_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory: ``model.safetensors`` or the shards its index names."""
    from .weight_files import read_safetensors

    index = directory / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_safetensors(directory / shard))
        return state
    single = directory / "model.safetensors"
    if not single.exists():
        raise ConfigError(f"no model.safetensors (or model.safetensors.index.json) in {directory}")
    return read_safetensors(single)


def _freeze(module: nn.Module, dtype, device) -> nn.Module:
    module.to(device=device, dtype=dtype)
    module.eval()
    module.requires_grad_(False)
    return module


def load_fast_dllm_checkpoint(
    directory: Path, dtype=torch.float32, device="cpu", mask_token_id: Optional[int] = None, vocab_limit: Optional[int] = None
) -> BlockDiffusionLM:
    """Load a Fast-dLLM v2 checkpoint into a stock ``Qwen2ForCausalLM`` (no remote code)."""
    from accelerate import init_empty_weights
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.initialization import no_init_weights

    directory = Path(directory)
    raw = json.loads((directory / "config.json").read_text())
    fields = {k: v for k, v in raw.items() if k not in _FAST_DLLM_ONLY_FIELDS}
    config = Qwen2Config(**fields)
    config._attn_implementation = "sdpa"
    # Parameters on the meta device, then the checkpoint's tensors (cast to ``dtype``) take their place: the
    # host never holds a float32 model next to the weights (6 GB for Fast_dLLM_v2_1.5B).
    with no_init_weights(), init_empty_weights():
        model = Qwen2ForCausalLM(config)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in _read_safetensors(directory).items()}
    tied = "lm_head.weight" not in state
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if tied:
        # Tied checkpoints (the Qwen2.5-1.5B lineage) ship no lm_head tensor: the head is the embedding.
        if not config.tie_word_embeddings:
            warnings.warn(f"{directory} has no lm_head.weight although tie_word_embeddings is false; tying it")
        model.lm_head.weight = model.model.embed_tokens.weight
    missing = [k for k in missing if "rotary_emb" not in k and not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise ConfigError(
            f"{directory} is not a Fast-dLLM v2/Qwen2 checkpoint: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    _freeze(model, dtype, device)
    mask_id = mask_token_id if mask_token_id is not None else int(raw.get("mask_token_id", FAST_DLLM_MASK_ID))
    return BlockDiffusionLM(
        model.model,
        model.model.embed_tokens,
        model.lm_head,
        block_size=int(raw.get("bd_size", 32)),
        mask_token_id=mask_id,
        vocab_limit=vocab_limit,
        layout="fast_dllm",
        source=str(directory),
    )


def load_project_drafter(
    directory: Path, target_model, dtype=torch.float32, device="cpu", mask_token_id: Optional[int] = None, vocab_limit: Optional[int] = None
) -> BlockDiffusionLM:
    """Load the project's small block-diffusion drafter, borrowing the target's embeddings and LM head."""
    directory = Path(directory)
    raw = json.loads((directory / "config.json").read_text())
    meta = raw["failfast_bench"]
    if target_model is None:
        raise ConfigError(f"{directory} shares the target's embeddings and LM head: load it with the target model")
    if not meta.get("shares_target_embeddings", True):
        raise ConfigError(f"{directory}: project drafters without shared target embeddings are not supported")
    from .shared_trunk import borrowed_head, build_trunk, trunk_config

    config = trunk_config(raw)
    body = build_trunk(config)
    state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in _read_safetensors(directory).items()}
    mask_vec = state.pop(MASK_EMBEDDING_KEY, None)
    if mask_vec is None:
        raise ConfigError(f"{directory}/model.safetensors has no {MASK_EMBEDDING_KEY!r} tensor")
    from .conditioned_model import FEATURE_FUSE_KEY, FEATURE_NORM_KEY

    fusion_state = {k: state.pop(k) for k in (FEATURE_NORM_KEY, FEATURE_FUSE_KEY) if k in state}
    if meta.get("feature_layers") and len(fusion_state) != 2:
        raise ConfigError(f"{directory} is a target-conditioned drafter but model.safetensors lacks {FEATURE_NORM_KEY}/{FEATURE_FUSE_KEY}")
    missing, unexpected = body.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("embed_tokens") and "rotary_emb" not in k]
    if missing or unexpected:
        raise ConfigError(f"{directory} does not match its trunk config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    _freeze(body, dtype, device)
    embed = target_model.get_input_embeddings()
    if embed.weight.shape[1] != config.hidden_size:
        raise ConfigError(
            f"drafter hidden size {config.hidden_size} does not match the target's embeddings ({embed.weight.shape[1]}); "
            f"this drafter was trained for target {meta.get('target')!r}"
        )
    mask_id = mask_token_id if mask_token_id is not None else int(meta["mask_token_id"])
    common = dict(
        block_size=int(meta.get("block_size", 32)),
        mask_token_id=mask_id,
        mask_embedding=mask_vec.to(device=device, dtype=dtype),
        vocab_limit=vocab_limit,
        layout="project",
        source=str(directory),
    )
    head = borrowed_head(target_model, dtype, device)
    if meta.get("feature_layers"):
        from .conditioned_model import ConditionedBlockLM, fusion_from_state

        layers = [int(i) for i in meta["feature_layers"]]
        depth = int(getattr(target_model.config, "num_hidden_layers", 0) or 0)
        if depth and any(not 0 <= i < depth for i in layers):
            raise ConfigError(f"{directory} reads target layers {layers}, but the target has {depth} layers; it was trained for {meta.get('target')!r}")
        fusion = fusion_from_state(fusion_state, config.hidden_size, dtype, device)
        if fusion.fuse.weight.shape[1] != len(layers) * config.hidden_size:
            raise ConfigError(f"{directory}: {FEATURE_FUSE_KEY} expects {fusion.fuse.weight.shape[1]} feature columns, not {len(layers)} taps x {config.hidden_size}")
        return ConditionedBlockLM(body, embed, head, feature_layers=layers, fusion=fusion, **common)
    return BlockDiffusionLM(body, embed, head, **common)


def load_block_diffusion_drafter(
    path_or_hub_id: str,
    target_model=None,
    dtype=torch.float32,
    device="cpu",
    mask_token_id: Optional[int] = None,
    vocab_limit: Optional[int] = None,
    target_name: Optional[str] = None,
    revision: Optional[str] = None,
) -> BlockDiffusionLM:
    """Load either layout (see the module docstring) from a local directory or a hub id (at ``revision``).

    ``vocab_limit`` caps the ids a draft may contain (the verifier's vocabulary); by default the
    target's embedding size when a target is given.
    """
    directory = _local_dir(path_or_hub_id, revision)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise ConfigError(f"no config.json in {directory}")
    raw = json.loads(config_path.read_text())
    layout = detect_layout(raw)
    if vocab_limit is None and target_model is not None:
        vocab_limit = int(target_model.get_input_embeddings().weight.shape[0])
    if layout == "project":
        meta_target = raw["failfast_bench"].get("target")
        if target_name and meta_target and meta_target != target_name:
            warnings.warn(f"drafter {directory} was trained for target {meta_target!r}, running with {target_name!r}")
        return load_project_drafter(directory, target_model, dtype, device, mask_token_id, vocab_limit)
    return load_fast_dllm_checkpoint(directory, dtype, device, mask_token_id, vocab_limit)


def save_project_drafter(
    directory,
    body: nn.Module,
    mask_embedding: torch.Tensor,
    *,
    block_size: int,
    mask_token_id: int,
    target: str,
    dtype=torch.bfloat16,
    extra_meta: Optional[dict] = None,
    extra_tensors: Optional[dict[str, torch.Tensor]] = None,
) -> Path:
    """Write the project layout: the trunk config + ``failfast_bench`` block, and only the trunk weights,
    final norm and mask embedding (token embeddings and LM head stay with the target)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = body.config.to_dict()
    for key in ("architectures", "auto_map", "_name_or_path", "torch_dtype", "dtype"):
        config.pop(key, None)
    config["failfast_bench"] = {
        "kind": PROJECT_KIND,
        "block_size": int(block_size),
        "mask_token_id": int(mask_token_id),
        "shares_target_embeddings": True,
        "target": target,
        **(extra_meta or {}),
    }
    tensors = {
        f"model.{k}": v.detach().to(dtype).contiguous()
        for k, v in body.state_dict().items()
        if not k.startswith("embed_tokens") and "rotary_emb" not in k
    }
    tensors[MASK_EMBEDDING_KEY] = mask_embedding.detach().to(dtype).reshape(-1).contiguous()
    tensors.update({k: v.detach().to(dtype).contiguous() for k, v in (extra_tensors or {}).items()})
    save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory
