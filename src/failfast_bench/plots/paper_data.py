"""The paper's reference numbers, as data, for overlays on our figures and tables.

Every value is transcribed from docs/paper-reference.md (sections 10, 13, 14, 15), which took them from
the authors' plotting scripts. Setting unless said otherwise: Qwen2.5-32B-Instruct target, MATH-500
first 30 problems, latency modeled with the "vLLM_A6000" constants.
"""
from __future__ import annotations

import pandas as pd

PAPER_HARDWARE = "A6000"


def paper_label(target: str = "Qwen2.5-32B") -> str:
    """Legend label of a paper series, e.g. ``paper (Qwen2.5-32B, A6000)``."""
    return f"paper ({target}, {PAPER_HARDWARE})"


PAPER_LABEL = paper_label()

# F1: Fast-dLLM fixed spec_len 8, θ swept 0.05..0.95; (avg drafter passes per round, acceptance %).
# The θ of each point is not stored in the authors' script (presumably increasing with passes).
F1_DLLM_POINTS: tuple[tuple[float, float], ...] = (
    (2.33, 53.2), (2.41, 53.3), (2.55, 53.6), (2.71, 54.2), (2.87, 54.6), (3.04, 55.1),
    (3.20, 56.3), (3.38, 57.1), (3.57, 57.8), (3.79, 58.8), (4.00, 59.3), (4.23, 59.4),
    (4.40, 59.7), (4.62, 60.3), (4.85, 60.0), (5.09, 60.3), (5.37, 60.4), (5.67, 60.5),
    (6.13, 60.6),
)
F1_SPEC_LEN = 8
# AR drafter Qwen2.5-1.5B-Instruct, spec_len 8: one pass per drafted token.
F1_AR_POINT: tuple[float, float] = (8.0, 58.2)

# F5: ms per query, (speculation, verification, total), per target and method.
F5_LATENCY_MS: dict[str, dict[str, tuple[float, float, float]]] = {
    "Qwen2.5-32B": {
        "AR drafter": (4313, 5295, 9608),
        "Fast-dLLM": (3257, 5204, 8462),
        "FailFast": (1778, 4793, 6571),
    },
    "Qwen2.5-14B": {
        "AR drafter": (3599, 3011, 6610),
        "Fast-dLLM": (2826, 2997, 5823),
        "FailFast": (1785, 2261, 4046),
    },
}
# Older per-dataset version of F5 (probably 32B), same layout.
F5_LATENCY_BY_DATASET_MS: dict[str, dict[str, tuple[float, float, float]]] = {
    "math": {
        "AR drafter": (4569.3, 4925.1, 9494.4),
        "Fast-dLLM": (3140.5, 4756.8, 7897.3),
        "FailFast": (1660.4, 4136.1, 5796.5),
    },
    "aime": {
        "AR drafter": (6773.4, 7300.9, 14074.3),
        "Fast-dLLM": (5082.7, 7229.0, 12311.7),
        "FailFast": (2629.5, 6831.0, 9460.5),
    },
    "gpqa": {
        "AR drafter": (4217.1, 7272.8, 11490.0),
        "Fast-dLLM": (3595.3, 7115.0, 10710.0),
        "FailFast": (2234.4, 6261.2, 8495.6),
    },
}

# F7: modeled speedup vs τ (θ 0.05, N 10, N_max 60).
F7_TAU_SPEEDUP: dict[float, float] = {
    0.05: 3.245, 0.10: 3.871, 0.15: 4.33, 0.20: 4.59, 0.25: 4.71, 0.30: 4.818, 0.35: 4.875,
    0.40: 4.901, 0.45: 4.906, 0.50: 4.885, 0.55: 4.83, 0.60: 4.804, 0.65: 4.783, 0.70: 4.740,
    0.75: 4.715, 0.80: 4.66, 0.85: 4.618, 0.90: 4.577, 0.95: 4.502,
}
F7_FIXED = {"theta": 0.05, "n": 10, "n_max": 60}

