"""Every metric the harness reports, defined once.

Notation per question: R rounds; round r drafted ``draft_len_r`` tokens (the acceptance denominator) and
accepted ``accepted_len_r`` of them (the correction/bonus token excluded); P = Σ drafter forward passes of
every kind; N_out = output tokens produced (see engine.py for EOS and overshoot handling).

**Four forms of every aggregate.** Every per-question metric here is a ratio num_q / den_q (for example
modeled speedup = N_out·TPT / (P·t_draft + R·TPT), τ = N_out / R). Over the questions of a run it is reported as

- ``<metric>``: the arithmetic **mean** of the per-question values (the paper's convention, "mean of ratios");
- ``<metric>_median``: their **median** (robust to one outlying question);
- ``<metric>_pooled``: the **pooled** value Σ num / Σ den (Spec-Bench's convention: total vanilla time over
  total method time, all tokens over all rounds);
- ``<metric>_pooled_ci_low`` / ``_pooled_ci_high``: a 95 % percentile **bootstrap** confidence interval of the
  pooled value, resampling questions with replacement (seeded: reproducible).

**Degenerate questions** (:func:`loop_period`): questions whose target output ends in a loop. They are
flagged, never dropped; the headline metrics are also reported without them (``..._excluding_degenerate``).

**Accounting** (:data:`ACCOUNTING_MODES`, ``run.accounting``), both computed from the same trace:

- ``paper`` (the authors' code): N_out counts every token of the last round, including those past
  ``max_new_tokens``; the acceptance denominator is the draft's nominal length (``draft_len``: a dLLM draft cut
  at a stop token counts its whole window).
- ``strict``: N_out is cut at ``max_new_tokens`` (per turn); the acceptance denominator is the tokens actually
  drafted (``len(draft_tokens)``). The modeled time of the last round is charged in full (its drafter passes
  and its verification ran, whatever part of its output is kept), and wall-clock times are what they were.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from .latency import HardwareProfile

ACCOUNTING_MODES = ("paper", "strict")
STATISTICS = ("mean", "median", "pooled")  # what "best config" selection can rank by
DEFAULT_RANK_STATISTIC = "pooled"
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95
DEFAULT_LOAD_TOLERANCE = 0.15

# Degenerate-output rule (loop_period): the smallest period p <= LOOP_MAX_PERIOD such that the last
# max(LOOP_MIN_TOKENS, LOOP_MIN_FRACTION * n) output tokens (or more) repeat with period p, at least twice.
LOOP_MAX_PERIOD = 64
LOOP_MIN_FRACTION = 0.5
LOOP_MIN_TOKENS = 64

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


def loop_period(tokens: Sequence[int], max_period: int = LOOP_MAX_PERIOD, min_fraction: float = LOOP_MIN_FRACTION,
                min_tokens: int = LOOP_MIN_TOKENS) -> Optional[int]:
    """The period of the loop an output ends in, or ``None`` when it does not loop.

    The smallest p <= ``max_period`` such that the output's tail of at least max(``min_tokens``,
    ``min_fraction`` · len) tokens satisfies t[i] == t[i − p] throughout (the tail is its first p tokens
    repeated, at least twice over). A greedy target stuck in a loop ("1. 1. 1. ...", a sentence repeated
    to the token limit) is the typical case; such a question is trivially easy to draft and can carry a
    mean over questions on its own.
    """
    tokens = [int(t) for t in tokens]
    n = len(tokens)
    need = max(min_tokens, min_fraction * n)
    if n < need:
        return None
    for p in range(1, max_period + 1):
        if 2 * p > n:
            break
        repeat = 0  # length of the suffix where t[i] == t[i - p]
        i = n - 1
        while i - p >= 0 and tokens[i] == tokens[i - p]:
            repeat += 1
            i -= 1
        if repeat >= p and repeat + p >= need:
            return p
    return None


def degenerate_flags(questions: pd.DataFrame, max_new_tokens: Optional[int] = None) -> pd.DataFrame:
    """``degenerate`` (bool) and ``loop_period`` (period or <NA>) per question, from ``output_tokens``.

    The output is cut at ``max_new_tokens`` per turn first, so every method of a (lossless) run flags the
    same questions whatever it overshoots. Columns already present (a trace written with them) are kept.
    """
    if "degenerate" in questions.columns and "loop_period" in questions.columns:
        return questions[["degenerate", "loop_period"]].copy()
    periods = []
    outputs = questions["output_tokens"] if "output_tokens" in questions.columns else [None] * len(questions)
    extras = questions["extra"] if "extra" in questions.columns else [None] * len(questions)
    for tokens, extra in zip(outputs, extras):
        tokens = list(tokens) if tokens is not None else []
        if max_new_tokens:
            tokens = tokens[: int(max_new_tokens) * _turns(extra)]
        periods.append(loop_period(tokens))
    return pd.DataFrame({"degenerate": [p is not None for p in periods],
                         "loop_period": pd.array(periods, dtype="Int64")}, index=questions.index)


def with_question_flags(questions: pd.DataFrame, max_new_tokens: Optional[int] = None) -> pd.DataFrame:
    """``questions`` plus the derived columns a finished run stores: ``degenerate``, ``loop_period`` and
    ``vanilla_tokens_per_second`` (vanilla output tokens / vanilla wall seconds; NaN when not measured)."""
    out = questions.copy()
    flags = degenerate_flags(questions, max_new_tokens)
    out["degenerate"] = flags["degenerate"].astype(bool)
    out["loop_period"] = flags["loop_period"]
    van_s = pd.to_numeric(out["vanilla_wall_seconds"], errors="coerce").astype(float)
    van_n = pd.to_numeric(out["vanilla_n_out"], errors="coerce").astype(float)
    out["vanilla_tokens_per_second"] = (van_n / van_s).where(van_s > 0)
    return out


def _turns(extra: Any) -> int:
    import json

    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            extra = {}
    return int((extra or {}).get("turns", 1) or 1)


def _base_question_id(round_question_id: str) -> str:
    """Rounds of a multi-turn question carry ``<id>#turn<k>``; questions carry ``<id>``."""
    return str(round_question_id).split("#turn")[0]


