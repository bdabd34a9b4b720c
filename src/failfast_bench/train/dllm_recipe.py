"""Recipe ``dllm``: a small block-diffusion drafter (Fast-dLLM v2 style) distilled from the target.

Model: copies of some target layers + final norm (the trunk), the target's embedding and LM head
(shared, frozen), and a learned mask embedding; attention is causal across blocks of B tokens and
bidirectional inside a block; logits are token-shifted (the row at i-1 predicts position i). The
inference side is :class:`failfast_bench.drafters.blockdiff_model.BlockDiffusionLM`.

Training example = prompt + the target's greedy response. The whole sequence is run once *clean*
(block-causal, as the drafter's prefill and cache-update passes see it), followed by ``noisy_copies``
corrupted copies of every block that holds response tokens (the Fast-dLLM v2 trick: every block of a
sequence is trained in one forward). A noisy block keeps a clean prefix of p tokens and masks the rest,
which is exactly what a FailFast denoising pass sees (context or already committed sub-blocks before
the frontier, masks after it); it attends to the clean copy of earlier blocks and to itself.

Loss (per position, mixed): cross-entropy on the target's greedy token (what verification accepts;
keeps confidences calibrated for FailFast's τ test) plus, weighted by ``distill_weight``, cross-entropy
against the target's cached top-k distribution (soft targets, the richer signal). Positions: the
masked part of the active sub-block (the only positions a pass commits), optionally the masked
positions further right at ``far_weight``, and every complete clean block's end (the cache-update
pass's token) at ``block_end_weight``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from .batching import SoftTargets, LossBatch
from .data import Example
from .trunk import shared_tables, trunk_from_target


@dataclass
class DllmSettings:
    block_size: int = 32
    sub_block_size: int = 8
    mask_token_id: Optional[int] = None  # default: the target's vocabulary size (an id it never uses)
    noisy_copies: int = 2
    aligned_fraction: float = 0.5  # share of noisy blocks whose clean prefix ends at a sub-block boundary
    far_weight: float = 0.0
    block_end_weight: float = 1.0
    distill_weight: float = 0.5
    max_len: int = 448


class BlockDiffusionTrainee(nn.Module):
    """Trainable parameters: the trunk and the mask embedding. Embedding and head: the target's, by reference."""

    def __init__(self, target_model, layers: Sequence[int], mask_token_id: int):
        super().__init__()
        self.body = trunk_from_target(target_model, layers)
        embed, head = shared_tables(target_model)
        self._shared = (embed, head)
        self.mask_token_id = int(mask_token_id)
        self.vocab = int(embed.weight.shape[0])
        # Start the mask vector at the mean token embedding: a neutral input the trunk already handles.
        self.mask_embedding = nn.Parameter(embed.weight.detach().float().mean(0).clone())
        self.init_layers = list(layers)

    @property
    def embed(self) -> nn.Module:
        return self._shared[0]

    @property
    def head(self) -> nn.Module:
        return self._shared[1]

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        is_mask = ids == self.mask_token_id
        with torch.no_grad():
            tokens = self.embed(ids.masked_fill(is_mask | (ids >= self.vocab), 0)).float()
        return torch.where(is_mask[..., None], self.mask_embedding.to(tokens.dtype), tokens)

    def input_embeds(self, batch: "LossBatch") -> torch.Tensor:
        """The trunk's input rows (a target-conditioned trainee adds the target's taps here)."""
        return self.embed_ids(batch.input_ids)

    def hidden(self, batch: "LossBatch") -> torch.Tensor:
        out = self.body(inputs_embeds=self.input_embeds(batch), attention_mask=batch.attention, position_ids=batch.position_ids)
        return out.last_hidden_state

    def logits_at(self, hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        flat = hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)
        return self.head(flat.to(self.head.weight.dtype))

    def load_exported(self, directory) -> dict:
        """Warm start from an exported drafter; returns the file's tensors other than the trunk's."""
        from ..drafters.blockdiff_model import MASK_EMBEDDING_KEY
        from .trunk import load_exported_trunk

        rest = load_exported_trunk(self.body, directory)
        # A causal (AR) drafter is a valid start too - the Fast-dLLM v2 path, adapting an AR model to block
        # diffusion; its mask embedding then keeps the mean-embedding initialisation.
        if MASK_EMBEDDING_KEY in rest:
            with torch.no_grad():
                self.mask_embedding.copy_(rest[MASK_EMBEDDING_KEY].float().reshape(-1))
        return rest

    def file_extras(self) -> tuple[dict, dict]:
        """(config metadata, tensors) an export holds beyond the trunk and mask embedding."""
        return {}, {}

    def export(self, directory, target_name: str, block_size: int, extra_meta: Optional[dict] = None):
        from ..drafters.blockdiff_model import save_project_drafter

        meta, tensors = self.file_extras()
        return save_project_drafter(
            directory,
            self.body,
            self.mask_embedding,
            block_size=block_size,
            mask_token_id=self.mask_token_id,
            target=target_name,
            dtype=torch.bfloat16,
            extra_meta={**(extra_meta or {}), **meta},
            extra_tensors=tensors,
        )


