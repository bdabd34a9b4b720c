"""Causal-consistency path search (CPS, DiffuSpec arXiv 2510.02358 §4.2): *what shape the draft takes*.

A denoising pass predicts every masked position of the active sub-block at once, each conditioned on the
whole block in both directions, so the per-position argmax need not read as a left-to-right sentence. CPS
treats the pass's predictions as a lattice and picks the path a causal verifier is likely to accept:

1. **Lattice.** Each masked position keeps the smallest set of its most probable proposable tokens whose
   probability reaches ``mass`` (τ = 0.8 in the paper), at most ``top_m`` (M_max = 15), at least one, so a
   confident position contributes a single candidate and an uncertain one several. A position committed
   by an earlier pass is a one-candidate column (its token is given).
2. **Score.** A path π is scored left to right as Σ_i [ λ · log q_i(π_i) + (1 − λ) · log p_proxy(π_i | left
   context, π_<i) ], with q_i the pass's softmax at position i and λ = ``weight`` (0.5 in the paper). A
   committed column adds only its proxy term (its drafter term is the same for every path).
3. **Search.** Beam search of width ``beam`` (B = 3 in the paper) left to right over the columns; the best
   full path gives the tokens. Ties keep the earlier hypothesis (the more probable candidate of a better
   beam), so λ = 1 with any width reproduces the per-position argmax.

Where this engine fills in what the paper leaves open or assumes otherwise (also in the README):

* **The lattice is one denoising pass over the active sub-block** (8 positions by default), not one pass
  over the whole k-token draft: the block-diffusion engine reads the logits of the active sub-block only.
  The drafter then commits the path's tokens by its usual rule (above θ, plus the most confident), each
  with the probability the pass gave the *path's* token; uncommitted positions are searched again in the
  next pass with the committed ones fixed. At θ → 0 every pass commits its whole path (the paper's single
  refinement step, S = 1, per sub-block).
* **Tokens that cache-writing passes yield** (the one token after each complete block) stay the argmax: such
  a pass has a single predicted position, no lattice.
* **Causal proxy.** The paper's proxy is a 3-gram KenLM fitted on each dataset's training split; none is
  available offline here, so the proxy is :class:`~failfast_bench.drafters.context_ngram.ContextNgram`, a
  3-gram model counted online over the question's committed tokens (prompt + accepted output).
* **Stop tokens** are ordinary candidates; the drafter cuts the draft after the first one, so positions
  after it do not matter, and every path is scored over the same number of columns (no length bias).
* **Cost.** The search runs on the CPU beside the drafter and adds no drafter pass: modeled latency does not
  charge it; measured wall-clock time includes it.

Temperature > 0 is refused for CPS (``config.validate`` and the drafter): a path token at position i is a
deterministic choice that reads the candidates of positions right of i, which at T > 0 are random draws
that later commits condition on, so x_i is not distributed as any q_i the verifier could be given; exact
rejection sampling would need the distribution the search induces, which nothing computes.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from .context_ngram import ContextNgram

# A lattice column: the candidates (token, drafter probability) of a masked position, or a committed token.
Column = Union[int, list[tuple[int, float]]]


def candidates(proposable: torch.Tensor, *, top_m: int, mass: float, ids: Optional[torch.Tensor] = None) -> list[tuple[int, float]]:
    """One masked position's column: its most probable proposable tokens until their probability reaches
    ``mass``, at most ``top_m``. ``proposable`` holds the pass's probabilities with refused ids set below 0;
    ``ids`` maps rows to token ids (a draft vocabulary), ``None`` = rows are token ids."""
    proposable = proposable.float()
    k = min(int(top_m), proposable.shape[-1])
    values, rows = torch.topk(proposable, k)
    if k < proposable.shape[-1] and values[-1] == values[0]:  # more ties at the top than candidates: rank them all
        values, rows = torch.sort(proposable, descending=True, stable=True)
        values, rows = values[:k], rows[:k]
    # Equal probabilities in id order (topk leaves ties unordered), so the first candidate is torch.argmax's token.
    ranked = sorted(zip(values.tolist(), rows.tolist()), key=lambda vr: (-vr[0], vr[1]))
    column: list[tuple[int, float]] = []
    reached = 0.0
    for value, row in ranked:
        if value <= 0.0 and column:
            break  # refused or impossible tokens never widen the lattice
        token = int(ids[row]) if ids is not None else int(row)
        column.append((token, max(value, 0.0)))
        reached += value
        if reached >= mass:
            break
    return column


class CausalPathSearch:
    def __init__(self, proxy: ContextNgram, *, beam: int = 3, top_m: int = 15, mass: float = 0.8, weight: float = 0.5):
        if beam < 1 or top_m < 1 or not 0.0 < mass <= 1.0 or not 0.0 <= weight <= 1.0:
            raise ValueError(f"need beam >= 1, top_m >= 1, 0 < mass <= 1, 0 <= weight <= 1; got {beam}, {top_m}, {mass}, {weight}")
        self.proxy = proxy
        self.beam = int(beam)
        self.top_m = int(top_m)
        self.mass = float(mass)
        self.weight = float(weight)

    def start(self) -> None:
        self.proxy.reset()

    def learn(self, context: Sequence[int]) -> None:
        """The verifier committed ``context`` (prompt + output so far): the proxy counts it."""
        self.proxy.extend(context)

    def column(self, proposable: torch.Tensor, ids: Optional[torch.Tensor] = None) -> list[tuple[int, float]]:
        return candidates(proposable, top_m=self.top_m, mass=self.mass, ids=ids)

    def search(self, history: Sequence[int], columns: Sequence[Column]) -> list[int]:
        """The best path through ``columns``, which continue the committed tokens ``history``."""
        keep = self.proxy.order - 1
        left = list(history[len(history) - keep :]) if keep else []
        beams: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]
        for col in columns:
            options = [(col, None)] if isinstance(col, int) else col
            grown = []
            for score, path in beams:
                tail = left + list(path)
                for token, q in options:
                    step = (1.0 - self.weight) * self.proxy.logprob(tail, token)
                    if q is not None and self.weight > 0.0:  # λ = 0: proxy only (0 · log 0 is undefined)
                        step += self.weight * (math.log(q) if q > 0.0 else -math.inf)
                    grown.append((score + step, path + (token,)))
            grown.sort(key=lambda b: -b[0])  # stable: ties keep the earlier hypothesis
            beams = grown[: self.beam]
        return list(beams[0][1])

    def describe(self) -> dict:
        return {"cps": True, "cps_beam": self.beam, "cps_top_m": self.top_m, "cps_mass": self.mass,
                "cps_weight": self.weight, "cps_proxy": self.proxy.describe()}
