"""FailFast's stopping rule (paper Algorithm 1), faithful and clean modes, with optional draft reuse.

Start with L = N; at every check (a) stop if any recorded confidence is below τ, (b) stop at the cap,
(c) otherwise widen L by N. ``mode="faithful"`` copies the authors' code (paper-reference §4.6): the record
C is every confidence every denoising pass read (positions that stay masked and positions past the window
inside the sub-block included; prefill and cache-update tokens never), and the cap tests |C| ≥ N_max.
``mode="clean"`` tests the commit-time confidences of the window's own tokens and caps L itself.

Draft reuse (paper Appendix E, §6): after a fail-fast stop, recycle the previous round's rejected tail when
the new proposal's suffix is found in it (:func:`rejected_overlap`); it needs the verdict (:meth:`observe`).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

from ..base import STOP_CAP, STOP_LOW_CONFIDENCE
from .base import LengthPolicy

MODES = ("faithful", "clean")


def rejected_overlap(rejected: Sequence[int], proposal: Sequence[int]) -> tuple[int, int, int]:
    """Longest suffix of ``proposal`` found as a contiguous run in ``rejected`` (paper §6, step 2).

    Suffix starts are scanned from the left (longest first); for each, the first occurrence in
    ``rejected`` wins. Returns (len(rejected) - j, j, i) for a match starting at rejected[j] and
    proposal[i], or (0, -1, -1).
    """
    rejected, proposal = list(rejected), list(proposal)
    for i in range(len(proposal)):
        suffix = proposal[i:]
        n = len(suffix)
        for j in range(len(rejected) - n + 1):
            if rejected[j : j + n] == suffix:
                return len(rejected) - j, j, i
    return 0, -1, -1


class FailFastPolicy(LengthPolicy):
    name = "failfast"

    def __init__(self, *, tau: float = 0.45, n: int = 10, n_max: int = 60, mode: str = "faithful", reuse_drafts: bool = False):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; valid: {', '.join(MODES)}")
        if n < 1 or n_max < n:
            raise ValueError(f"need 1 <= n <= n_max, got n={n}, n_max={n_max}")
        self.mode = mode
        self.tau = float(tau)
        self.n = int(n)
        self.n_max = int(n_max)
        self.reuse_drafts = bool(reuse_drafts)
        self._previous: Optional[tuple[list[int], list[float], int]] = None

    def check_sampling(self, sampling_on: bool) -> None:
        if self.reuse_drafts and sampling_on:
            raise ValueError("draft reuse selects tokens by their drawn values: it needs temperature 0")

    def start(self) -> None:
        self._previous = None

    def describe(self) -> dict:
        return {"tau": self.tau, "n": self.n, "n_max": self.n_max, "reuse_drafts": self.reuse_drafts}

    def initial_window(self) -> int:
        return self.n

    def decide(self, st) -> Union[str, int]:
        window = st.window_end - st.ell
        if self.mode == "faithful":
            if any(c < self.tau for c in st.recorded):
                return STOP_LOW_CONFIDENCE
            if len(st.recorded) >= self.n_max:
                return STOP_CAP
            return self.n
        if any(c < self.tau for c in st.window_confidences()):
            return STOP_LOW_CONFIDENCE
        if window >= self.n_max:
            return STOP_CAP
        return min(self.n, self.n_max - window)

    def recorded(self, st) -> list[float]:
        return list(st.recorded) if self.mode == "faithful" else st.window_confidences()

    def on_stop(self, st, reason: str) -> None:
        """Draft reuse (paper Appendix E, §6): after a fail-fast stop, recycle last round's rejected tail."""
        if reason != STOP_LOW_CONFIDENCE or not self.reuse_drafts or self._previous is None:
            return
        prev_tokens, prev_conf, accepted = self._previous
        if accepted >= len(prev_tokens) - 1:
            return
        rejected = prev_tokens[accepted + 1 :]
        rejected_conf = prev_conf[accepted + 1 :]
        proposal = [int(t) for t in st.seq[st.ell : st.window_end]]
        count, j, i = rejected_overlap(rejected, proposal)
        if count == 0 or i == len(proposal) - 1 or i + count <= len(proposal):
            return
        new_tokens = proposal[:i] + rejected[j:]
        new_conf = [st.conf[st.ell + k] for k in range(i)] + list(rejected_conf[j:])
        st.seq = st.seq[: st.ell] + new_tokens
        st.conf = {**{p: c for p, c in st.conf.items() if p < st.ell}, **{st.ell + k: c for k, c in enumerate(new_conf)}}
        st.window_end = st.ell + len(new_tokens)
        st.reused_draft = True

    def observe(self, draft, verdict) -> None:
        self._previous = (list(draft.tokens), list(draft.confidences), int(verdict.accepted_len))
