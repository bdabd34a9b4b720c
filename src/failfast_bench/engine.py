"""One speculative-decoding loop for every drafter: propose → verify → accept → roll back.

Output accounting follows the paper (§8): a round appends the accepted draft tokens plus the target's
correction or bonus token; the question stops once the output holds ``max_new_tokens`` tokens (the last
round may overshoot, and those tokens count, as in the authors' code) or when a stop token is appended
(the output is cut right after the first stop token: anything the target verified past it is not output).

At T > 0 the verifier and the drafter draw from per-question random streams derived from ``seed`` and the
question id (:func:`~failfast_bench.sampling.stream_seed`), so a question's tokens are reproducible, and
``Generation.extra["sampling"]`` sums the rejection sampler's per-position statistics for the question.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from .drafters.base import Draft, Drafter, Verdict
from .sampling import stream_seed
from .trace import RoundRecord
from .verify import TargetVerifier, synchronize


@dataclass
class Generation:
    """Everything one question produced."""

    output_tokens: list[int]
    rounds: list[RoundRecord]
    stopped_by_eos: bool
    wall_seconds: float
    prefill_seconds: float
    drafter_seconds: float
    verify_seconds: float
    forward_seconds: float
    extra: dict = field(default_factory=dict)


def _drafter_forward_seconds(drafter: Drafter) -> float:
    timer = getattr(drafter, "timer", None)
    return float(getattr(timer, "seconds", 0.0)) if timer is not None else 0.0


def generate(
    verifier: TargetVerifier,
    drafter: Drafter,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    question_id: str = "",
    on_round: Optional[Callable[[RoundRecord], None]] = None,
    seed: int = 0,
) -> Generation:
    """Decode one prompt with ``drafter`` proposing and ``verifier`` deciding (greedy, or sampling at T > 0)."""
    prompt = list(prompt_ids)
    stops = set(int(s) for s in stop_ids)
    sampling = bool(getattr(verifier, "sampling", False))
    if sampling:
        verifier.set_rng(stream_seed(seed, question_id, "target"))
    set_rng = getattr(drafter, "set_rng", None)
    if set_rng is not None:
        set_rng(stream_seed(seed, question_id, "drafter"))
    sample_stats = {"examined": 0, "accept_prob_sum": 0.0, "overlap_sum": 0.0}
    verifier.timer.reset()
    drafter_timer = getattr(drafter, "timer", None)
    if drafter_timer is not None:
        drafter_timer.reset()
    devices = getattr(verifier, "devices", verifier.device)  # all GPUs of a device-mapped target
    synchronize(devices)
    t_start = time.perf_counter()
    features = verifier.start(prompt)
    drafter.start(prompt)
    if features is not None and hasattr(drafter, "observe_prompt_features"):
        drafter.observe_prompt_features(features)
    prefill_seconds = time.perf_counter() - t_start

    output: list[int] = []
    rounds: list[RoundRecord] = []
    drafter_total = verify_total = 0.0
    stopped_by_eos = False
    while len(output) < max_new_tokens:
        drafter.set_remaining(max_new_tokens - len(output))
        context = prompt + output
        fwd_before = _drafter_forward_seconds(drafter)
        t0 = time.perf_counter()
        draft: Draft = drafter.propose(context)
        t1 = time.perf_counter()
        verdict: Verdict = verifier.verify(draft)
        t2 = time.perf_counter()
        drafter.observe(draft, verdict)
        t3 = time.perf_counter()
        if verdict.accept_probs:
            sample_stats["examined"] += len(verdict.accept_probs)
            sample_stats["accept_prob_sum"] += float(sum(verdict.accept_probs))
            sample_stats["overlap_sum"] += float(sum(verdict.overlaps or ()))
        if draft.tree_parents is not None and verdict.accepted_path is not None:
            accepted_tokens = [draft.tokens[i] for i in verdict.accepted_path]
        else:
            accepted_tokens = list(draft.tokens[: verdict.accepted_len])
        new_tokens = accepted_tokens + [verdict.next_token]
        stop_at = next((i for i, t in enumerate(new_tokens) if t in stops), None)
        if stop_at is not None:
            new_tokens = new_tokens[: stop_at + 1]
            stopped_by_eos = True
        output.extend(new_tokens)
        drafter_s = (t1 - t0) + (t3 - t2)
        drafter_total += drafter_s
        verify_total += t2 - t1
        passes = draft.passes
        record = RoundRecord(
            question_id=question_id,
            round=len(rounds),
            prefix_len=len(context),
            draft_tokens=[int(t) for t in draft.tokens],
            draft_len=int(draft.spec_len),
            accepted_len=int(verdict.accepted_len),
            next_token=int(verdict.next_token),
            bonus=bool(verdict.bonus),
            target_tokens=[int(t) for t in verdict.target_tokens],
            confidences=[float(c) for c in draft.confidences],
            recorded_confidences=[float(c) for c in (draft.recorded_confidences or [])],
            passes_prefill=int(passes.get("prefill", 0)),
            passes_denoise=int(passes.get("denoise", 0)),
            passes_cache_update=int(passes.get("cache_update", 0)),
            passes_decode=int(passes.get("decode", 0)),
            drafter_passes=int(draft.total_passes),
            stop_reason=draft.stop_reason,
            committed=len(new_tokens),
            drafter_seconds=drafter_s,
            verify_seconds=t2 - t1,
            drafter_forward_seconds=_drafter_forward_seconds(drafter) - fwd_before,
            verify_forward_seconds=verifier.last_verify_forward_seconds,
            verified_tokens=int(verifier.last_verified_tokens),
            reused_draft=bool(draft.extra.get("reused_draft", False)),
        )
        rounds.append(record)
        if on_round is not None:
            on_round(record)
        if stopped_by_eos:
            break
    synchronize(devices)
    wall = time.perf_counter() - t_start
    return Generation(
        output_tokens=output,
        rounds=rounds,
        stopped_by_eos=stopped_by_eos,
        wall_seconds=wall,
        prefill_seconds=prefill_seconds,
        drafter_seconds=drafter_total,
        verify_seconds=verify_total,
        forward_seconds=verifier.timer.seconds + _drafter_forward_seconds(drafter),
        extra={"sampling": sample_stats} if sampling else {},
    )


def first_divergence(output: Sequence[int], reference: Sequence[int]) -> Optional[int]:
    """Index of the first token where ``output`` differs from ``reference``; ``None`` if one is a prefix of
    the other up to the shorter length and both stop at the same place (the spec output may only overshoot)."""
    for i, (a, b) in enumerate(zip(output, reference)):
        if a != b:
            return i
    if len(output) < len(reference):
        return len(output)
    return None
