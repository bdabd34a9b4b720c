"""Stored passes: a block-diffusion drafter's pass source that answers from a trajectory store.

It presents :class:`~failfast_bench.drafters.passes.ModelPasses`' interface (``write``, ``denoise``, the block
cache) to the unchanged drafter, so every decision (commits, records, windows, stops, KV reuse, pass counts)
is made by the same code as in a live round; only a pass's picks come from the store. The cache is tracked
symbolically (the history of block writes and crops, :mod:`failfast_bench.trajectory_store`); the model's
real cache is brought to that history only when a pass misses, by re-running the same writes, so the model
computes exactly what it would have computed live. Greedy decoding only.

A target-conditioned drafter (``conditioned_model.py``) also reads the target's features: each pass's key
and each write's cache state hold a digest of the feature rows it read, and the cache's valid rows (written
with every feature they read) are tracked here by the model's own rule, because the drafter drops the rest at
the start of a round and a stored hit leaves the model's own count behind.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..trajectory_store import (EMPTY_CACHE, KIND_DENOISE, KIND_WRITE, TOP_K, Entry, TrajectoryStore, denoise_key,
                                features_digest, ranked_arrays, segment_state, write_key)
from .conditioned_model import feature_rows
from .passes import ModelPasses, Picks


@dataclass(frozen=True)
class _Segment:
    """One block-write call that built the cache: its tokens, how many positions a crop left, the state after,
    and the digest of the target features it read (empty for a plain drafter)."""

    tokens: tuple
    kept: int
    state: bytes
    features: bytes = b""


class StoredPasses:
    """Pass source backed by a :class:`TrajectoryStore`, falling back to ``model_passes`` on a miss."""

    def __init__(self, model_passes: ModelPasses, store: TrajectoryStore):
        self.model_passes = model_passes
        model_passes.top_k = TOP_K
        self.store = store
        self.hits = 0
        self.misses = 0
        self._prompt: Optional[list[int]] = None
        self._known: dict[bytes, Entry] = {}
        self._new: dict[bytes, Entry] = {}
        self._segments: list[_Segment] = []  # the cache the drafter believes in
        self._model_segments: list[_Segment] = []  # the cache the model really holds
        self._conditioned = bool(getattr(getattr(model_passes, "model", None), "feature_layers", ()))
        self._valid = 0  # conditioned drafter: leading rows of the believed cache written with all their features

    # -- per prompt ------------------------------------------------------------------------------
    def start(self, prompt_ids: Sequence[int]) -> None:
        self.flush()
        self._prompt = [int(t) for t in prompt_ids]
        self._known = self.store.load(self._prompt)
        self.model_passes.start(prompt_ids)
        self._segments, self._model_segments = [], []
        self._valid = 0

    def flush(self) -> None:
        """Write the passes computed since the last flush to the store (atomically)."""
        if self._prompt is not None and self._new:
            self.store.save(self._prompt, self._new)
        self._new = {}

    # -- the cache, symbolically -----------------------------------------------------------------
    @property
    def cache_len(self) -> int:
        return sum(s.kept for s in self._segments)

    @property
    def _state(self) -> bytes:
        return self._segments[-1].state if self._segments else EMPTY_CACHE

    @property
    def valid_cache_rows(self) -> int:
        """The model's ``valid_cache_rows`` for the believed cache (all of it for a plain drafter)."""
        return min(self._valid, self.cache_len) if self._conditioned else self.cache_len

    def reset(self) -> None:
        self._segments = []
        self._valid = 0

    def crop(self, keep: int) -> None:
        self._segments = _cropped(self._segments, keep)
        self._valid = min(self._valid, keep)

    def _append(self, tokens: Sequence[int], features: bytes) -> None:
        tokens = tuple(int(t) for t in tokens)
        start = self.cache_len
        self._segments.append(_Segment(tokens, len(tokens), segment_state(self._state, tokens, len(tokens), features), features))
        if self._conditioned and self._valid == start:
            # ConditionedBlockLM.write_blocks' rule: row p is complete if p = 0 or the target's taps at p - 1 are known
            self._valid = min(start + len(tokens), self.model_passes.model.known_features + 1)

    def _features(self, tokens: Sequence[int]) -> bytes:
        """Digest of the target features a pass over ``tokens`` at the cache end reads (empty for a plain drafter)."""
        if not self._conditioned:
            return b""
        model = self.model_passes.model
        ids = torch.tensor([int(t) for t in tokens])
        index = feature_rows(self.cache_len, len(tokens), model.known_features, ids == model.mask_token_id)
        return features_digest(index, model.features)

    # -- passes ----------------------------------------------------------------------------------
    def write(self, tokens: Sequence[int], every_block_end: bool) -> Picks:
        features = self._features(tokens)
        key = write_key(self._state, tokens, every_block_end, features)
        picks = self._lookup(key)
        ran = picks is None
        if ran:
            picks = self._compute(key, KIND_WRITE, None, lambda: self.model_passes.write(tokens, every_block_end))
            n = len(picks.tokens)  # rows at the last block end, or at every one: the positions they predict
            self._new[key].rows = [(i + 1) * len(tokens) // n for i in range(n)]
        self._append(tokens, features)
        if ran:
            self._model_segments = list(self._segments)  # the model's cache took the same write
        return picks

    def denoise(self, block: Sequence[int], rows: Sequence[int]) -> Picks:
        key = denoise_key(self._state, block, rows, self._features(block))
        return self._lookup(key) or self._compute(key, KIND_DENOISE, list(rows), lambda: self.model_passes.denoise(block, rows))

    def _lookup(self, key: bytes) -> Optional[Picks]:
        entry = self._known.get(key)
        if entry is None:
            return None
        self.hits += 1
        return Picks(list(entry.tokens), list(entry.confidences))  # the stored top-k stays in the store

    def _compute(self, key: bytes, kind: int, rows: Optional[list[int]], run) -> Picks:
        self.misses += 1
        self._sync_model()
        start = self.cache_len
        picks = run()
        entry = Entry(kind, start, rows or [], list(picks.tokens), list(picks.confidences), *ranked_arrays(picks.ranked, TOP_K))
        self._known[key] = self._new[key] = entry
        return picks

    def _sync_model(self) -> None:
        """Bring the model's cache to the drafter's: keep the common history, crop, re-run the missing writes."""
        ours, theirs = self._segments, self._model_segments
        common = 0
        while common < min(len(ours), len(theirs)) and ours[common] == theirs[common]:
            common += 1
        # the same write call, of which the model kept more: a crop is all it takes
        partial = (common < len(ours) and common < len(theirs) and ours[common].tokens == theirs[common].tokens
                   and ours[common].features == theirs[common].features and theirs[common].kept >= ours[common].kept)
        keep = sum(s.kept for s in ours[: common + partial])
        model = self.model_passes
        if model.cache_len > keep:
            model.crop(keep)
        for segment in ours[common + partial:]:
            start = model.cache_len
            model.write(segment.tokens, False)  # rebuilds the KV as the original call did; picks unused
            if segment.kept < len(segment.tokens):
                model.crop(start + segment.kept)
        self._model_segments = list(ours)


def _cropped(segments: list[_Segment], keep: int) -> list[_Segment]:
    out, end = [], 0
    previous = EMPTY_CACHE
    for segment in segments:
        if end >= keep:
            break
        kept = min(segment.kept, keep - end)
        if kept == segment.kept:
            out.append(segment)
        else:
            out.append(_Segment(segment.tokens, kept, segment_state(previous, segment.tokens, kept, segment.features), segment.features))
        end += kept
        previous = out[-1].state
    return out


def attach(drafter, store: TrajectoryStore) -> StoredPasses:
    """Make ``drafter`` (a block-diffusion drafter) answer its passes from ``store``; returns the pass source."""
    from ..config import ConfigError

    if not isinstance(getattr(drafter, "passes", None), ModelPasses):
        raise ConfigError(f"drafter {drafter.name!r} has no model passes to store")
    # Each of these reads a pass's logits, which the store does not keep (only picks and a top-k).
    reads_logits = {"sampling (run.temperature > 0)": drafter.sampling_on, "a path search (drafter.cps)": drafter.path_search,
                    "a prefix tree (drafter.tree)": drafter.keep_alternatives}
    refused = [name for name, used in reads_logits.items() if used]
    if refused:
        raise ConfigError(f"run.trajectories=true cannot serve a drafter with {', '.join(refused)}: it reads whole logits, "
                          f"which the store does not keep; set run.trajectories=false")
    drafter.passes = StoredPasses(drafter.passes, store)
    return drafter.passes