# F8: modeled speedup vs N_max (τ 0.45, N 10).
F8_NMAX_SPEEDUP: dict[int, float] = {10: 4.355, 20: 4.746, 30: 4.858, 40: 4.891, 50: 4.891, 60: 4.906, 70: 4.902}
F8_FIXED = {"theta": 0.05, "tau": 0.45, "n": 10}

# F10 / latency model constants (ms): one Fast_dLLM_v2_1.5B pass (also one AR-drafter token) and
# one target decode step on the A6000 profile.
T_DRAFT_MS = 6.1
TPT_MS: dict[str, float] = {"Qwen2.5-7B": 13.5, "Qwen2.5-14B": 24.7, "Qwen2.5-32B": 52.6}
# Measured acceptance behind the F10 curves (32B MATH): (acceptance rate, mean draft length γ).
F10_AR_ACCEPTANCE = (0.582, 8.0)
F10_DLLM_ACCEPTANCE = (0.406, 14.6)
# Per-token α backed out from those (paper-reference.md F10).
F10_ALPHA_AR = 0.8780
F10_ALPHA_DLLM = 0.8730
F10_SUB_BLOCK = 8  # dLLM cost: one pass per started 8-token sub-block plus two housekeeping passes
F10_GAMMAS = tuple(range(2, 50))
# Recomputed check values (γ -> speedup) and the curves' peaks.
F10_CHECK_AR: dict[int, float] = {2: 2.15, 4: 2.68, 8: 2.93, 10: 2.89, 16: 2.56, 20: 2.31, 24: 2.08, 30: 1.80, 32: 1.72, 40: 1.45, 49: 1.23}
F10_CHECK_DLLM: dict[int, float] = {2: 2.14, 4: 3.15, 8: 4.51, 10: 4.53, 16: 5.26, 20: 5.07, 24: 5.20, 30: 4.91, 32: 4.93, 40: 4.63, 49: 4.08}

# T1: per-dataset best FailFast speedups (third-party aggregator; target probably 32B) and the
# early 26 Nov 2025 table (superseded; probably 32B).
T1_FAILFAST_BEST: dict[str, float] = {"math": 4.9, "aime": 4.4, "humaneval": 4.06, "gsm8k": 3.71, "gpqa": 3.11}
T1_EARLY: dict[str, dict[str, float]] = {
    "math": {"AR drafter": 2.89, "Fast-dLLM": 3.51, "FailFast": 4.78},
    "aime": {"AR drafter": 2.80, "Fast-dLLM": 3.15, "FailFast": 4.25},
}
HEADLINE_VS_EAGLE3 = 1.7  # v3 abstract ("up to"); v1 said 1.4
HEADLINE_VS_NAIVE_DLLM = 1.7
HEADLINE_MAX_SPEEDUP = 4.9


def f1_frame() -> pd.DataFrame:
    """F1 dLLM curve: columns drafter_passes_per_round, acceptance_pct."""
    return pd.DataFrame(F1_DLLM_POINTS, columns=["drafter_passes_per_round", "acceptance_pct"])


def f5_frame() -> pd.DataFrame:
    """F5 breakdown: columns target, method, speculation_ms, verification_ms, total_ms."""
    rows = [
        (target, method, *values)
        for target, by_method in F5_LATENCY_MS.items()
        for method, values in by_method.items()
    ]
    return pd.DataFrame(rows, columns=["target", "method", "speculation_ms", "verification_ms", "total_ms"])


def f7_frame() -> pd.DataFrame:
    return pd.DataFrame(sorted(F7_TAU_SPEEDUP.items()), columns=["tau", "modeled_speedup"])


def f8_frame() -> pd.DataFrame:
    return pd.DataFrame(sorted(F8_NMAX_SPEEDUP.items()), columns=["n_max", "modeled_speedup"])
