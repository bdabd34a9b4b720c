"""Recipe ``ar``: a small autoregressive drafter distilled from the target.

The same kind of trunk as the block-diffusion recipe (copies of target layers + final norm, the target's
embedding and LM head shared and frozen), trained as a plain next-token model on the target's greedy
responses: cross-entropy on the greedy token mixed with the target's cached top-k distribution.
Inference side: :func:`failfast_bench.drafters.shared_trunk.load_shared_trunk_lm`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from .batching import LossBatch, causal_rule
from .data import Example
from .trunk import shared_tables, trunk_from_target


@dataclass
class ArSettings:
    distill_weight: float = 0.5
    max_len: int = 448


class CausalTrainee(nn.Module):
    def __init__(self, target_model, layers: Sequence[int]):
        super().__init__()
        self.body = trunk_from_target(target_model, layers)
        self._shared = shared_tables(target_model)
        self.init_layers = list(layers)

    @property
    def embed(self) -> nn.Module:
        return self._shared[0]

    @property
    def head(self) -> nn.Module:
        return self._shared[1]

    def hidden(self, batch: LossBatch) -> torch.Tensor:
        with torch.no_grad():
            embeds = self.embed(batch.input_ids).float()
        out = self.body(inputs_embeds=embeds, attention_mask=batch.attention, position_ids=batch.position_ids)
        return out.last_hidden_state

    def logits_at(self, hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        flat = hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)
        return self.head(flat.to(self.head.weight.dtype))

    def load_exported(self, directory) -> None:
        from .trunk import load_exported_trunk

        load_exported_trunk(self.body, directory)

    def export(self, directory, target_name: str, extra_meta: Optional[dict] = None):
        from ..drafters.shared_trunk import save_shared_trunk_lm

        return save_shared_trunk_lm(directory, self.body, target=target_name, dtype=torch.bfloat16, extra_meta=extra_meta)


def build_ar_batch(examples: Sequence[Example], s: ArSettings, rng: random.Random, pad_id: int) -> LossBatch:
    rows = []
    for ex in examples:
        seq = (list(ex.prompt_ids) + list(ex.response_ids))[: s.max_len]
        start, length = len(ex.prompt_ids), len(seq)
        if length <= max(start, 1):
            continue
        positions = list(range(length))
        targets = [(p - 1, p, 1.0, -1) for p in range(max(start, 1), length)]
        rows.append((ex, seq, start, list(seq), positions, [0] * length, positions, [-1] * length, targets))
    return LossBatch.pack(rows, pad_id=pad_id, attention_rule=causal_rule)


def ar_loss(model: CausalTrainee, batch: LossBatch, s: ArSettings) -> dict:
    hidden = model.hidden(batch)
    logits = model.logits_at(hidden, batch.source_rows).float()
    return batch.loss(logits, s.distill_weight)


class ArRecipe:
    """The ``ar`` recipe as the training loop sees it."""

    name = "ar"

    def __init__(self, target_model, target_name: str, layers: Sequence[int], settings: ArSettings, eval_settings, pad_id: int):
        self.settings = settings
        self.eval_settings = eval_settings
        self.target_name = target_name
        self.pad_id = int(pad_id)
        self.model = CausalTrainee(target_model, layers)

    def make_batch(self, examples, rng):
        return build_ar_batch(examples, self.settings, rng, self.pad_id)

    def loss(self, batch):
        return ar_loss(self.model, batch, self.settings)

    def inference_model(self, dtype: Optional[torch.dtype] = None):
        import copy

        from ..drafters.shared_trunk import SharedTrunkLM

        body = self.model.body if dtype is None else copy.deepcopy(self.model.body).to(dtype)
        return SharedTrunkLM(body, self.model.embed, self.model.head)

    def evaluate(self, examples):
        from .evaluate import evaluate_causal

        dtype = getattr(torch, self.eval_settings.dtype) if self.eval_settings.dtype else None
        return evaluate_causal(self.inference_model(dtype), examples, self.eval_settings)

    def export(self, directory, meta: dict):
        return self.model.export(directory, self.target_name, extra_meta=meta)
