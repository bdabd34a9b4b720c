"""DiffuSpec's adaptive draft length (ADL, arXiv 2510.02358 §4.3): the next proposal's length from feedback.

Each round drafts exactly k_t tokens (the window is fixed while drafting, like :class:`FixedLength`). After the
verifier's verdict on round t, two exponential moving averages are updated and the next length is set:

    L_gen(t)  = drafted tokens before the first stop token, at most k_t        (EOS-aware generated length)
    L_acc(t)  = accepted draft tokens
    Ḡ(t) = (1 − ρ) · Ḡ(t−1) + ρ · L_gen(t),     Ā(t) = (1 − ρ) · Ā(t−1) + ρ · L_acc(t)
    k(t+1)    = clip( ⌊Ḡ(t)⌋ + δ · 1[Ā(t) ≥ Ḡ(t)],  k_min, k_max )

so the length follows what the drafter actually produces (a stop token shortens it), and grows by δ only
while the verifier accepts as much as is drafted. Paper values (its Appendix A): k_min = 20, k_max = 30,
δ = 10, ρ = 0.5. Source: the rule, its bounds and its smoothing as a public reimplementation
(github.com/pluto0x0/DiffuSpec) quotes the paper's Eqs. 9-11 and Appendix A; only the paper's abstract could be
read here, so they are not checked against its text.

Choices the paper leaves open or that this engine forces (also recorded in the README):

* **Start of a question**: Ḡ = Ā = 0 and k_1 = k_max (per question; nothing carries across questions).
* **L_acc counts accepted draft tokens only**, not the verifier's correction or bonus token.
* **L_gen is measured on the proposed draft**: with CPS on, that is the searched path (the engine has no
  separate "raw" draft: the path is what the denoiser commits). A draft cut short by the drafter's token
  budget counts its real length.
* **Lengths are whole positions of the block-diffusion window**: drafting k tokens costs as many denoising
  passes as the engine needs to commit them (sub-blocks of 8 by default), not one pass.
* The rule reads only verdicts of finished rounds, never the tokens being drafted, so it is valid at T > 0.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

from ..base import STOP_FIXED
from .base import LengthPolicy


def generated_length(tokens: Sequence[int], stop_ids: frozenset, limit: int) -> int:
    """Drafted tokens before the first stop token, at most ``limit`` (L_gen)."""
    for i, token in enumerate(tokens):
        if token in stop_ids:
            return min(i, limit)
    return min(len(tokens), limit)


class AdaptiveLength(LengthPolicy):
    name = "adaptive"

    def __init__(self, *, k_min: int = 20, k_max: int = 30, delta: int = 10, rho: float = 0.5, stop_ids: Sequence[int] = ()):
        if not 1 <= k_min <= k_max or delta < 0 or not 0.0 < rho <= 1.0:
            raise ValueError(f"need 1 <= k_min <= k_max, delta >= 0, 0 < rho <= 1; got {k_min}, {k_max}, {delta}, {rho}")
        self.k_min, self.k_max, self.delta, self.rho = int(k_min), int(k_max), int(delta), float(rho)
        self.stop_ids = frozenset(int(s) for s in stop_ids)
        self.start()

    def start(self) -> None:
        self.generated = 0.0  # Ḡ
        self.accepted = 0.0  # Ā
        self.k = self.k_max

    def initial_window(self) -> int:
        return self.k

    def decide(self, st) -> Union[str, int]:
        return STOP_FIXED  # the window is the whole proposal: stop once it is committed

    def observe(self, draft, verdict) -> None:
        produced = generated_length(draft.tokens, self.stop_ids, self.k)
        self.generated = (1.0 - self.rho) * self.generated + self.rho * produced
        self.accepted = (1.0 - self.rho) * self.accepted + self.rho * int(verdict.accepted_len)
        grow = self.delta if self.accepted >= self.generated else 0
        self.k = min(self.k_max, max(self.k_min, math.floor(self.generated) + grow))

    def describe(self) -> dict:
        return {"policy": self.name, "k_min": self.k_min, "k_max": self.k_max, "delta": self.delta, "rho": self.rho}
