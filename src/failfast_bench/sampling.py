"""Sampling at T > 0: the warped next-token distribution and the per-question random streams.

``run.temperature = 0`` is greedy decoding (argmax everywhere, token-exact against vanilla). At T > 0 the
target's distribution is p = warp(target logits) and every drafter draws its tokens from q = warp(drafter
logits) with the *same* warp (:meth:`Sampling.probs`): divide the logits by T, keep the ``top_k`` largest
(ties at the k-th value are kept), then the smallest set of most likely tokens whose mass reaches ``top_p``
(the most likely token is always kept), renormalise. Speculative sampling then reproduces, in distribution,
vanilla sampling from the warped target.

Random numbers come from per-question streams: :func:`stream_seed` hashes (``run.seed``, question id, stream
name) into a 63-bit seed, so a question's tokens do not depend on which questions ran before it, and a rerun
of the same config on the same device gives identical tokens. The target (acceptance tests, residual and
bonus draws) and the drafter use separate streams.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional

import torch


@dataclass(frozen=True)
class Sampling:
    """``temperature`` (0 = greedy), ``top_p`` in (0, 1] (1 = off), ``top_k`` >= 0 (0 = off)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @classmethod
    def from_run(cls, run: Any) -> "Sampling":
        """From a ``run`` config section (missing keys: greedy)."""
        get = (lambda k, d: run.get(k, d)) if hasattr(run, "get") else (lambda k, d: getattr(run, k, d))
        temperature = get("temperature", 0.0)
        top_p = get("top_p", 1.0)
        top_k = get("top_k", 0)
        return cls(float(temperature or 0.0), float(1.0 if top_p is None else top_p), int(top_k or 0))

    def describe(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The warped distribution over the last dimension, float32. ``-inf`` logits get probability 0."""
        if self.greedy:
            raise ValueError("Sampling.probs needs temperature > 0 (temperature 0 is the greedy argmax)")
        x = logits.float() / self.temperature
        if 0 < self.top_k < x.shape[-1]:
            kth = torch.topk(x, self.top_k, dim=-1).values[..., -1:]
            x = x.masked_fill(x < kth, float("-inf"))
        probs = torch.softmax(x, dim=-1)
        if self.top_p < 1.0:
            ordered, order = probs.sort(dim=-1, descending=True)
            before = ordered.cumsum(dim=-1) - ordered  # mass of the strictly more likely tokens
            drop = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, before >= self.top_p)
            probs = probs.masked_fill(drop, 0.0)
            probs = probs / probs.sum(dim=-1, keepdim=True)
        return probs


GREEDY = Sampling()


def sampling_of(cfg: Any) -> Sampling:
    """The sampling settings of a run config (``cfg.run``); greedy when it has none."""
    run = getattr(cfg, "run", None)
    return GREEDY if run is None else Sampling.from_run(run)


def stream_seed(seed: int, question_id: str, stream: str) -> int:
    """A 63-bit seed for one question's random stream (stable across processes and Python versions)."""
    digest = hashlib.sha256(f"{int(seed)}\x00{question_id}\x00{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def new_generator(seed: int, device: Any = "cpu") -> torch.Generator:
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(int(seed))
    return generator


def draw(probs: torch.Tensor, generator: Optional[torch.Generator]) -> int:
    """One token from a probability vector."""
    return int(torch.multinomial(probs, 1, generator=generator))


def uniform(generator: Optional[torch.Generator], device: Any) -> float:
    """One uniform draw in [0, 1)."""
    dev = generator.device if generator is not None else torch.device(device)
    return float(torch.rand((), generator=generator, device=dev))


def align(q: torch.Tensor, width: int) -> torch.Tensor:
    """Distributions ``q`` [..., V_q] over token ids 0..V_q-1 as [..., width]: zero-padded, or cut where they
    hold no mass (a drafter never draws an id the target cannot score)."""
    have = q.shape[-1]
    if have == width:
        return q
    if have < width:
        return torch.nn.functional.pad(q, (0, width - have))
    if float(q[..., width:].sum()) > 1e-6:
        raise ValueError(f"a drafter distribution puts mass on ids >= {width}, past the target's vocabulary")
    return q[..., :width]