def accounted_totals(questions: pd.DataFrame, rounds: pd.DataFrame, accounting: str = "paper",
                     max_new_tokens: Optional[int] = None) -> pd.DataFrame:
    """Per-question raw sums under an accounting mode (module docstring): ``n_out``, ``drafted_total``.

    ``paper``: the stored values. ``strict``: N_out = Σ over turns of min(tokens the turn output,
    ``max_new_tokens``); drafted = Σ len(draft_tokens) (what the drafter really proposed).
    """
    if accounting not in ACCOUNTING_MODES:
        raise ValueError(f"accounting={accounting!r}; valid: {', '.join(ACCOUNTING_MODES)}")
    out = pd.DataFrame({"question_id": questions["question_id"].astype(str).to_numpy(),
                        "n_out": questions["n_out"].astype(int).to_numpy(),
                        "drafted_total": questions["drafted_total"].astype(int).to_numpy()}, index=questions.index)
    if accounting == "paper":
        return out
    if max_new_tokens is None:
        raise ValueError("strict accounting needs max_new_tokens")
    if len(rounds):
        turn = rounds.assign(_q=rounds["question_id"].map(_base_question_id),
                             _drafted=rounds["draft_tokens"].map(lambda t: 0 if t is None else len(t)))
        per_turn = turn.groupby(["_q", "question_id"], sort=False)["committed"].sum().clip(upper=int(max_new_tokens))
        n_out = per_turn.groupby(level=0).sum()
        drafted = turn.groupby("_q")["_drafted"].sum()
        out["n_out"] = out["question_id"].map(n_out).fillna(0).astype(int).to_numpy()
        out["drafted_total"] = out["question_id"].map(drafted).fillna(0).astype(int).to_numpy()
    else:
        out["n_out"] = out["n_out"].clip(upper=int(max_new_tokens))
    return out


