"""The one interface every length policy implements: *when* a block-diffusion drafter stops drafting.

The drafter (:class:`~failfast_bench.drafters.dllm.BlockDiffusionDrafter`) owns *what* is drafted: passes,
commits, confidences, the block cache. After every denoising pass that leaves the whole window
[ℓ, ℓ+L) committed it asks its policy :meth:`LengthPolicy.decide`. The policy reads the round's state
(duck-typed, see ``RoundState`` below) and never calls a model.

``RoundState`` (``drafters.dllm._Round``) attributes a policy may read:

* ``ell``: the context length ℓ (the first drafted position); ``window_end``: ℓ + L.
* ``seq``: the context then the round's block positions (``None`` = still masked).
* ``conf``: position -> the confidence its token was committed with.
* ``recorded``: every confidence of every masked position each denoising pass read, in order (FailFast's C).
* ``passes``: drafter passes so far by kind (prefill, denoise, cache_update).
* ``window_confidences()``: the commit-time confidences of the window's committed positions.

A policy may also rewrite the round in :meth:`on_stop` (FailFast's draft reuse does).
"""
from __future__ import annotations

from typing import Any, Optional, Union


class LengthPolicy:
    """Initial window, a decision at each check, what the trace records, and verdict feedback."""

    name = "policy"

    def start(self) -> None:
        """A new question begins (forget per-question feedback)."""

    def initial_window(self) -> int:
        """L at the start of a round."""
        raise NotImplementedError

    def decide(self, st) -> Union[str, int]:
        """Called after a denoising pass that completed the window: a stop reason (``drafters.base.STOP_*``),
        or how many positions to widen the window by."""
        raise NotImplementedError

    def recorded(self, st) -> Optional[list[float]]:
        """The confidences the round's trace records as ``recorded_confidences`` (None = nothing)."""
        return None

    def on_stop(self, st, reason: str) -> None:
        """Runs when :meth:`decide` stopped the round (it may rewrite the round's draft)."""

    def observe(self, draft, verdict) -> None:
        """The verifier judged the round's draft."""

    def describe(self) -> dict[str, Any]:
        """Keys merged into the drafter's ``describe()`` (the manifest)."""
        return {}

    def check_sampling(self, sampling_on: bool) -> None:
        """Refuse settings that cannot run at T > 0 (called once by the drafter)."""
