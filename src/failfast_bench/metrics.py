"""Every metric the harness reports, defined once.

Notation per question: R rounds; round r drafted ``draft_len_r`` tokens (the acceptance denominator) and
accepted ``accepted_len_r`` of them (the correction/bonus token excluded); P = Σ drafter forward passes of
every kind; N_out = output tokens produced (see engine.py for EOS and overshoot handling).

Aggregation over questions: the paper's convention is the arithmetic mean of per-question values ("mean of
ratios"); token-weighted / ratio-of-totals versions are reported next to them under explicit names.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd

from .latency import HardwareProfile

# ------------------------------------------------------------------------------------------------
# Per question


def acceptance_rate(accepted_total: int, drafted_total: int) -> float:
    """Σ accepted_len / Σ draft_len over the question's rounds (paper §11.1). NaN when nothing was drafted."""
    return accepted_total / drafted_total if drafted_total else float("nan")


def mean_accepted_len(accepted_total: int, n_rounds: int) -> float:
    """Mean accepted draft tokens per round, bonus/correction excluded (paper's ``accepted_len``)."""
    return accepted_total / n_rounds if n_rounds else float("nan")


def tokens_per_round(n_out: int, n_rounds: int) -> float:
    """τ in the EAGLE / Spec-Bench convention: output tokens per verification round, bonus included.

    Equals mean accepted length + 1 unless the last round was cut at a stop token. Vanilla: 1.
    """
    return n_out / n_rounds if n_rounds else float("nan")


def passes_per_round(drafter_passes: int, n_rounds: int) -> float:
    """Drafter forward passes (prefill + denoise + cache update + AR decode) per verification round."""
    return drafter_passes / n_rounds if n_rounds else float("nan")


def modeled_speedup(n_out: int, n_rounds: int, drafter_passes: int, pass_ms: float, step_ms: float) -> float:
    """The paper's latency model (§10.2), exactly.

    latency = P · t_draft + R · TPT (a verification of any length costs one decode step);
    speedup = TPT / (latency / N_out) = N_out · TPT / (P · t_draft + R · TPT).
    """
    latency = drafter_passes * pass_ms + n_rounds * step_ms
    return n_out * step_ms / latency if latency > 0 else float("nan")


def modeled_speedup_refined(
    n_out: int, drafter_passes: int, verified_tokens: list[int], pass_ms: float, step_ms: float, verify_ms
) -> float:
    """Like :func:`modeled_speedup`, but round r's verification costs ``verify_ms(k_r)`` with k_r the
    number of tokens fed to the target that round (draft + the pending token), from a measured curve.
    ``verify_ms`` is a callable k → ms."""
    latency = drafter_passes * pass_ms + sum(verify_ms(int(k)) for k in verified_tokens)
    return n_out * step_ms / latency if latency > 0 else float("nan")


def modeled_split_ms(n_rounds: int, drafter_passes: int, pass_ms: float, step_ms: float) -> tuple[float, float]:
    """(speculation, verification) modeled milliseconds of one question, paper convention (F5)."""
    return drafter_passes * pass_ms, n_rounds * step_ms


def measured_speedup(vanilla_seconds: Optional[float], spec_seconds: float) -> float:
    """Wall-clock ratio for one question: vanilla decoding time / speculative decoding time, both measured
    in the same process on the same prompt and settings (prefill included in both)."""
    if vanilla_seconds is None or not spec_seconds or (isinstance(vanilla_seconds, float) and math.isnan(vanilla_seconds)):
        return float("nan")
    return vanilla_seconds / spec_seconds


# ------------------------------------------------------------------------------------------------
# Theory


def theorem_3_8_speedup(alpha: float, gamma: int, c: float) -> float:
    """Leviathan et al. (2023) Theorem 3.8: expected wall-time improvement
    (1 − α^(γ+1)) / ((1 − α)(γ·c + 1)) for per-token acceptance α, γ drafted tokens, cost ratio c."""
    if alpha >= 1.0:
        return (gamma + 1) / (gamma * c + 1)
    return (1 - alpha ** (gamma + 1)) / ((1 - alpha) * (gamma * c + 1))


def expected_tokens_per_round(alpha: float, gamma: int) -> float:
    """(1 − α^(γ+1)) / (1 − α): expected output tokens per round incl. the bonus (i.i.d. model)."""
    return gamma + 1.0 if alpha >= 1.0 else (1 - alpha ** (gamma + 1)) / (1 - alpha)


