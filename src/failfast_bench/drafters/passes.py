"""A block-diffusion drafter's model passes, each reduced to what the drafter reads from it.

At T = 0 without a path search or kept alternatives, the drafter (``drafters/dllm.py``) reads from a pass only
the greedy token and its probability per requested row. :class:`ModelPasses` runs the model and makes that
reduction (:class:`Picks`, built by the drafter's own ``_reduce``);
:class:`~failfast_bench.drafters.stored_passes.StoredPasses` answers the same calls from stored picks. Both own
the drafter's block cache (``cache_len``, ``reset``, ``crop``), so the drafter talks to one object whichever
answers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch


@dataclass
class Picks:
    """Per requested row of one pass: the greedy token and its probability (the drafter's confidence).

    ``ranked`` (when asked for) holds per row the best proposable (token, probability) pairs, best first: what
    policies that read more than the argmax need. ``logits`` is set only by a pass the model ran (sampling, a
    path search and kept alternatives read them)."""

    tokens: list[int]
    confidences: list[float]
    ranked: Optional[list] = None
    logits: Optional[torch.Tensor] = None


class ModelPasses:
    """The drafter's model (a :class:`~failfast_bench.drafters.blockdiff_model.BlockDiffusionLM`) behind the
    pass interface. ``timed(fn, *args)`` runs a model call under the drafter's forward timer; ``reduce(logits,
    top_k)`` makes :class:`Picks` of a pass's logits (with ``top_k`` ranked pairs per row, 0 = none)."""

    def __init__(self, model, timed: Callable, reduce: Callable[[torch.Tensor, int], Picks], top_k: int = 0):
        self.model = model
        self.timed = timed
        self.reduce = reduce
        self.top_k = int(top_k)

    @property
    def cache_len(self) -> int:
        return self.model.cache_len

    @property
    def valid_cache_rows(self) -> int:
        """Leading cached rows written with every input they read (a target-conditioned model's count)."""
        return getattr(self.model, "valid_cache_rows", self.model.cache_len)

    def start(self, prompt_ids: Sequence[int]) -> None:
        self.model.reset()

    def reset(self) -> None:
        self.model.reset()

    def crop(self, keep: int) -> None:
        self.model.crop(keep)

    def write(self, tokens: Sequence[int], every_block_end: bool) -> Picks:
        """Append whole blocks to the cache; picks at the last block end (or at every block end)."""
        return self.reduce(self.timed(self.model.write_blocks, list(tokens), every_block_end=every_block_end), self.top_k)

    def denoise(self, block: Sequence[int], rows: Sequence[int]) -> Picks:
        """One denoising pass over ``block`` on top of the cache; picks at block positions ``rows``."""
        return self.reduce(self.timed(self.model.denoise, list(block), list(rows)), self.top_k)
