"""Packing variable-length training rows into one padded forward with a per-row attention pattern,
and the loss shared by the recipes (hard greedy labels mixed with the target's soft top-k).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

KIND_CLEAN, KIND_NOISY, KIND_PAD = 0, 1, 2


@dataclass
class SoftTargets:
    ids: torch.Tensor  # [N, k] long
    probs: torch.Tensor  # [N, k] float; rows of zeros where no soft target exists


@dataclass
class LossBatch:
    """A packed forward plus the positions the loss reads.

    ``source_rows`` index the flattened [batch * length] hidden states; row r's logits are scored
    against ``labels[r]`` (the target's greedy token) and ``soft`` (its top-k distribution).
    ``offsets[r]`` is the distance from the first masked position of the pass (dllm), or -1.
    """

    input_ids: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [B, L]
    attention: torch.Tensor  # [B, 1, L, L] bool, True = may attend
    source_rows: torch.Tensor  # [N]
    labels: torch.Tensor  # [N]
    weights: torch.Tensor  # [N]
    offsets: torch.Tensor  # [N]
    soft: SoftTargets
    # Target-conditioned recipes: per row, the position of the clean sequence whose target taps it reads
    # (-1 = none), and each example's clean sequence (the target forward's input).
    feature_index: Optional[torch.Tensor] = None  # [B, L] long
    sequences: Optional[list] = None

    @property
    def num_targets(self) -> int:
        return int(self.labels.numel())

    @classmethod
    def pack(cls, rows: Sequence[tuple], pad_id: int, attention_rule: Callable) -> "LossBatch":
        """``rows``: (example, seq, response start, tokens, positions, kind, block, group, targets[, feature rows])
        with targets = [(source row, absolute position, weight, offset)] and feature rows = per token, the
        index into ``seq`` of the target taps it reads, or -1 (conditioned recipes only)."""
        if not rows:
            raise ValueError("empty batch: no example has a response token inside max_len")
        width = max(len(r[3]) for r in rows)
        n = len(rows)
        ids = np.full((n, width), pad_id, dtype=np.int64)
        pos = np.zeros((n, width), dtype=np.int64)
        attention = np.zeros((n, 1, width, width), dtype=bool)
        src, labels, weights, offsets, soft_ids, soft_p = [], [], [], [], [], []
        k = max((r[0].topk_ids.shape[1] for r in rows if r[0].topk_ids is not None), default=1)
        with_features = all(len(r) > 9 for r in rows)
        feature_index = np.full((n, width), -1, dtype=np.int64) if with_features else None
        for i, row_fields in enumerate(rows):
            ex, seq, start, tokens, positions, kind, block, group, targets = row_fields[:9]
            m = len(tokens)
            if with_features:
                feature_index[i, :m] = row_fields[9]
            ids[i, :m] = tokens
            pos[i, :m] = positions
            kind_a = np.full(width, KIND_PAD, dtype=np.int64)
            kind_a[:m] = kind
            block_a = np.full(width, -1, dtype=np.int64)
            block_a[:m] = block
            group_a = np.full(width, -2, dtype=np.int64)
            group_a[:m] = group
            allowed = attention_rule(kind_a, block_a, group_a)
            # Padding rows attend to themselves only (keeps softmax finite; their outputs are never read).
            pad = kind_a == KIND_PAD
            allowed[pad, :] = False
            allowed[:, pad] = False
            allowed[np.arange(width)[pad], np.arange(width)[pad]] = True
            attention[i, 0] = allowed
            for row, abs_pos, weight, offset in targets:
                src.append(i * width + row)
                labels.append(seq[abs_pos])
                weights.append(weight)
                offsets.append(offset)
                r = abs_pos - start
                if ex.topk_ids is not None and 0 <= r < len(ex.topk_ids):
                    soft_ids.append(np.asarray(ex.topk_ids[r], dtype=np.int64))
                    soft_p.append(np.exp(np.asarray(ex.topk_logprobs[r], dtype=np.float32)))
                else:
                    soft_ids.append(np.zeros(k, dtype=np.int64))
                    soft_p.append(np.zeros(k, dtype=np.float32))
        if not src:
            raise ValueError("empty batch: no loss position (responses too short for the block geometry?)")
        return cls(
            input_ids=torch.from_numpy(ids),
            position_ids=torch.from_numpy(pos),
            attention=torch.from_numpy(attention),
            source_rows=torch.tensor(src, dtype=torch.long),
            labels=torch.tensor(labels, dtype=torch.long),
            weights=torch.tensor(weights, dtype=torch.float32),
            offsets=torch.tensor(offsets, dtype=torch.long),
            soft=SoftTargets(torch.from_numpy(np.stack(soft_ids)), torch.from_numpy(np.stack(soft_p))),
            feature_index=None if feature_index is None else torch.from_numpy(feature_index),
            sequences=[list(r[1]) for r in rows] if with_features else None,
        )

    def loss(self, logits: torch.Tensor, distill_weight: float) -> dict:
        """Weighted mean of (1-α)·CE(greedy token) + α·CE(target top-k), where soft targets exist."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        hard = -logp.gather(1, self.labels[:, None])[:, 0]
        has_soft = self.soft.probs.sum(1) > 0
        soft = -(self.soft.probs * logp.gather(1, self.soft.ids)).sum(1)
        alpha = torch.where(has_soft, torch.full_like(hard, float(distill_weight)), torch.zeros_like(hard))
        per_position = (1 - alpha) * hard + alpha * soft
        total_weight = self.weights.sum().clamp(min=1e-9)
        loss = (per_position * self.weights).sum() / total_weight
        with torch.no_grad():
            correct = (logp.argmax(-1) == self.labels).float()
            main = self.weights > 0
            accuracy = float(correct[main].mean()) if bool(main.any()) else float("nan")
        return {"loss": loss, "ce": float((hard.detach() * self.weights).sum() / total_weight), "accuracy": accuracy, "targets": self.num_targets}


def to_device(batch: LossBatch, device) -> LossBatch:
    if torch.device(device).type == "cpu":
        return batch
    return LossBatch(
        batch.input_ids.to(device),
        batch.position_ids.to(device),
        batch.attention.to(device),
        batch.source_rows.to(device),
        batch.labels.to(device),
        batch.weights.to(device),
        batch.offsets.to(device),
        SoftTargets(batch.soft.ids.to(device), batch.soft.probs.to(device)),
        None if batch.feature_index is None else batch.feature_index.to(device),
        batch.sequences,
    )


def causal_rule(kind: np.ndarray, block: np.ndarray, group: Optional[np.ndarray] = None) -> np.ndarray:
    """Plain causal attention (``block`` = position) among non-padding tokens."""
    real = kind != KIND_PAD
    return real[:, None] & real[None, :] & (block[None, :] <= block[:, None])