def alpha_from_acceptance(rate: float, gamma: float) -> float:
    """Per-token α such that mean(α¹ … α^γ) equals a measured acceptance rate (paper F10), by bisection.
    Non-integer γ (an average draft length) is handled with the continuous form of the geometric sum."""

    def mean_power(a: float) -> float:
        if a <= 0:
            return 0.0
        if a >= 1:
            return 1.0
        return a * (1 - a**gamma) / ((1 - a) * gamma)

    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if mean_power(mid) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# ------------------------------------------------------------------------------------------------
# Tables


def per_question_metrics(questions: pd.DataFrame, rounds: pd.DataFrame, profile: HardwareProfile, target: str, drafter: str) -> pd.DataFrame:
    """One row per question with every per-question metric under ``profile``."""
    pass_ms = profile.pass_ms(drafter)
    step_ms = profile.step_ms(target)
    verified = rounds.groupby("question_id")["verified_tokens"].apply(list) if len(rounds) else pd.Series(dtype=object)
    rows = []
    for q in questions.itertuples(index=False):
        r, p = int(q.n_rounds), int(q.drafter_passes)
        spec_ms, ver_ms = modeled_split_ms(r, p, pass_ms, step_ms)
        rows.append(
            {
                "question_id": q.question_id,
                "n_out": int(q.n_out),
                "n_rounds": r,
                "acceptance_rate": acceptance_rate(int(q.accepted_total), int(q.drafted_total)),
                "mean_accepted_len": mean_accepted_len(int(q.accepted_total), r),
                "mean_draft_len": int(q.drafted_total) / r if r else float("nan"),
                "tokens_per_round": tokens_per_round(int(q.n_out), r),
                "drafter_passes_per_round": passes_per_round(p, r),
                "modeled_speedup": modeled_speedup(int(q.n_out), r, p, pass_ms, step_ms),
                "modeled_speedup_refined": modeled_speedup_refined(
                    int(q.n_out), p, verified.get(q.question_id, []), pass_ms, step_ms,
                    lambda k: profile.verify_cost_ms(target, k),
                ),
                "speculation_ms": spec_ms,
                "verification_ms": ver_ms,
                "measured_speedup": measured_speedup(q.vanilla_wall_seconds, float(q.wall_seconds)),
            }
        )
    return pd.DataFrame(rows)


def summarize(questions: pd.DataFrame, rounds: pd.DataFrame, profile: HardwareProfile, target: str, drafter: str) -> dict:
    """Dataset-level metrics under one profile. Paper convention = mean over questions."""
    pq = per_question_metrics(questions, rounds, profile, target, drafter)
    acc_tot = int(questions["accepted_total"].sum())
    dr_tot = int(questions["drafted_total"].sum())
    van = questions["vanilla_wall_seconds"].astype(float)
    out = {
        "profile": profile.name,
        "priced_as_target": profile.target_key(target),
        "n_questions": int(len(questions)),
        "acceptance_rate": float(pq["acceptance_rate"].mean()),
        "acceptance_rate_token_weighted": acceptance_rate(acc_tot, dr_tot),
        "mean_accepted_len": float(pq["mean_accepted_len"].mean()),
        "mean_draft_len": float(pq["mean_draft_len"].mean()),
        "tokens_per_round": float(pq["tokens_per_round"].mean()),
        "tokens_per_round_token_weighted": tokens_per_round(int(questions["n_out"].sum()), int(questions["n_rounds"].sum())),
        "drafter_passes_per_round": float(pq["drafter_passes_per_round"].mean()),
        "modeled_speedup": float(pq["modeled_speedup"].mean()),
        "modeled_speedup_refined": float(pq["modeled_speedup_refined"].mean()),
        "speculation_ms_per_question": float(pq["speculation_ms"].mean()),
        "verification_ms_per_question": float(pq["verification_ms"].mean()),
        "measured_speedup": float(pq["measured_speedup"].mean()) if van.notna().any() else float("nan"),
        "measured_speedup_total": float(van.sum() / questions["wall_seconds"].sum()) if van.notna().all() and len(van) else float("nan"),
        "tokens_per_second": float(questions["n_out"].sum() / questions["wall_seconds"].sum()) if len(questions) else float("nan"),
        "vanilla_tokens_per_second": float(questions["vanilla_n_out"].sum() / van.sum()) if van.notna().all() and len(van) else float("nan"),
        "harness_overhead_share": float(1 - questions["forward_seconds"].sum() / questions["wall_seconds"].sum()) if len(questions) else float("nan"),
        "lossless_mismatches": int(questions["lossless_mismatch"].sum()),
    }
    return out


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over questions."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n_boot, len(values)), replace=True).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
