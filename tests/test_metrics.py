"""Metric definitions and latency profiles against the paper's worked numbers."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from failfast_bench import metrics
from failfast_bench.latency import HardwareProfile, load_profile


def test_paper_ar_consistency_check():
    # paper §10.4: AR spec 8, acceptance 58.2 % on 32B → about 2.93x
    rounds = 1000
    accepted = round(0.582 * 8 * rounds)
    n_out = accepted + rounds
    s = metrics.modeled_speedup(n_out, rounds, 8 * rounds, 6.1, 52.6)
    assert s == pytest.approx(2.93, abs=0.01)


def test_modeled_speedup_formula_and_vanilla_is_one():
    assert metrics.modeled_speedup(100, 100, 0, 6.1, 13.5) == pytest.approx(1.0)
    # speedup = (N/R) / (1 + (P/R) c)
    n, r, p = 300, 50, 120
    c = 6.1 / 24.7
    assert metrics.modeled_speedup(n, r, p, 6.1, 24.7) == pytest.approx((n / r) / (1 + (p / r) * c))


def test_refined_model_charges_verification_by_tokens():
    flat = metrics.modeled_speedup_refined(10, 0, [1] * 10, 1.0, 10.0, lambda k: 10.0)
    assert flat == pytest.approx(1.0)
    costly = metrics.modeled_speedup_refined(20, 4, [11, 11], 1.0, 10.0, lambda k: 10.0 + k)
    assert costly == pytest.approx(20 * 10 / (4 + 21 + 21))


@pytest.mark.parametrize("gamma,ar,dllm", [(8, 2.93, 4.51), (16, 2.56, 5.26), (49, 1.23, 4.08)])
def test_theorem_3_8_reproduces_paper_f10(gamma, ar, dllm):
    a_ar = metrics.alpha_from_acceptance(0.582, 8)
    a_dl = metrics.alpha_from_acceptance(0.406, 14.6)
    assert a_ar == pytest.approx(0.8780, abs=5e-4)
    assert a_dl == pytest.approx(0.8730, abs=5e-4)
    c_ar = 6.1 / 52.6
    c_dl = 6.1 * ((gamma - 1) // 8 + 2) / (52.6 * gamma)
    assert metrics.theorem_3_8_speedup(a_ar, gamma, c_ar) == pytest.approx(ar, abs=0.01)
    assert metrics.theorem_3_8_speedup(a_dl, gamma, c_dl) == pytest.approx(dllm, abs=0.01)


def test_tokens_per_round_includes_bonus():
    assert metrics.tokens_per_round(n_out=12, n_rounds=4) == 3.0
    assert metrics.mean_accepted_len(accepted_total=8, n_rounds=4) == 2.0
    assert math.isnan(metrics.acceptance_rate(0, 0))


def test_a6000_profile_holds_paper_constants():
    p = load_profile("a6000_paper")
    assert p.pass_ms("failfast") == 6.1
    assert [p.step_ms(t) for t in ("qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b")] == [13.5, 24.7, 52.6]
    assert p.target_key("smollm2-135m") == "qwen2.5-32b"
    assert p.verify_cost_ms("qwen2.5-7b", 70) == 13.5  # paper: any verification = one decode step


def test_measured_cpu_profile_prices_every_drafter_family():
    p = load_profile("cpu")
    assert p.pass_ms("vanilla") == 0.0
    for family in ("ar", "dllm", "failfast", "eagle3"):
        assert p.pass_ms(family) > 0
    assert p.step_ms("smollm2-135m") > 0 and p.verify_cost_ms("smollm2-135m", 16) > 0


def test_verify_curve_interpolates_and_extrapolates():
    p = HardwareProfile("x", {"default": 1.0}, {"t": 10.0}, {"t": {1: 10.0, 8: 17.0, 16: 21.0}})
    assert p.verify_cost_ms("t", 1) == 10.0
    assert p.verify_cost_ms("t", 4) == pytest.approx(13.0)
    assert p.verify_cost_ms("t", 24) == pytest.approx(25.0)
    with pytest.raises(KeyError, match="no target step time"):
        HardwareProfile("y", {}, {"a": 1.0}).step_ms("b")


def test_summarize_mean_of_ratios_vs_token_weighted():
    questions = pd.DataFrame(
        {
            "question_id": ["a", "b"], "n_out": [10, 30], "n_rounds": [5, 10], "accepted_total": [5, 20],
            "drafted_total": [10, 20], "drafter_passes": [10, 20], "wall_seconds": [1.0, 2.0],
            "vanilla_wall_seconds": [2.0, 2.0], "vanilla_n_out": [10, 30], "forward_seconds": [0.99, 1.98],
            "lossless_mismatch": [False, False],
        }
    )
    rounds = pd.DataFrame({"question_id": ["a"] * 5 + ["b"] * 10, "verified_tokens": [3] * 15})
    prof = load_profile("a6000_paper")
    s = metrics.summarize(questions, rounds, prof, "qwen2.5-32b", "failfast")
    assert s["acceptance_rate"] == pytest.approx((0.5 + 1.0) / 2)
    assert s["acceptance_rate_token_weighted"] == pytest.approx(25 / 30)
    assert s["tokens_per_round"] == pytest.approx((2 + 3) / 2)
    assert s["measured_speedup"] == pytest.approx((2.0 + 1.0) / 2)
    assert s["measured_speedup_total"] == pytest.approx(4.0 / 3.0)
    assert s["harness_overhead_share"] == pytest.approx(0.01)
