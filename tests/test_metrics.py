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


# ------------------------------------------------------------------------------------------------
# Four aggregate forms, degenerate questions, accounting modes, load guard (issue 13)

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from failfast_bench import trace  # noqa: E402
from failfast_bench.latency import HardwareProfile as _Profile  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "data" / "runs_gsm8k_q0-9"  # the traces issue 13 was written about


def test_loop_period_finds_the_smallest_period_covering_the_tail():
    rng = np.random.default_rng(0)
    head = [int(t) for t in rng.integers(100, 10_000, 120)]
    assert metrics.loop_period(head + [1, 2, 3] * 50) == 3  # "1. 1. 1." style: 150 of 270 tokens
    assert metrics.loop_period(head + [7, 8] * 70) == 2  # period 4 also fits; the smallest wins
    sentence = [int(t) for t in rng.integers(100, 10_000, 24)]
    assert metrics.loop_period(head[:40] + sentence * 6) == 24
    assert metrics.loop_period(head) is None  # no repetition
    assert metrics.loop_period(head + [1, 2, 3] * 30) is None  # 90 looping tokens < 50 % of 210
    assert metrics.loop_period([5, 6] * 20) is None  # 40 tokens: too short to call
    long_period = [int(t) for t in rng.integers(100, 10_000, 70)]
    assert metrics.loop_period(long_period * 3) is None  # period 70 > 64
    assert metrics.loop_period(long_period * 3, max_period=80) == 70


def test_committed_gsm8k_question_2_is_flagged_as_a_loop_in_every_method():
    flagged = {}
    for run in ("vanilla__e825ca0459", "dllm_0.05_df_0.45_60_10__5bd80a0fc7", "dllm_0.05_df_0.45_70_10__3193253658"):
        questions = __import__("pandas").read_parquet(RESULTS / run / "questions.parquet")
        flags = metrics.degenerate_flags(questions.drop(columns=["degenerate", "loop_period"], errors="ignore"), 256)
        by_id = dict(zip(questions["question_id"], zip(flags["degenerate"], flags["loop_period"])))
        assert by_id["2"] == (True, 3)  # "1. 1. 1. ..." to the token limit
        assert not by_id["0"][0]
        flagged[run] = sorted(q for q, (d, _) in by_id.items() if d)
    # lossless outputs cut at max_new_tokens: the overshooting FailFast runs flag exactly what vanilla flags
    assert len({tuple(v) for v in flagged.values()}) == 1


def _frame(values_num, values_den):
    return pd.DataFrame({"num": values_num, "den": values_den})


def test_aggregate_gives_mean_median_pooled_and_a_reproducible_bootstrap_ci():
    frame = _frame([10.0, 12.0, 14.0, 200.0], [10.0, 10.0, 10.0, 10.0])  # one runaway question
    a = metrics.aggregate(frame, ["num"], ["den"])
    assert a["mean"] == pytest.approx((1.0 + 1.2 + 1.4 + 20.0) / 4)
    assert a["median"] == pytest.approx(1.3)
    assert a["pooled"] == pytest.approx(236 / 40)
    assert a["ci_low"] <= a["pooled"] <= a["ci_high"]
    assert metrics.aggregate(frame, ["num"], ["den"]) == a  # seeded: identical on every call
    spread = _frame([float(v) for v in range(1, 30)], [float(v % 7 + 1) for v in range(1, 30)])
    b = metrics.aggregate(spread, ["num"], ["den"])
    assert metrics.aggregate(spread, ["num"], ["den"], seed=1)["ci_low"] != b["ci_low"]
    one = metrics.aggregate(frame.iloc[:1], ["num"], ["den"])
    assert one["pooled"] == 1.0 and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    # a question with an unknown part (no vanilla timing) is left out of every form; 0/0 is undefined
    holes = metrics.aggregate(_frame([1.0, float("nan"), 0.0], [2.0, 4.0, 0.0]), ["num"], ["den"])
    assert holes["pooled"] == pytest.approx(0.5) and holes["mean"] == pytest.approx(0.5)


def _questions(n_out, n_rounds, accepted, drafted, passes, wall=None, vanilla=None, tokens=None):
    k = len(n_out)
    return pd.DataFrame({
        "question_id": [str(i) for i in range(k)], "n_out": n_out, "n_rounds": n_rounds, "accepted_total": accepted,
        "drafted_total": drafted, "drafter_passes": passes, "wall_seconds": wall or [1.0] * k,
        "vanilla_wall_seconds": vanilla or [1.0] * k, "vanilla_n_out": [min(n, 256) for n in n_out],
        "forward_seconds": [0.9] * k, "lossless_mismatch": [False] * k,
        "output_tokens": tokens or [list(range(n)) for n in n_out], "extra": ['{"turns": 1}'] * k,
    })


