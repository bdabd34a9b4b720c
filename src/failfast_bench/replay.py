"""Trace replay: score drafter configs against the target's cached greedy continuation, without the target.

Under greedy decoding the target's verdicts depend only on its greedy continuation of the prompt. After c
committed output tokens (a prefix of that continuation, by losslessness) the target's choice after
``draft[:i]`` is ``continuation[c + i]`` for as long as the draft matches it. So one continuation per
(target, numerics, question), generated once with the target and cached, replaces every target forward of
every drafter config of a sweep: ``run.replay=true``.

The continuation must reach past ``max_new_tokens``: the last round starts below the limit and verifies a
whole draft, so it needs up to the config's longest possible draft + 1 more tokens
(:func:`continuation_length`); a config that needs more than the cache holds extends the cached entry. It
also keeps the one token the target picks after its first stop token, which is the bonus token of a round
whose draft ends with that stop token.

Drafters that read the target's hidden states (EAGLE-3, the target-conditioned block drafter) get them from
one target forward per question over prompt + continuation (every round's context is a prefix of it): the
same taps verification computes, up to floating-point summation order, so a replayed draft can in rare
near-ties differ from the live one (the output cannot: it is the continuation).

What replay cannot give: the target's argmax past the first rejected draft token (a live verifier records
it, replay records the accepted prefix and the correction only), and wall-clock speedups (the drafter
still runs, the target does not: the measured speedup is NaN; modeled speedups are exact). With
``run.trajectories=true`` a block-diffusion drafter's passes come from the trajectory store
(``trajectory_store.py``): only passes that no earlier run made reach its model.

Sampling (``run.temperature > 0``): the target's verdicts are then random draws against the drafter's own
random draft, not a fixed continuation, so a sampled trace can be re-priced (``failfast_bench.report`` prices
stored rounds under any hardware profile) but not re-scored: replay is refused before anything loads.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from .assets import cache_root
from .config import ConfigError
from .drafters.base import STOP_EMPTY, Draft, Verdict
from .trace import write_json
from .verify import ForwardTimer

class ReplayError(RuntimeError):
    """A draft asked for target tokens the cached continuation does not hold."""


def check_replayable(cfg) -> None:
    """Refuse, before anything loads, configs whose verdicts need more than the target's tokens."""
    temperature = float(getattr(cfg.run, "temperature", 0.0) or 0.0) if getattr(cfg, "run", None) is not None else 0.0
    if temperature > 0.0:
        raise ConfigError(
            f"run.replay=true needs run.temperature=0 (got {temperature:g}): at T > 0 verdicts are random draws, not a "
            f"cached greedy continuation, so a sampled trace can be re-priced (python -m failfast_bench.report) but not re-scored"
        )


def max_draft_len(drafter_cfg) -> int:
    """An upper bound on the tokens one draft of this config may hold."""
    d = drafter_cfg
    if d.name == "vanilla":
        return 0
    if d.name == "ar":
        return int(d.n_max if d.dynamic else d.spec_len)
    # Block-diffusion drafters never generate more than their per-call budget; take every length knob
    # into account so an unusual config (spec_len or n_max above the budget) stays covered.
    return int(max(d.budget, d.spec_len, d.n_max))


def continuation_length(cfg) -> int:
    """Continuation tokens a replayed run of ``cfg`` may need (see the module docstring)."""
    return int(cfg.run.max_new_tokens) + max_draft_len(cfg.drafter) + 1


@dataclass
class Continuation:
    """The target's greedy tokens after a prompt. ``complete``: it ran one token past its first stop token,
    so no verdict can ever need more of it."""

    tokens: list[int]
    complete: bool

    def covers(self, length: int) -> bool:
        return self.complete or len(self.tokens) >= length


def greedy_continuation(verifier, prompt_ids: Sequence[int], length: int, stop_ids: Sequence[int],
                        known: Sequence[int] = ()) -> Continuation:
    """Decode with the live verifier one token per forward, exactly as vanilla decoding does.

    Stops after ``length`` tokens or one token after the first stop token, whichever comes first.
    ``known`` is a shorter cached continuation to extend: it is prefilled, not decoded again.
    """
    stops = set(int(s) for s in stop_ids)
    tokens = [int(t) for t in known]
    if any(t in stops for t in tokens[:-1]):
        return Continuation(tokens, complete=True)
    verifier.start(list(prompt_ids) + tokens)
    empty = Draft(tokens=[], stop_reason=STOP_EMPTY)
    stop_seen = bool(tokens) and tokens[-1] in stops
    while len(tokens) < length:
        token = int(verifier.verify(empty).next_token)
        tokens.append(token)
        if stop_seen:
            return Continuation(tokens, complete=True)
        stop_seen = token in stops
    return Continuation(tokens, complete=False)


def vanilla_output(continuation: Sequence[int], max_new_tokens: int, stop_ids: Sequence[int]) -> list[int]:
    """What vanilla decoding outputs: the continuation cut after its first stop token, at most max_new_tokens."""
    stops = set(int(s) for s in stop_ids)
    out: list[int] = []
    for token in continuation[:max_new_tokens]:
        out.append(int(token))
        if token in stops:
            break
    return out


