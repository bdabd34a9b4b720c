"""Held-out draft quality, measured the way the drafters are used.

Block diffusion (``dllm`` recipe):

* ``top1``: the first masked position of a denoising pass (the drafter's next-token guess) equals the
  target's greedy token — the held-out top-1 agreement;
* ``one_pass_accepted``: in **one** pass over a block masked from the frontier to its end, the number of
  leading positions that are both correct and above θ (0.05) — what a single FailFast pass yields;
* ``failfast_tokens_per_round``: the project's real :class:`FailFastDrafter` (θ, τ, N, N_max as
  configured) run over held-out responses with the response as the verifier's greedy output; tokens per
  round include the bonus/correction token, exactly as the engine counts them. Also the round's drafter
  passes, and the first-position confidence calibration (mean confidence vs accuracy);
* ``top1_by_target_confidence`` (when the examples carry the target's top-k log-probabilities, as ``stage=eval``
  loads them): top-1 per band of the target's own probability of its greedy token, with each band's share.

Autoregressive (``ar`` recipe): teacher-forced top-1 agreement, and the tokens per round a fixed-length
AR draft of ``spec_len`` tokens would get (the accepted length is the run of correct teacher-forced
guesses, since an AR drafter's context equals the truth until its first mistake).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .data import Example


@dataclass
class EvalSettings:
    examples: int = 8
    points_per_example: int = 6
    sim_tokens: int = 64  # FailFast simulation covers the first sim_tokens response tokens
    theta: float = 0.05
    tau: float = 0.45
    n: int = 10
    n_max: int = 60
    sub_block_size: int = 8
    budget: int = 96
    ar_spec_lens: Sequence[int] = (4, 8)
    stop_ids: Sequence[int] = (2,)
    dtype: str = "bfloat16"  # the drafter copy evaluated (bf16: as shipped, and fast on CPU)


def _points(ex: Example, k: int, block_size: int) -> list[int]:
    """Deterministic context lengths inside the response whose frontier is not at a block start."""
    start, end = len(ex.prompt_ids), len(ex.prompt_ids) + len(ex.response_ids)
    out = []
    for j in range(k):
        ell = start + (j * (end - start)) // k
        if ell % block_size == 0:
            ell += 1
        if ell < end:
            out.append(ell)
    return out


@torch.no_grad()
def evaluate_block_diffusion(lm, examples: Sequence[Example], s: EvalSettings, taps_of: Optional[Callable] = None) -> dict:
    """``lm``: a :class:`~failfast_bench.drafters.blockdiff_model.BlockDiffusionLM` (any dtype).

    A target-conditioned ``lm`` needs ``taps_of(seq)``: the target's taps of every position of ``seq``
    (a held-out response is the target's greedy output, so one forward gives what verification would)."""
    from ..drafters.base import Verdict
    from ..drafters.dllm import FailFastDrafter

    conditioned = bool(getattr(lm, "feature_layers", ()))
    if conditioned and taps_of is None:
        raise ValueError("a target-conditioned drafter is evaluated with the target's taps (taps_of)")
    B = lm.block_size
    top1, accepted, conf_first, pos_acc = [], [], [], np.zeros(B)
    target_conf = []  # the target's probability of its own greedy token at each point's frontier
    pos_n = np.zeros(B)
    taps = {}
    for k, ex in enumerate(examples):
        seq = list(ex.prompt_ids) + list(ex.response_ids)
        if conditioned:
            taps[k] = taps_of(seq)
        for ell in _points(ex, s.points_per_example, B):
            block_start = ell // B * B
            lm.reset()
            if conditioned:
                lm.set_features(taps[k][: ell - 1])
            if block_start:
                lm.write_blocks(seq[:block_start])
            block = seq[block_start:ell] + [lm.mask_token_id] * (block_start + B - ell)
            rows = list(range(ell - block_start, B))
            probs = torch.softmax(lm.denoise(block, rows), -1)
            conf, guess = probs.max(-1)
            truth = seq[ell: block_start + B]
            run = 0
            for i, t in enumerate(truth):
                ok = int(guess[i]) == t
                pos_acc[i] += ok
                pos_n[i] += 1
                if run == i and ok and float(conf[i]) > s.theta:
                    run += 1
            top1.append(int(guess[0]) == truth[0])
            conf_first.append(float(conf[0]))
            if ex.topk_logprobs is not None:
                target_conf.append(_greedy_probability(ex, ell - len(ex.prompt_ids)))
            accepted.append(run)
    lm.reset()
    drafter = FailFastDrafter(lm, theta=s.theta, tau=s.tau, n=s.n, n_max=s.n_max, sub_block_size=s.sub_block_size, budget=s.budget, stop_ids=tuple(s.stop_ids))
    rounds, produced, passes, drafted = 0, 0, 0, 0
    for k, ex in enumerate(examples):
        prompt, response = list(ex.prompt_ids), list(ex.response_ids)[: s.sim_tokens]
        drafter.start(prompt)
        if conditioned:
            drafter.observe_prompt_features(taps[k][: len(prompt) - 1])
        pos = 0
        while pos < len(response):
            draft = drafter.propose(prompt + response[:pos])
            acc = 0
            while acc < len(draft.tokens) and pos + acc < len(response) and draft.tokens[acc] == response[pos + acc]:
                acc += 1
            gained = min(acc + 1, len(response) - pos)
            nxt = response[pos + acc] if pos + acc < len(response) else response[-1]
            ell = len(prompt) + pos
            hidden = taps[k][ell - 1: ell + acc] if conditioned else None
            drafter.observe(draft, Verdict(acc, nxt, response[pos: pos + acc + 1], bonus=acc == len(draft.tokens), hidden_states=hidden))
            rounds += 1
            produced += gained
            passes += draft.total_passes
            drafted += len(draft.tokens)
            pos += gained
    lm.reset()
    return {
        "top1": float(np.mean(top1)) if top1 else float("nan"),
        "one_pass_accepted": float(np.mean(accepted)) if accepted else float("nan"),
        "first_confidence": float(np.mean(conf_first)) if conf_first else float("nan"),
        "position_accuracy": [round(float(a / n), 3) if n else None for a, n in zip(pos_acc[:16], pos_n[:16])],
        "failfast_tokens_per_round": produced / max(rounds, 1),
        "failfast_passes_per_round": passes / max(rounds, 1),
        "failfast_drafted_per_round": drafted / max(rounds, 1),
        "failfast_rounds": rounds,
        "points": len(top1),
        **_top1_by_target_confidence(top1, target_conf),
    }


# Where the target itself hesitates, its greedy token is a near-coin-flip for anything that only approximates it:
# top-1 split by the target's own probability of that token says whether a drafter misses easy or hard tokens.
TARGET_CONFIDENCE_EDGES = (0.0, 0.5, 0.9, 1.0)


def _greedy_probability(ex: Example, j: int) -> float:
    """The target's probability of its greedy response token ``j`` (from the stored top-k; greedy = the top one)."""
    ids, logprobs = ex.topk_ids[j], ex.topk_logprobs[j].astype(np.float64)
    hit = np.flatnonzero(ids == ex.response_ids[j])
    return float(np.exp(logprobs[hit[0]] if hit.size else logprobs.max()))


def _top1_by_target_confidence(top1: Sequence[bool], target_conf: Sequence[float]) -> dict:
    """``top1_by_target_confidence``: per band of the target's greedy-token probability, the share of points in
    it and the drafter's top-1 there (absent without the target's log-probabilities)."""
    if not target_conf or len(target_conf) != len(top1):
        return {}
    conf, hits = np.asarray(target_conf), np.asarray(top1, dtype=float)
    bands = []
    for lo, hi in zip(TARGET_CONFIDENCE_EDGES[:-1], TARGET_CONFIDENCE_EDGES[1:]):
        inside = (conf >= lo) & ((conf < hi) if hi < 1.0 else (conf <= hi))
        bands.append({"band": f"[{lo:g}, {hi:g}{']' if hi == 1.0 else ')'}", "share": round(float(inside.mean()), 4),
                      "top1": round(float(hits[inside].mean()), 4) if inside.any() else None})
    return {"target_confidence_mean": round(float(conf.mean()), 4), "top1_by_target_confidence": bands}


@torch.no_grad()
def evaluate_causal(model, examples: Sequence[Example], s: EvalSettings) -> dict:
    """``model``: a causal LM returning ``.logits`` (trainee wrapper or loaded drafter)."""
    correct_all, conf_all, target_conf = [], [], []
    per_round = {int(k): [0, 0] for k in s.ar_spec_lens}  # spec_len -> [tokens, rounds]
    for ex in examples:
        seq = list(ex.prompt_ids) + list(ex.response_ids)
        start = len(ex.prompt_ids)
        logits = model(input_ids=torch.tensor([seq])).logits[0, start - 1: len(seq) - 1].float()
        probs = torch.softmax(logits, -1)
        conf, guess = probs.max(-1)
        ok = (guess == torch.tensor(ex.response_ids)).tolist()
        correct_all.extend(ok)
        conf_all.extend(conf.tolist())
        if ex.topk_logprobs is not None:
            target_conf.extend(_greedy_probability(ex, j) for j in range(len(ok)))
        limit = min(len(ok), s.sim_tokens)
        for k in per_round:
            pos = 0
            while pos < limit:
                run = 0
                while run < k and pos + run < limit and ok[pos + run]:
                    run += 1
                gained = min(run + 1, limit - pos)
                per_round[k][0] += gained
                per_round[k][1] += 1
                pos += gained
    out = {
        "top1": float(np.mean(correct_all)) if correct_all else float("nan"),
        "mean_confidence": float(np.mean(conf_all)) if conf_all else float("nan"),
        "positions": len(correct_all),
        **_top1_by_target_confidence(correct_all, target_conf),
    }
    for k, (tokens, rounds) in per_round.items():
        out[f"ar_sf_{k}_tokens_per_round"] = tokens / max(rounds, 1)
    return out


def heldout_examples(store_dir, count: int, templates: Optional[Sequence[str]] = ("math",),
                     with_logits: bool = False) -> list[Example]:
    """The first ``count`` held-out examples in generation order (stable once their shards exist); with
    ``with_logits`` also the target's top-k log-probabilities (for :func:`evaluate_block_diffusion`'s breakdown)."""
    from .data import iter_examples

    pool = [ex for ex in iter_examples(store_dir, split="heldout", with_logits=with_logits) if templates is None or ex.template in templates]
    return pool[:count]
