"""Oracle stop (failfast_bench/oracle.py): hindsight-best draft lengths from stored rounds, no model."""
from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from failfast_bench import oracle
from failfast_bench.latency import load_profile
from failfast_bench.oracle import Pricing, Round, oracle_lengths, passes_for, round_cost, speedup

PAPER = Pricing(pass_ms=6.1, step_ms=52.6)  # a6000_paper, Qwen2.5-32B: verification = one decode step
RUN = Path(__file__).resolve().parent / "data/runs_gsm8k_q0-9/dllm_0.05_df_0.45_60_10__5bd80a0fc7"


def test_passes_scale_with_the_cut_and_keep_the_prefill():
    r = Round(draft_len=10, accepted=3, passes=5, prefill=1)
    assert [passes_for(r, L) for L in (0, 1, 5, 9, 10)] == [0, 2, 3, 5, 5]
    assert passes_for(Round(draft_len=10, accepted=0, passes=2), 1) == 1  # at least one pass drafts anything


def test_round_cost_counts_accepted_prefix_plus_the_targets_token():
    r = Round(draft_len=10, accepted=3, passes=2)
    assert round_cost(r, 10, PAPER) == (pytest.approx(2 * 6.1 + 52.6), 4)
    assert round_cost(r, 3, PAPER) == (pytest.approx(6.1 + 52.6), 4)  # same tokens, one pass fewer
    assert round_cost(r, 2, PAPER)[1] == 3
    curve = Pricing(pass_ms=6.1, step_ms=52.6, verify_ms=lambda k: 50.0 + k)
    assert round_cost(r, 3, curve)[0] == pytest.approx(6.1 + 54.0)  # verify(L' + 1)


def test_oracle_cuts_rejected_tails_and_keeps_accepted_drafts():
    rounds = [Round(10, 10, 2), Round(10, 0, 2), Round(10, 4, 2)]
    assert oracle_lengths(rounds, PAPER) == [10, 1, 4]
    assert oracle_lengths(rounds, PAPER, min_len=0)[1] == 0  # a plain decoding step when nothing is accepted


def test_dinkelbach_matches_brute_force_and_never_loses_to_the_run():
    rng = random.Random(0)
    for price in (PAPER, Pricing(pass_ms=40.9, step_ms=66.6, verify_ms=lambda k: 60.0 + 5.0 * k)):
        for _ in range(30):
            rounds = []
            for _ in range(3):
                d = rng.randint(0, 4)
                rounds.append(Round(draft_len=d, accepted=rng.randint(0, d), passes=rng.randint(1, 4), prefill=rng.randint(0, 1)))
            best = max(speedup(rounds, ls, price) for ls in itertools.product(*[range(1 if r.draft_len else 0, r.draft_len + 1) for r in rounds]))
            got = speedup(rounds, oracle_lengths(rounds, price), price)
            assert got == pytest.approx(best)
            assert got >= speedup(rounds, [r.draft_len for r in rounds], price) - 1e-12


@pytest.mark.skipif(not (RUN / "rounds.parquet").exists(), reason="committed FailFast run not present")
def test_committed_failfast_run(capsys):
    by_q, cfg = oracle.load_rounds(RUN)
    assert cfg["drafter"]["name"] == "failfast" and len(by_q) == 10
    profile = load_profile("a6000_paper")
    m = oracle.compare(by_q, Pricing.of(profile, "smollm2-135m", "failfast"))
    summary = json.loads((RUN / "summary.json").read_text())["metrics_by_profile"]["a6000_paper"]
    # The run's own number is the summary's modeled speedup (committed = accepted + 1 vs n_out: within 1 %).
    assert m["run_pooled"] == pytest.approx(summary["modeled_speedup_pooled"], rel=0.01)
    assert m["oracle_pooled"] > m["run_pooled"] and 0 < m["captured"] < 1
    assert m["oracle_draft_len"] < m["run_draft_len"]
    assert m["pricing"] == "paper" and m["of_bound"] == pytest.approx(m["run_pooled"] / m["oracle_pooled"])
    on_cpu = oracle.compare(by_q, Pricing.of(load_profile("cpu"), "smollm2-135m", "failfast"))
    assert on_cpu["pricing"] == "refined" and on_cpu["run_pooled"] < 1 and on_cpu["captured"] != on_cpu["captured"]  # n/a
    assert oracle.main([str(RUN), "--profile", "a6000_paper", "--profile", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "a6000_paper" in out and "cpu" in out