def test_pooled_modeled_speedup_is_total_vanilla_time_over_total_time():
    q = _questions([100, 300], [50, 30], [40, 250], [100, 300], [100, 90])
    rounds = pd.DataFrame({"question_id": ["0"] * 50 + ["1"] * 30, "verified_tokens": [3] * 80})
    prof = _Profile("p", {"default": 2.0}, {"t": 10.0})
    s = metrics.summarize(q, rounds, prof, "t", "failfast")
    per_q = [100 * 10 / (100 * 2 + 50 * 10), 300 * 10 / (90 * 2 + 30 * 10)]
    assert s["modeled_speedup"] == pytest.approx(sum(per_q) / 2)
    assert s["modeled_speedup_median"] == pytest.approx(sum(per_q) / 2)
    assert s["modeled_speedup_pooled"] == pytest.approx(400 * 10 / (190 * 2 + 80 * 10))
    assert s["tokens_per_round_pooled"] == pytest.approx(400 / 80) == s["tokens_per_round_token_weighted"]
    for key in ("modeled_speedup_pooled_ci_low", "modeled_speedup_pooled_ci_high", "modeled_speedup_excluding_degenerate",
                "measured_speedup_pooled", "throughput_ratio_pooled", "acceptance_rate_pooled_excluding_degenerate"):
        assert key in s, key


def test_degenerate_questions_are_flagged_and_headlines_reported_without_them():
    loop = list(range(100, 140)) + [1, 2, 3] * 72
    plain = list(range(1000, 1256))
    q = _questions([256, 256, 256], [20, 120, 125], [230, 130, 120], [260, 300, 300], [40, 240, 250],
                   tokens=[loop, plain, plain[::-1]])
    rounds = pd.DataFrame({"question_id": ["0"] * 20 + ["1"] * 120 + ["2"] * 125, "verified_tokens": [3] * 265})
    s = metrics.summarize(q, rounds, load_profile("a6000_paper"), "qwen2.5-32b", "failfast", "paper", 256)
    assert s["n_degenerate"] == 1
    assert s["modeled_speedup"] > 2 * s["modeled_speedup_excluding_degenerate"]  # the loop carries the mean
    assert s["modeled_speedup_median"] < s["modeled_speedup"]
    assert s["n_questions"] == 3  # never dropped silently


def test_strict_accounting_cuts_overshoot_and_counts_tokens_really_drafted():
    # One question, max_new_tokens 10: round 1 drafts 8, accepts 3, commits 4; round 2 drafts 9 real tokens
    # (reported as its nominal window of 10, as a dLLM draft cut short does), accepts all 9 and adds the bonus:
    # 10 committed, so the output holds 14 tokens, 4 past the limit.
    rounds = pd.DataFrame({
        "question_id": ["0", "0"], "draft_tokens": [[1] * 8, [2] * 9], "draft_len": [8, 10],
        "accepted_len": [3, 9], "committed": [4, 10], "verified_tokens": [9, 10],
    })
    q = _questions([14], [2], [12], [18], [6])
    prof = _Profile("p", {"default": 1.0}, {"t": 10.0})
    paper = metrics.summarize(q, rounds, prof, "t", "failfast", "paper", 10)
    strict = metrics.summarize(q, rounds, prof, "t", "failfast", "strict", 10)
    assert paper["acceptance_rate"] == pytest.approx(12 / 18) and strict["acceptance_rate"] == pytest.approx(12 / 17)
    assert paper["tokens_per_round"] == pytest.approx(7.0) and strict["tokens_per_round"] == pytest.approx(5.0)
    latency = 6 * 1.0 + 2 * 10.0  # the last round's passes and verification are charged in full in both
    assert paper["modeled_speedup"] == pytest.approx(14 * 10 / latency)
    assert strict["modeled_speedup"] == pytest.approx(10 * 10 / latency)
    assert strict["accounting"] == "strict" and paper["accounting"] == "paper"
    with pytest.raises(ValueError, match="accounting"):
        metrics.accounted_totals(q, rounds, "lenient", 10)