# ------------------------------------------------------------------------------------------------
# Aggregation over questions


# metric -> (numerator parts, denominator parts): per question Π num / Π den; pooled Π Σnum / Π Σden.
RATIO_METRICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "acceptance_rate": (("accepted_total",), ("drafted_total",)),
    "mean_accepted_len": (("accepted_total",), ("n_rounds",)),
    "mean_draft_len": (("drafted_total",), ("n_rounds",)),
    "tokens_per_round": (("n_out",), ("n_rounds",)),
    "drafter_passes_per_round": (("drafter_passes",), ("n_rounds",)),
    "modeled_speedup": (("modeled_vanilla_ms",), ("modeled_ms",)),
    "modeled_speedup_refined": (("modeled_vanilla_ms",), ("refined_ms",)),
    "measured_speedup": (("vanilla_wall_seconds",), ("wall_seconds",)),
    # Throughput ratio: (tokens / wall) / (vanilla tokens / vanilla wall); pooled = tokens/s ÷ vanilla tokens/s.
    "throughput_ratio": (("n_out", "vanilla_wall_seconds"), ("wall_seconds", "vanilla_n_out")),
}
# Reported with and without degenerate questions.
HEADLINE_METRICS = ("modeled_speedup", "modeled_speedup_refined", "measured_speedup", "throughput_ratio",
                    "tokens_per_round", "acceptance_rate")
EXCLUDING_DEGENERATE = "_excluding_degenerate"


