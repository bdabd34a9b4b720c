"""Small autoregressive drafter: fixed speculation length, or the paper's dynamic-length ablation.

The drafter keeps its own KV cache across rounds and crops it to the accepted prefix, so a round costs
exactly one forward per drafted token (the first forward also absorbs the tokens committed last round),
which is what the paper charges (spec_len passes, no prefill). Greedy drafts use the raw argmax, without
any logits processors from a checkpoint's generation config.

At T > 0 each token is drawn from q = the drafter's softmax at temperature T with the run's top-k / top-p
(:class:`~failfast_bench.sampling.Sampling`, the same warp the verifier applies to the target), restricted
to the target's vocabulary; q is reported with the draft. The dynamic rule's confidence stays the T = 0
quantity, the step's maximum untempered probability. Stopping after a chunk on confidences of tokens already
drawn is a stopping time: whether a token is drafted never depends on its own value, so rejection sampling
stays exact.
"""
from __future__ import annotations

from typing import Optional

import torch
from transformers import DynamicCache

from ..sampling import Sampling, draw
from ..verify import ForwardTimer, crop_cache
from .base import STOP_CAP, STOP_FIXED, STOP_LOW_CONFIDENCE, STOP_TOKEN, Draft, Drafter, Verdict


class ARDrafter(Drafter):
    """Drafts greedily with a causal LM.

    Fixed mode drafts ``spec_len`` tokens. Dynamic mode (paper §5, "AR drafter, dynamic length") drafts
    chunks of ``n`` tokens; after each chunk, if any token of that chunk had probability < ``tau`` it returns
    everything drafted so far, otherwise it continues until ``n_max`` tokens.
    """

    name = "ar"

    def __init__(
        self,
        model,
        spec_len: int = 8,
        dynamic: bool = False,
        tau: float = 0.45,
        n: int = 10,
        n_max: int = 60,
        stop_ids: tuple[int, ...] = (),
        sampling: Optional[Sampling] = None,
        vocab_limit: Optional[int] = None,
    ):
        self.model = model
        self.sampling = sampling
        self.vocab_limit = vocab_limit  # ids a sampled draft may hold (the target's vocabulary)
        self.device = next(model.parameters()).device
        self.spec_len = spec_len
        self.dynamic = dynamic
        self.tau = tau
        self.n = n
        self.n_max = n_max
        self.stop_ids = set(stop_ids)
        self.timer = ForwardTimer()
        self.cache: Optional[DynamicCache] = None
        self.cached: list[int] = []  # tokens whose KV is in the cache

    def describe(self) -> dict:
        return {
            "name": self.name,
            "dynamic": self.dynamic,
            "spec_len": self.spec_len,
            "tau": self.tau,
            "n": self.n,
            "n_max": self.n_max,
        }

    def start(self, prompt_ids: list[int]) -> None:
        self.cache = DynamicCache(config=self.model.config)
        self.cached = []

    @torch.inference_mode()
    def _step(self, ids: list[int]) -> torch.Tensor:
        with self.timer.measure(self.device):
            out = self.model(input_ids=torch.tensor([ids], device=self.device), past_key_values=self.cache, use_cache=True)
        self.cached.extend(ids)
        return out.logits[0, -1].float()

    def _sync_cache(self, context: list[int]) -> list[int]:
        """Crop the cache to the longest cached prefix of ``context``; return the tokens still to feed."""
        common = 0
        limit = min(len(self.cached), len(context) - 1)  # always feed at least one token
        while common < limit and self.cached[common] == context[common]:
            common += 1
        if common < len(self.cached):
            crop_cache(self.cache, common)
            del self.cached[common:]
        return context[common:]

    def propose(self, context: list[int]) -> Draft:
        feed = self._sync_cache(context)
        limit = self.n_max if self.dynamic else self.spec_len
        tokens: list[int] = []
        confidences: list[float] = []
        q_rows: list[torch.Tensor] = []
        stop_reason = STOP_CAP if self.dynamic else STOP_FIXED
        while len(tokens) < limit:
            logits = self._step(feed)
            probs = torch.softmax(logits, dim=-1)
            if self.sampling_on:
                q = self.sampling.probs(logits[: self.vocab_limit] if self.vocab_limit else logits)
                token = draw(q, self.generator)
                q_rows.append(q)
                confidences.append(float(probs.max()))
            else:
                token = int(torch.argmax(logits))
                confidences.append(float(probs[token]))
            tokens.append(token)
            feed = [token]
            if token in self.stop_ids:
                stop_reason = STOP_TOKEN
                break
            if self.dynamic and len(tokens) % self.n == 0 and min(confidences[-self.n :]) < self.tau:
                stop_reason = STOP_LOW_CONFIDENCE
                break
        return Draft(tokens=tokens, confidences=confidences, passes={"decode": len(tokens)}, stop_reason=stop_reason,
                     q=torch.stack(q_rows) if q_rows else None)

    def observe(self, draft: Draft, verdict: Verdict) -> None:
        # Cached: context + draft[:-1]. Keep what the target agreed with; the rest is refed next round.
        pass  # _sync_cache at the next propose compares token ids, which covers every case.
