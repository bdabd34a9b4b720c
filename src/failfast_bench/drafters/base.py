"""The one drafter interface every method implements.

A drafter is told the prompt once per question (:meth:`Drafter.start`), proposes a :class:`Draft` from
the current context each round (:meth:`Drafter.propose`), and hears the verifier's verdict
(:meth:`Drafter.observe`) so it can roll its own caches back. Vanilla decoding is the drafter that
proposes nothing. Acceptance is never decided by a drafter.

At T > 0 (``run.temperature``) a drafter draws its tokens from its own warped distribution with the
question's random stream (:meth:`Drafter.set_rng`) and reports, per drafted token, the exact distribution q
it was drawn from (``Draft.q``), which the verifier's rejection sampling needs. q stays in memory for the
round only; traces never hold it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Optional

from ..sampling import Sampling, new_generator

# Why a draft ended. One vocabulary for every drafter so traces can be compared.
STOP_FIXED = "fixed_length"  # reached spec_len
STOP_LOW_CONFIDENCE = "low_confidence"  # FailFast rule (a) / dynamic AR
STOP_CAP = "cap"  # FailFast rule (b): |C| >= N_max (faithful) or L >= N_max (clean)
STOP_TOKEN = "stop_token"  # the drafter produced the stop token
STOP_BUDGET = "budget"  # the per-call generation budget ran out
STOP_EMPTY = "empty"  # vanilla: nothing drafted
STOP_TREE = "tree"  # a draft tree of fixed shape was built
STOP_REASONS = (STOP_FIXED, STOP_LOW_CONFIDENCE, STOP_CAP, STOP_TOKEN, STOP_BUDGET, STOP_EMPTY, STOP_TREE)

# Kinds of drafter forward passes; modeled latency charges every pass of every kind.
PASS_KINDS = ("prefill", "denoise", "cache_update", "decode")


@dataclass
class Draft:
    """What a drafter proposes for one round.

    ``tokens`` are the proposed continuation of the context (a chain), or the nodes of a tree in
    topological order when ``tree_parents`` is set (parent index per node, -1 = child of the root).
    ``confidences[i]`` is the drafter's probability of ``tokens[i]`` when it was chosen.
    ``passes`` counts drafter forward passes by kind (see ``PASS_KINDS``).
    ``reported_len`` is the speculation length the method reports as its acceptance denominator when
    it differs from ``len(tokens)`` (FailFast's stop-token/budget edge case); ``None`` = ``len(tokens)``.
    ``recorded_confidences`` is FailFast's per-pass confidence list C (faithful mode), for traces.
    At T > 0 a confidence is still the T = 0 quantity, the maximum probability of the drafter's untempered
    softmax at that step (what stopping rules read), even when the drawn token is not the argmax.
    ``q`` (T > 0 only): row i is the distribution over token ids that ``tokens[i]`` was drawn from, shape
    [len(tokens), V] (V may differ from the target's vocabulary; the verifier pads or cuts it). ``None``
    means every token was chosen deterministically (a point mass: greedy drafts, EAGLE-3 trees), which
    rejection sampling also handles exactly.
    """

    tokens: list[int]
    confidences: list[float] = field(default_factory=list)
    passes: dict[str, int] = field(default_factory=dict)
    stop_reason: str = STOP_FIXED
    reported_len: Optional[int] = None
    recorded_confidences: Optional[list[float]] = None
    tree_parents: Optional[list[int]] = None
    extra: dict[str, Any] = field(default_factory=dict)
    q: Any = None

    @property
    def spec_len(self) -> int:
        return len(self.tokens) if self.reported_len is None else self.reported_len

    @property
    def total_passes(self) -> int:
        return int(sum(self.passes.values()))


@dataclass
class Verdict:
    """The verifier's answer to a draft.

    ``accepted_len`` draft tokens were accepted (for a tree: along ``accepted_path``, the node indices);
    ``next_token`` is the target's token after them: the correction at the first mismatch, or the bonus
    token when the whole draft was accepted. ``target_tokens`` is the target's argmax at each verified
    position of the accepted chain (len = accepted_len + 1 for a chain draft; the full chain otherwise).
    ``hidden_states`` holds target features requested by the drafter (EAGLE-3), for the positions of
    the last committed token plus the accepted ones, shape [accepted_len + 1, n_taps * hidden].
    At T > 0 ``target_tokens`` holds the committed tokens (the accepted ones, then ``next_token``), and
    ``accept_probs`` / ``overlaps`` hold, for every draft candidate the rejection sampler examined, its
    acceptance probability min(1, p(x)/q(x)) and the overlap sum_y min(p(y), q(y)) (the chance that a
    fresh draw from q at that position would be accepted, Leviathan et al.'s beta).
    """

    accepted_len: int
    next_token: int
    target_tokens: list[int]
    bonus: bool
    accepted_path: Optional[list[int]] = None
    hidden_states: Any = None
    accept_probs: Optional[list[float]] = None
    overlaps: Optional[list[float]] = None


class Drafter(ABC):
    """Base class of every drafter. Subclasses set ``name`` and implement :meth:`propose`."""

    name: str = "drafter"
    #: target layer indices whose hidden states the drafter needs in :class:`Verdict` (EAGLE-3).
    target_feature_layers: tuple[int, ...] = ()
    #: how tokens are drawn (greedy unless a subclass is built with ``sampling=``) and the question's stream.
    sampling: Optional[Sampling] = None
    generator: Any = None

    @property
    def sampling_on(self) -> bool:
        return self.sampling is not None and not self.sampling.greedy

    def set_rng(self, seed: int) -> None:
        """The question's random stream (called by the engine before :meth:`start`); unused when greedy."""
        if self.sampling_on:
            device = getattr(self, "device", None) or getattr(self, "_device", None) or "cpu"
            self.generator = new_generator(seed, device)

    def start(self, prompt_ids: list[int]) -> None:
        """A new question begins with this prompt (chat-templated token ids)."""

    @abstractmethod
    def propose(self, context: list[int]) -> Draft:
        """Propose a draft continuing ``context`` (prompt + every token committed so far)."""

    def observe(self, draft: Draft, verdict: Verdict) -> None:
        """The verifier judged ``draft``; roll caches back to the accepted prefix."""

    def set_remaining(self, remaining: int) -> None:
        """Tokens the question may still produce; drafters may ignore it (the paper does)."""

    def describe(self) -> dict[str, Any]:
        """Configuration facts worth recording in the manifest."""
        return {"name": self.name}


class VanillaDrafter(Drafter):
    """No drafter: every round verifies the empty draft, i.e. one plain decoding step."""

    name = "vanilla"

    def propose(self, context: list[int]) -> Draft:
        return Draft(tokens=[], stop_reason=STOP_EMPTY)