def _product(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    out = np.ones(len(frame))
    for c in columns:
        out = out * pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
    return out


def _safe_div(num, den):
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def bootstrap_indices(n: int, n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Question indices of ``n_boot`` resamples with replacement; the same seed gives the same resamples."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def aggregate(frame: pd.DataFrame, num: Sequence[str], den: Sequence[str], n_boot: int = BOOTSTRAP_SAMPLES,
              seed: int = BOOTSTRAP_SEED, level: float = CI_LEVEL) -> dict[str, float]:
    """The four forms of one ratio metric over the rows (questions) of ``frame``.

    Per question value = Π num / Π den (NaN where the denominator is 0). ``mean`` and ``median`` are over the
    defined per-question values; ``pooled`` = Π Σnum / Π Σden over the questions whose parts are all known;
    ``ci_low``/``ci_high`` is the percentile bootstrap interval of ``pooled`` (questions resampled).
    """
    parts = [pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float) for c in (*num, *den)]
    known = np.ones(len(frame), dtype=bool)
    for p in parts:
        known &= np.isfinite(p)
    nums = [p[known] for p in parts[: len(num)]]
    dens = [p[known] for p in parts[len(num):]]
    per_q = _safe_div(np.prod(nums, axis=0) if nums else np.ones(known.sum()),
                      np.prod(dens, axis=0) if dens else np.ones(known.sum()))
    defined = per_q[np.isfinite(per_q)]
    out = {"mean": float(defined.mean()) if len(defined) else math.nan,
           "median": float(np.median(defined)) if len(defined) else math.nan,
           "pooled": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    n = int(known.sum())
    if n == 0:
        return out

    def pooled(sums_num, sums_den):
        top = np.prod(sums_num, axis=0) if sums_num else 1.0
        bottom = np.prod(sums_den, axis=0) if sums_den else 1.0
        return _safe_div(top, bottom)

    out["pooled"] = float(pooled([p.sum() for p in nums], [p.sum() for p in dens]))
    if n >= 2:
        idx = bootstrap_indices(n, n_boot, seed)
        boot = pooled([p[idx].sum(axis=1) for p in nums], [p[idx].sum(axis=1) for p in dens])
        boot = boot[np.isfinite(boot)]
        if len(boot):
            lo, hi = np.quantile(boot, [(1 - level) / 2, 1 - (1 - level) / 2])
            out["ci_low"], out["ci_high"] = float(lo), float(hi)
    return out


def four_forms(name: str, agg: Mapping[str, float], suffix: str = "") -> dict[str, float]:
    """Flat summary keys of one aggregate: name, name_median, name_pooled, name_pooled_ci_low/high (+ suffix)."""
    return {
        f"{name}{suffix}": agg["mean"],
        f"{name}_median{suffix}": agg["median"],
        f"{name}_pooled{suffix}": agg["pooled"],
        f"{name}_pooled_ci_low{suffix}": agg["ci_low"],
        f"{name}_pooled_ci_high{suffix}": agg["ci_high"],
    }


def statistic_column(metric: str, statistic: str = DEFAULT_RANK_STATISTIC) -> str:
    """The runs-table / summary column holding ``statistic`` of ``metric`` (``mean`` is the bare name)."""
    if statistic not in (*STATISTICS, "pooled_ci_low", "pooled_ci_high"):
        raise ValueError(f"statistic={statistic!r}; valid: {', '.join(STATISTICS)}, pooled_ci_low, pooled_ci_high")
    return metric if statistic == "mean" else f"{metric}_{statistic}"


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


def dllm_passes_per_draft(gamma: int, sub_block: int = 8) -> int:
    """Drafter passes the F10 cost model charges a γ-token dLLM draft: one denoising pass per started
    sub-block plus one housekeeping pass (prefill or cache update): ⌈γ/b⌉ + 1 = (γ − 1) // b + 2
    (paper-reference §13 F10; §4.7 trace A: 70 tokens → 10 passes)."""
    return -(-int(gamma) // int(sub_block)) + 1


# ------------------------------------------------------------------------------------------------
# Tables


def per_question_metrics(questions: pd.DataFrame, rounds: pd.DataFrame, profile: HardwareProfile, target: str,
                         drafter: str, accounting: str = "paper", max_new_tokens: Optional[int] = None) -> pd.DataFrame:
    """One row per question with every per-question metric under ``profile`` and ``accounting``, and the
    raw parts (``RATIO_METRICS``) every aggregate is computed from."""
    pass_ms = profile.pass_ms(drafter)
    step_ms = profile.step_ms(target)
    totals = accounted_totals(questions, rounds, accounting, max_new_tokens)
    if len(rounds):
        keyed = rounds.assign(_q=rounds["question_id"].map(_base_question_id))
        verified = keyed.groupby("_q")["verified_tokens"].apply(list)
    else:
        verified = pd.Series(dtype=object)
    rows = []
    for q, tot in zip(questions.itertuples(index=False), totals.itertuples(index=False)):
        r, p, n_out, drafted = int(q.n_rounds), int(q.drafter_passes), int(tot.n_out), int(tot.drafted_total)
        spec_ms, ver_ms = modeled_split_ms(r, p, pass_ms, step_ms)
        refined_ms = p * pass_ms + sum(profile.verify_cost_ms(target, int(k)) for k in verified.get(str(q.question_id), []))
        van_s = _float_or_nan(q.vanilla_wall_seconds)
        rows.append(
            {
                "question_id": q.question_id,
                "n_out": n_out,
                "n_rounds": r,
                "accepted_total": int(q.accepted_total),
                "drafted_total": drafted,
                "drafter_passes": p,
                "wall_seconds": float(q.wall_seconds),
                "vanilla_wall_seconds": van_s,
                "vanilla_n_out": _float_or_nan(q.vanilla_n_out),
                "modeled_vanilla_ms": n_out * step_ms,
                "modeled_ms": spec_ms + ver_ms,
                "refined_ms": refined_ms,
                "acceptance_rate": acceptance_rate(int(q.accepted_total), drafted),
                "mean_accepted_len": mean_accepted_len(int(q.accepted_total), r),
                "mean_draft_len": drafted / r if r else float("nan"),
                "tokens_per_round": tokens_per_round(n_out, r),
                "drafter_passes_per_round": passes_per_round(p, r),
                "modeled_speedup": modeled_speedup(n_out, r, p, pass_ms, step_ms),
                "modeled_speedup_refined": n_out * step_ms / refined_ms if refined_ms > 0 else float("nan"),
                "speculation_ms": spec_ms,
                "verification_ms": ver_ms,
                "measured_speedup": measured_speedup(van_s, float(q.wall_seconds)),
            }
        )
    pq = pd.DataFrame(rows)
    if len(pq):
        pq["throughput_ratio"] = _safe_div(_product(pq, RATIO_METRICS["throughput_ratio"][0]),
                                           _product(pq, RATIO_METRICS["throughput_ratio"][1]))
    return pq


def _float_or_nan(value) -> float:
    try:
        return float(value) if value is not None and not pd.isna(value) else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def summarize(questions: pd.DataFrame, rounds: pd.DataFrame, profile: HardwareProfile, target: str, drafter: str,
              accounting: str = "paper", max_new_tokens: Optional[int] = None, seed: int = BOOTSTRAP_SEED) -> dict:
    """Dataset-level metrics under one profile and one accounting mode, every ratio metric in its four forms
    (module docstring); the headline ones also without degenerate questions."""
    pq = per_question_metrics(questions, rounds, profile, target, drafter, accounting, max_new_tokens)
    flags = degenerate_flags(questions, max_new_tokens)
    degenerate = flags["degenerate"].astype(bool).to_numpy()
    van = pd.to_numeric(questions["vanilla_wall_seconds"], errors="coerce").astype(float)
    out: dict[str, Any] = {
        "profile": profile.name,
        "priced_as_target": profile.target_key(target),
        "accounting": accounting,
        "n_questions": int(len(questions)),
        "n_degenerate": int(degenerate.sum()),
    }
    for name, (num, den) in RATIO_METRICS.items():
        if not len(pq):
            out.update(four_forms(name, dict.fromkeys(("mean", "median", "pooled", "ci_low", "ci_high"), math.nan)))
            continue
        out.update(four_forms(name, aggregate(pq, num, den, seed=seed)))
    for name in HEADLINE_METRICS:
        num, den = RATIO_METRICS[name]
        kept = pq[~degenerate] if len(pq) else pq
        agg = aggregate(kept, num, den, seed=seed) if len(kept) else dict.fromkeys(("mean", "median", "pooled", "ci_low", "ci_high"), math.nan)
        out.update(four_forms(name, agg, EXCLUDING_DEGENERATE))
    # Names kept for older readers (README, notebooks): the same numbers as the pooled forms.
    out["acceptance_rate_token_weighted"] = out["acceptance_rate_pooled"]
    out["tokens_per_round_token_weighted"] = out["tokens_per_round_pooled"]
    out["measured_speedup_total"] = out["measured_speedup_pooled"] if van.notna().all() and len(van) else math.nan
    n_out_total = float(pq["n_out"].sum()) if len(pq) else 0.0
    wall_total = float(questions["wall_seconds"].sum()) if len(questions) else 0.0
    out.update({
        "n_out_total": int(n_out_total),
        "speculation_ms_per_question": float(pq["speculation_ms"].mean()) if len(pq) else math.nan,
        "verification_ms_per_question": float(pq["verification_ms"].mean()) if len(pq) else math.nan,
        "tokens_per_second": n_out_total / wall_total if wall_total > 0 else math.nan,
        "vanilla_tokens_per_second": float(questions["vanilla_n_out"].sum() / van.sum()) if van.notna().all() and len(van) else math.nan,
        "harness_overhead_share": float(1 - questions["forward_seconds"].sum() / wall_total) if wall_total > 0 else math.nan,
        "lossless_mismatches": int(questions["lossless_mismatch"].sum()),
    })
    return out


# ------------------------------------------------------------------------------------------------
# Load guard (measured numbers)


def machine_profile(profiles: Iterable[HardwareProfile], target: str, dtype: str,
                    threads: Optional[int] = None) -> tuple[Optional[HardwareProfile], str]:
    """(profile, note): the first profile that *measured* ``target`` (its ``measured[target]`` block, as
    ``python -m failfast_bench.profile`` writes it) in ``dtype`` and, when ``threads`` is given, with that
    many torch threads; ``None`` when none did. A profile measured under other conditions predicts nothing
    about a run."""
    notes = []
    for profile in profiles:
        info = (profile.measured or {}).get(target)
        if not isinstance(info, Mapping) or target not in profile.target_step_ms:
            continue
        if str(info.get("dtype")) != str(dtype):
            notes.append(f"{profile.name} measured {info.get('dtype')}")
            continue
        if threads and info.get("threads") is not None and int(info["threads"]) != int(threads):
            notes.append(f"{profile.name} measured {info.get('threads')} threads")
            continue
        return profile, f"{profile.name}: target_step_ms {profile.target_step_ms[target]:g}"
    why = "; ".join(notes) if notes else "no profile measured this target"
    return None, f"no matching profile ({why}; run: {dtype}, {threads} threads)"


def expected_vanilla_tokens_per_second(profiles: Iterable[HardwareProfile], target: str, dtype: str,
                                       threads: Optional[int]) -> tuple[Optional[float], Optional[str], str]:
    """(tokens/s, profile name, note): 1000 / target_step_ms of :func:`machine_profile` (same target, dtype
    and thread count), or ``None``."""
    profile, note = machine_profile(profiles, target, dtype, threads)
    if profile is None:
        return None, None, note
    return 1000.0 / profile.target_step_ms[target], profile.name, note


def load_guard(questions: pd.DataFrame, profiles: Iterable[HardwareProfile], target: str, dtype: str,
               threads: Optional[int], tolerance: float = DEFAULT_LOAD_TOLERANCE) -> dict:
    """Was the machine load steady while this run measured wall clock?

    From each question's vanilla decoding (tokens / wall seconds, measured in the same process): the spread
    within the run (coefficient of variation, std / mean over questions) and the pooled vanilla throughput
    against the profile's expectation (:func:`expected_vanilla_tokens_per_second`). ``flagged`` when either
    exceeds ``tolerance``. Replayed runs and runs without vanilla timings are not applicable.
    """
    van_s = pd.to_numeric(questions["vanilla_wall_seconds"], errors="coerce").astype(float)
    van_n = pd.to_numeric(questions["vanilla_n_out"], errors="coerce").astype(float)
    tps = (van_n / van_s).where(van_s > 0)
    out: dict[str, Any] = {"tolerance": float(tolerance), "applicable": bool(tps.notna().any()), "flagged": False, "reasons": []}
    if not out["applicable"]:
        out["reasons"] = ["no vanilla wall-clock timings (replay or run.measure_vanilla=false)"]
        return out
    known = tps.dropna()
    mean = float(known.mean())
    cv = float(known.std(ddof=0) / mean) if mean > 0 else math.nan
    pooled = float(van_n[tps.notna()].sum() / van_s[tps.notna()].sum())
    expected, source, note = expected_vanilla_tokens_per_second(profiles, target, dtype, threads)
    deviation = pooled / expected - 1 if expected else math.nan
    out.update({
        "vanilla_tokens_per_second": {str(q): float(v) for q, v in zip(questions["question_id"], tps) if pd.notna(v)},
        "vanilla_tokens_per_second_mean": mean,
        "vanilla_tokens_per_second_min": float(known.min()),
        "vanilla_tokens_per_second_max": float(known.max()),
        "vanilla_tokens_per_second_pooled": pooled,
        "vanilla_tokens_per_second_cv": cv,
        "expected_tokens_per_second": expected,
        "expected_from": source,
        "expected_note": note,
        "deviation_from_expected": deviation,
    })
    if cv > tolerance:
        out["reasons"].append(f"vanilla tokens/s varies by {100 * cv:.0f}% (CV) within the run "
                              f"({known.min():.1f}-{known.max():.1f} tok/s) > {100 * tolerance:.0f}%")
    if expected and abs(deviation) > tolerance:
        out["reasons"].append(f"vanilla {pooled:.1f} tok/s is {100 * deviation:+.0f}% from the {source} profile's "
                              f"{expected:.1f} tok/s (tolerance {100 * tolerance:.0f}%)")
    out["flagged"] = bool(out["reasons"])
    return out