def test_strict_accounting_changes_the_committed_n_max_ranking():
    """The issue's check: with overshoot counted N_max = 70 looks best; cut at 256 tokens N_max = 60 wins."""
    from failfast_bench.report import collect

    runs, _ = collect([RESULTS / "dllm_0.05_df_0.45_60_10__238271ce15", RESULTS / "dllm_0.05_df_0.45_70_10__3193253658"],
                      [load_profile("a6000_paper")], "paper")
    strict, _ = collect([RESULTS / "dllm_0.05_df_0.45_60_10__238271ce15", RESULTS / "dllm_0.05_df_0.45_70_10__3193253658"],
                        [load_profile("a6000_paper")], "strict")
    paper_mean = runs.set_index("n_max")["modeled_speedup"]
    strict_mean = strict.set_index("n_max")["modeled_speedup"]
    assert paper_mean[70] == pytest.approx(3.27, abs=0.01) and paper_mean[60] == pytest.approx(3.11, abs=0.01)
    assert strict_mean[70] == pytest.approx(2.87, abs=0.01) and strict_mean[60] == pytest.approx(2.95, abs=0.01)
    assert set(strict["accounting"]) == {"strict"}


def _timed_questions(vanilla_tps):
    k = len(vanilla_tps)
    return pd.DataFrame({"question_id": [str(i) for i in range(k)], "vanilla_n_out": [100] * k,
                         "vanilla_wall_seconds": [100 / t for t in vanilla_tps]})


def _cpu_like(step_ms=80.0, threads=1, dtype="float32"):
    return _Profile("cpu_like", {"default": 1.0}, {"t": step_ms},
                    measured={"t": {"dtype": dtype, "threads": threads}})


def test_load_guard_flags_spread_within_the_run_and_distance_from_the_profile():
    steady = metrics.load_guard(_timed_questions([12.4, 12.6, 12.5]), [_cpu_like()], "t", "float32", 1)
    assert steady["applicable"] and not steady["flagged"]
    assert steady["expected_tokens_per_second"] == pytest.approx(12.5) and steady["expected_from"] == "cpu_like"
    noisy = metrics.load_guard(_timed_questions([8.0, 12.5, 13.0]), [_cpu_like()], "t", "float32", 1)
    assert noisy["flagged"] and "within the run" in noisy["reasons"][0]
    assert noisy["vanilla_tokens_per_second_cv"] > 0.15
    slow = metrics.load_guard(_timed_questions([9.0, 9.1, 9.0]), [_cpu_like()], "t", "float32", 1)
    assert slow["flagged"] and "from the cpu_like profile" in slow["reasons"][0]
    assert not metrics.load_guard(_timed_questions([9.0, 9.1, 9.0]), [_cpu_like()], "t", "float32", 1, tolerance=0.5)["flagged"]
    # A profile measured with another thread count or dtype predicts nothing: only the spread is checked.
    other = metrics.load_guard(_timed_questions([9.0, 9.1, 9.0]), [_cpu_like(threads=2)], "t", "float32", 1)
    assert not other["flagged"] and other["expected_tokens_per_second"] is None and "2 threads" in other["expected_note"]
    replayed = metrics.load_guard(pd.DataFrame({"question_id": ["0"], "vanilla_n_out": [100], "vanilla_wall_seconds": [None]}),
                                  [_cpu_like()], "t", "float32", 1)
    assert not replayed["applicable"] and not replayed["flagged"]


def test_committed_profiles_keep_their_measurement_conditions():
    cpu = load_profile("cpu")
    assert cpu.measured["smollm2-135m"]["dtype"] == "float32" and cpu.measured["smollm2-135m"]["threads"] == 2
    assert load_profile("a6000_paper").measured == {}


def test_statistic_column_names_each_form():
    assert metrics.statistic_column("modeled_speedup", "mean") == "modeled_speedup"
    assert metrics.statistic_column("modeled_speedup", "pooled") == "modeled_speedup_pooled"
    with pytest.raises(ValueError, match="statistic"):
        metrics.statistic_column("modeled_speedup", "mode")


def test_dllm_pass_count_of_the_f10_model_is_ceil_plus_one():
    for gamma in range(1, 80):
        assert metrics.dllm_passes_per_draft(gamma, 8) == math.ceil(gamma / 8) + 1 == (gamma - 1) // 8 + 2
    assert metrics.dllm_passes_per_draft(70, 8) == 10  # paper-reference §4.7: 10 passes for 70 tokens
