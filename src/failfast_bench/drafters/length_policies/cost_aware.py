"""Cost-aware stopping: widen the draft while the expected gain of the next N positions pays for them.

Assumes the drafter's commit-time confidences are calibrated acceptance probabilities (F11 measures how
far they are) and that a hardware profile prices a drafter pass, a target decode step and, optionally, a
k-token verification. No τ: the break-even point moves with the profile instead.

At every check (the window [ℓ, ℓ+L) is fully committed), with c_i the commit-time confidence of draft
position i (i = 1..L in the window, L+1..L+N the candidate extension, N = min(n, n_max − L)):

    P_j      = c_1 · c_2 · ... · c_(L+j)            (the whole prefix up to L+j survives verification)
    gain_ms  = step_ms · Σ_{j=1..N} P_j              (expected extra accepted tokens x one target step each)
    cost_ms  = passes(N) · pass_ms + verify_ms(L+1+N) − verify_ms(L+1)
    extend by N   if gain_ms > cost_ms,   else stop (reason ``low_confidence``); stop at L ≥ n_max (``cap``).

* ``step_ms`` is the target's decode step, ``pass_ms`` the drafter's pass (``profile.pass_ms(family)``).
  ``verify_ms(k)`` is the profile's measured verification curve for k fed tokens (draft + the pending
  token, as the refined latency model charges); a profile without a curve charges any length as one
  decode step (paper §10), so that term is 0.
* Extension positions already committed (past the window inside the current sub-block or block) use their
  own confidence; a position not committed yet takes the last known confidence (carried forward). At
  T > 0 no confidence past the window is read (every extension position is carried forward): a confidence
  committed after an extension token was drawn is conditioned on it, and a decision that reads it would
  keep or drop that token depending on its own value (see ``drafters/dllm.py``, "Sampling").
* passes(N): the still-masked extension positions divided by this round's commits per denoising pass so
  far (positions committed past ℓ / denoising passes, at least 1), rounded up, plus one cache-update pass
  per block the extension opens past the current one. It is an estimate: the true count is only known
  after drafting.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

from ..base import STOP_CAP, STOP_LOW_CONFIDENCE
from .base import LengthPolicy


class CostAware(LengthPolicy):
    name = "cost_aware"

    def __init__(
        self,
        *,
        pass_ms: float,
        step_ms: float,
        verify_ms: Optional[Callable[[int], float]] = None,
        n: int = 10,
        n_max: int = 60,
        block_size: int = 32,
        profile: str = "",
    ):
        if n < 1 or n_max < n:
            raise ValueError(f"need 1 <= n <= n_max, got n={n}, n_max={n_max}")
        if pass_ms < 0 or step_ms <= 0:
            raise ValueError(f"need pass_ms >= 0 and step_ms > 0, got {pass_ms}, {step_ms}")
        self.pass_ms = float(pass_ms)
        self.step_ms = float(step_ms)
        self.verify_ms = verify_ms
        self.n = int(n)
        self.n_max = int(n_max)
        self.block_size = int(block_size)
        self.profile = str(profile)
        self.lookahead = True  # read committed confidences past the window (T = 0 only)

    @classmethod
    def from_profile(cls, profile, target: str, drafter: str = "dllm", **kwargs) -> "CostAware":
        """Prices from a :class:`~failfast_bench.latency.HardwareProfile` for ``target`` (its latency key)."""
        curve = profile.verify_ms.get(profile.target_key(target))
        verify = (lambda k: profile.verify_cost_ms(target, k)) if curve else None
        return cls(pass_ms=profile.pass_ms(drafter), step_ms=profile.step_ms(target), verify_ms=verify,
                   profile=profile.name, **kwargs)

    def check_sampling(self, sampling_on: bool) -> None:
        self.lookahead = not sampling_on

    def describe(self) -> dict:
        return {"policy": self.name, "n": self.n, "n_max": self.n_max, "profile": self.profile,
                "pass_ms": self.pass_ms, "step_ms": self.step_ms, "verify_curve": self.verify_ms is not None}

    def initial_window(self) -> int:
        return self.n

    # -- the rule --------------------------------------------------------------------------------
    def extension(self, window_conf: list[float], ahead: list[Optional[float]], masked_ahead: int,
                  rate: float, new_blocks: int, window: int) -> tuple[float, float]:
        """(gain_ms, cost_ms) of widening a window of ``window`` tokens (confidences ``window_conf``) by
        ``len(ahead)`` positions (their confidences, ``None`` = not committed yet)."""
        survive = math.prod(window_conf)
        last = window_conf[-1] if window_conf else 1.0
        expected = 0.0
        for c in ahead:
            last = last if c is None else c
            survive *= last
            expected += survive
        n_ext = len(ahead)
        passes = math.ceil(masked_ahead / max(rate, 1.0)) + new_blocks
        cost = passes * self.pass_ms
        if self.verify_ms is not None:
            cost += self.verify_ms(window + 1 + n_ext) - self.verify_ms(window + 1)
        return expected * self.step_ms, cost

    def decide(self, st) -> Union[str, int]:
        window = st.window_end - st.ell
        if window >= self.n_max:
            return STOP_CAP
        n_ext = min(self.n, self.n_max - window)
        ahead: list[Optional[float]] = []
        masked = 0
        for pos in range(st.window_end, st.window_end + n_ext):
            committed = pos < len(st.seq) and st.seq[pos] is not None
            masked += not committed
            ahead.append(st.conf[pos] if committed and self.lookahead else None)
        committed_total = sum(1 for p in range(st.ell, len(st.seq)) if st.seq[p] is not None)
        rate = committed_total / max(1, st.passes["denoise"])
        end = st.window_end + n_ext
        new_blocks = max(0, -(-(end - len(st.seq)) // self.block_size))
        gain, cost = self.extension(st.window_confidences(), ahead, masked, rate, new_blocks, window)
        return n_ext if gain > cost else STOP_LOW_CONFIDENCE

    def recorded(self, st) -> list[float]:
        return st.window_confidences()