def _sample_prefix(rng: random.Random, s: DllmSettings) -> int:
    """Clean-prefix length p of a noisy block, 1..B-1 (block position 0 always comes from the cache-update pass)."""
    p = rng.randint(1, s.block_size - 1)
    if rng.random() < s.aligned_fraction:
        p = max(1, p // s.sub_block_size * s.sub_block_size)
    return p


def _frontier(rng: random.Random, block_start: int, prefix: int, response_start: int) -> int:
    """Where the verified context ends inside a noisy block's clean prefix (conditioned recipe): rows left
    of it are context, the rest of the prefix are the drafter's own earlier commits of the round."""
    end = block_start + prefix
    if rng.random() < 0.5:
        return end
    return rng.randint(min(max(response_start, block_start), end), end)


def build_dllm_batch(examples: Sequence[Example], s: DllmSettings, rng: random.Random, mask_token_id: int, with_features: bool = False) -> LossBatch:
    """Pack examples into one forward: clean sequences + noisy blocks, block-structured attention.

    ``with_features``: each row also gets the index of the target taps it reads (conditioned recipe; see
    :mod:`.conditioned_recipe`), drawn with extra random numbers only then, so plain batches are unchanged."""
    B, b = s.block_size, s.sub_block_size
    rows = []
    for ex in examples:
        prompt = list(ex.prompt_ids)
        if len(prompt) > s.max_len // 2:
            # A long chat prompt keeps its end (what the response follows), so its response still fits max_len.
            prompt = prompt[-(s.max_len // 2):]
        seq = (prompt + list(ex.response_ids))[: s.max_len]
        start, length = len(prompt), len(seq)
        if length <= start:
            continue
        n_blocks = -(-length // B)
        clean = seq + [mask_token_id] * (n_blocks * B - length)
        tokens, positions, kind, block, group = list(clean), list(range(n_blocks * B)), [0] * (n_blocks * B), [i // B for i in range(n_blocks * B)], [-1] * (n_blocks * B)
        features = [p - 1 if 1 <= p < length else -1 for p in range(n_blocks * B)]
        targets: list[tuple[int, int, float, int]] = []  # (source row, absolute position, weight, offset in pass)
        # Clean block ends predict the next block's first token (the cache-update pass).
        if s.block_end_weight > 0:
            for j in range(n_blocks):
                nxt = (j + 1) * B
                if start <= nxt < length:
                    targets.append((nxt - 1, nxt, s.block_end_weight, -1))
        next_group = 0
        for _ in range(s.noisy_copies):
            for j in range(start // B, n_blocks):
                lo = max(1, start - j * B)  # the first masked position must be a response token
                hi = min(B - 1, length - 1 - j * B)
                if lo > hi:
                    continue
                p = min(max(_sample_prefix(rng, s), lo), hi)
                base = len(tokens)
                block_tokens = clean[j * B: j * B + p] + [mask_token_id] * (B - p)
                tokens.extend(block_tokens)
                positions.extend(range(j * B, (j + 1) * B))
                if with_features:
                    ell = _frontier(rng, j * B, p, start)
                    features.extend(j * B + q - 1 if j * B + q < ell and j * B + q >= 1 else -1 for q in range(B))
                kind.extend([1] * B)
                block.extend([j] * B)
                group.extend([next_group] * B)
                next_group += 1
                sub_end = (p // b + 1) * b
                for q in range(p, min(B, length - j * B)):
                    weight = 1.0 if q < sub_end else s.far_weight
                    if weight > 0:
                        targets.append((base + q - 1, j * B + q, weight, q - p))
        rows.append((ex, seq, start, tokens, positions, kind, block, group, targets) + ((features,) if with_features else ()))
    return LossBatch.pack(rows, pad_id=mask_token_id, attention_rule=_dllm_attention)


def _dllm_attention(kind: np.ndarray, block: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Allowed (query, key) pairs: clean->clean block-causal; noisy->earlier clean blocks and its own block."""
    kq, kk = kind[:, None], kind[None, :]
    bq, bk = block[:, None], block[None, :]
    allowed = (kq == 0) & (kk == 0) & (bk <= bq)
    allowed |= (kq == 1) & (kk == 0) & (bk < bq)
    allowed |= (kq == 1) & (kk == 1) & (group[:, None] == group[None, :])
    return allowed


def dllm_loss(model: BlockDiffusionTrainee, batch: LossBatch, s: DllmSettings) -> dict:
    hidden = model.hidden(batch)
    logits = model.logits_at(hidden, batch.source_rows).float()
    return batch.loss(logits, s.distill_weight)


__all__ = ["DllmSettings", "BlockDiffusionTrainee", "build_dllm_batch", "dllm_loss", "SoftTargets"]


class DllmRecipe:
    """The ``dllm`` recipe as the training loop sees it."""

    name = "dllm"

    def __init__(self, target_model, target_name: str, layers: Sequence[int], settings: DllmSettings, eval_settings):
        self.settings = settings
        self.eval_settings = eval_settings
        self.target_name = target_name
        vocab = int(target_model.get_input_embeddings().weight.shape[0])
        self.mask_token_id = int(settings.mask_token_id if settings.mask_token_id is not None else vocab)
        self.model = self.make_trainee(target_model, layers)

    def make_trainee(self, target_model, layers: Sequence[int]) -> BlockDiffusionTrainee:
        return BlockDiffusionTrainee(target_model, layers, self.mask_token_id)

    def inference_extras(self, dtype: Optional[torch.dtype]) -> tuple[type, dict]:
        """The inference class and its extra arguments (a conditioned recipe's fusion and taps)."""
        from ..drafters.blockdiff_model import BlockDiffusionLM

        return BlockDiffusionLM, {}

    def taps_of(self):
        """``evaluate_block_diffusion``'s ``taps_of`` (None: the drafter reads no target taps)."""
        return None

    def make_batch(self, examples, rng):
        return build_dllm_batch(examples, self.settings, rng, self.mask_token_id)

    def loss(self, batch):
        return dllm_loss(self.model, batch, self.settings)

    def inference_model(self, dtype: Optional[torch.dtype] = None):
        """The trainee as the drafting code sees it; ``dtype``: evaluate a cast copy (the trainee is untouched)."""
        import copy

        m = self.model
        body = m.body if dtype is None else copy.deepcopy(m.body).to(dtype)
        mask = m.mask_embedding.detach() if dtype is None else m.mask_embedding.detach().to(dtype)
        cls, extras = self.inference_extras(dtype)
        return cls(
            body, m.embed, m.head, block_size=self.settings.block_size, mask_token_id=self.mask_token_id,
            mask_embedding=mask, vocab_limit=m.vocab, **extras,
        )

    def evaluate(self, examples):
        from .evaluate import evaluate_block_diffusion

        dtype = getattr(torch, self.eval_settings.dtype) if self.eval_settings.dtype else None
        return evaluate_block_diffusion(self.inference_model(dtype), examples, self.eval_settings, taps_of=self.taps_of())

    def export(self, directory, meta: dict):
        return self.model.export(directory, self.target_name, self.settings.block_size, extra_meta=meta)