class ContinuationStore:
    """Cached continuations keyed by (target identity, question id, prompt ids); the longest one is kept,
    so every max_new_tokens and every drafter config shares one entry (greedy decoding is prefix-stable)."""

    def __init__(self, target_id: str, root: Optional[Path] = None):
        self.root = (root or cache_root() / "continuation") / target_id

    def _path(self, question_id: str, prompt: Sequence[int]) -> Path:
        key = hashlib.sha256(json.dumps([question_id, list(prompt)]).encode()).hexdigest()[:24]
        return self.root / f"{key}.json"

    def get(self, question_id: str, prompt: Sequence[int]) -> Optional[Continuation]:
        path = self._path(question_id, prompt)
        if not path.exists():
            return None
        saved = json.loads(path.read_text())
        return Continuation(list(saved["tokens"]), bool(saved["complete"]))

    def put(self, question_id: str, prompt: Sequence[int], continuation: Continuation) -> None:
        old = self.get(question_id, prompt)
        if old is not None and (old.complete or len(old.tokens) >= len(continuation.tokens)) and not continuation.complete:
            return  # never replace a longer entry (another process may have written it meanwhile)
        write_json(
            {"question_id": question_id, "tokens": list(continuation.tokens), "complete": continuation.complete},
            self._path(question_id, prompt),
        )

    def get_or_make(self, question_id: str, prompt: Sequence[int], length: int,
                    make: Callable[[Sequence[int]], Continuation]) -> Continuation:
        """The cached continuation if it is long enough, else ``make(cached tokens)`` (which extends it)."""
        cached = self.get(question_id, prompt)
        if cached is not None and cached.covers(length):
            return cached
        made = make(cached.tokens if cached is not None else [])
        self.put(question_id, prompt, made)
        return made


class ReplayVerifier:
    """:class:`~failfast_bench.verify.TargetVerifier`'s interface, with verdicts read from a continuation.

    ``continuation_of(prompt_ids)`` returns the target's greedy continuation of that prompt. Chain and
    tree drafts are supported; the recorded ``verified_tokens`` is what the live target would have been
    fed, so latency models price a replayed round exactly like a live one.
    """

    def __init__(self, continuation_of: Callable[[Sequence[int]], Sequence[int]], device=None,
                 features_of: Optional[Callable[[Sequence[int]], torch.Tensor]] = None, feature_layers: Sequence[int] = ()):
        self.continuation_of = continuation_of
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        # Drafters reading target taps: ``features_of(ids)`` gives the taps of every position of ids.
        self.feature_layers = tuple(feature_layers)
        self.features_of = features_of
        self._taps: Optional[torch.Tensor] = None
        self._prompt_len = 0
        self.timer = ForwardTimer()
        self.continuation: list[int] = []
        self.position = 0  # output tokens committed so far = index of the target's next choice
        self.last_verify_forward_seconds = 0.0
        self.last_verified_tokens = 0

    def start(self, prompt_ids: list[int]) -> None:
        if not prompt_ids:
            raise ValueError("empty prompt")
        self.continuation = [int(t) for t in self.continuation_of(prompt_ids)]
        self.position = 0
        self._prompt_len = len(prompt_ids)
        if not self.feature_layers:
            return None
        self._taps = self.features_of(list(prompt_ids) + self.continuation)
        return self._taps[: len(prompt_ids) - 1] if len(prompt_ids) > 1 else None

    def _hidden(self, accepted: int) -> Optional[torch.Tensor]:
        """Taps of the round's last context token and the ``accepted`` tokens after it (what a live
        verification returns)."""
        if self._taps is None:
            return None
        ell = self._prompt_len + self.position
        return self._taps[ell - 1 : ell + accepted]

    def _target_at(self, index: int) -> int:
        if index >= len(self.continuation):
            raise ReplayError(
                f"a draft reaches output position {index} but the cached continuation holds {len(self.continuation)} "
                f"tokens; drafts longer than replay.continuation_length allows, or tokens drafted past the stop "
                f"token, cannot be replayed"
            )
        return self.continuation[index]

    def verify(self, draft: Draft) -> Verdict:
        if draft.tree_parents is not None:
            return self.verify_tree(draft)
        tokens = [int(t) for t in draft.tokens]
        n = 0
        while n < len(tokens) and tokens[n] == self._target_at(self.position + n):
            n += 1
        next_token = self._target_at(self.position + n)
        verdict = Verdict(
            accepted_len=n,
            next_token=next_token,
            target_tokens=self.continuation[self.position : self.position + n + 1],
            bonus=n == len(tokens),
            hidden_states=self._hidden(n),
        )
        self.last_verified_tokens = len(tokens) + 1
        self.position += n + 1
        return verdict

    def verify_tree(self, draft: Draft) -> Verdict:
        """Follow the tree along the continuation: the longest root path equal to it is accepted."""
        tokens = [int(t) for t in draft.tokens]
        children: dict[int, list[int]] = {}
        for i, parent in enumerate(draft.tree_parents or []):
            if parent >= i:
                raise ValueError("tree_parents must list parents before children")
            children.setdefault(parent, []).append(i)
        path: list[int] = []
        node = -1
        while True:
            want = self._target_at(self.position + len(path))
            node = next((c for c in children.get(node, []) if tokens[c] == want), None)
            if node is None:
                break
            path.append(node)
        next_token = self._target_at(self.position + len(path))
        verdict = Verdict(
            accepted_len=len(path),
            next_token=next_token,
            target_tokens=self.continuation[self.position : self.position + len(path) + 1],
            bonus=len(path) > 0 and not children.get(path[-1]),
            accepted_path=path,
            hidden_states=self._hidden(len(path)),
        )
        self.last_verified_tokens = len(tokens) + 1
        self.position += len(path) + 1
        return verdict
