"""A causal n-gram language model counted over one question's committed tokens: CPS's causal proxy.

DiffuSpec scores lattice paths with a cheap causal language model beside the diffusion drafter (the paper
fits a 3-gram KenLM on each dataset's training split). The embedded default ships no such model and no
training split, so this substitute counts n-grams over what the verifier has already committed for the
question: the prompt and the accepted output so far. It learns online, needs no data and no model, and
never sees a token the verifier has not committed (no leakage of the reference continuation).

Smoothing interpolates each order with the next lower one through a Dirichlet prior, which keeps every estimate a proper
distribution (the beam search adds log-probabilities, so they must be comparable):

    p_0(w)       = 1 / V
    p_k(w | h_k) = (c(h_k, w) + α · p_(k-1)(w | h_(k-1))) / (c(h_k) + α),   h_k = the last k tokens

for k = 1 .. order (order 3 = trigram: k = 1 is the unigram level with an empty history). α = ``prior``.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Sequence


class ContextNgram:
    def __init__(self, vocab_size: int, order: int = 3, prior: float = 1.0):
        if vocab_size < 1 or order < 1 or prior <= 0:
            raise ValueError(f"need vocab_size >= 1, order >= 1, prior > 0; got {vocab_size}, {order}, {prior}")
        self.vocab_size = int(vocab_size)
        self.order = int(order)
        self.prior = float(prior)
        self.reset()

    def reset(self) -> None:
        self._counted: list[int] = []
        self._next: dict[tuple, Counter] = defaultdict(Counter)  # history -> next-token counts
        self._total: Counter = Counter()  # history -> tokens counted after it

    def extend(self, context: Sequence[int]) -> None:
        """Count the tokens of ``context`` not counted yet; a context that does not extend the counted one
        (a new question without :meth:`reset`) is counted afresh."""
        context = [int(t) for t in context]
        if context[: len(self._counted)] != self._counted:
            self.reset()
        for i in range(len(self._counted), len(context)):
            for k in range(min(self.order - 1, i) + 1):
                history = tuple(context[i - k : i])
                self._next[history][context[i]] += 1
                self._total[history] += 1
        self._counted = context

    def logprob(self, history: Sequence[int], token: int) -> float:
        """log p(token | the last order-1 tokens of history), natural log."""
        p = 1.0 / self.vocab_size
        tail = tuple(history[len(history) - (self.order - 1) :]) if self.order > 1 else ()
        for k in range(min(len(tail), self.order - 1) + 1):
            h = tail[len(tail) - k :] if k else ()
            total = self._total.get(h, 0)
            if total == 0:
                break  # no longer history was seen either
            p = (self._next[h].get(int(token), 0) + self.prior * p) / (total + self.prior)
        return math.log(p)

    def describe(self) -> dict:
        return {"proxy": "context_ngram", "order": self.order, "prior": self.prior}
