"""summary.json: strict JSON, both accountings side by side, degenerate questions, load guard, the console
table, and the committed results (no model runs)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from failfast_bench import resummarize, trace
from failfast_bench.cli import compose
from failfast_bench.runner import build_summary, config_hash, format_summary

ROOT = Path(__file__).resolve().parents[1]
Q0_9 = ROOT / "tests" / "data" / "runs_gsm8k_q0-9"  # the traces issue 13 was written about


def _refuse_constant(name):
    raise ValueError(f"not strict JSON: {name}")


def strict_load(text: str):
    return json.loads(text, parse_constant=_refuse_constant)


def test_write_json_writes_null_for_undefined_values_and_refuses_nothing(tmp_path):
    path = tmp_path / "s.json"
    trace.write_json({"a": float("nan"), "b": [1.5, float("inf"), None], "c": {"d": -float("inf")}, "e": pd.NA}, path)
    assert strict_load(path.read_text()) == {"a": None, "b": [1.5, None, None], "c": {"d": None}, "e": None}
    with pytest.raises(ValueError):
        json.dumps(float("nan"), allow_nan=False)  # what write_json guards against
    assert trace.dumps_strict({"x": float("nan")}) == '{"x": null}'


@pytest.mark.parametrize("name", ["summary.json", "manifest.json"])
def test_every_committed_result_file_parses_strictly(name):
    files = sorted((ROOT / "results").rglob(name))
    assert files, f"no committed {name}"
    for path in files:
        strict_load(path.read_text())


def test_committed_summaries_hold_both_accountings_and_the_new_keys():
    for path in sorted((ROOT / "results").rglob("summary.json")):
        summary = strict_load(path.read_text())
        assert {"paper", "strict", "headline"} <= set(summary["accounting"]), path
        assert summary["metrics"]["accounting"] == summary["accounting"]["headline"]
        for key in ("modeled_speedup", "modeled_speedup_median", "modeled_speedup_pooled", "modeled_speedup_pooled_ci_low",
                    "modeled_speedup_pooled_excluding_degenerate", "measured_speedup_pooled", "throughput_ratio_pooled"):
            assert key in summary["metrics"], (path, key)
        assert "count" in summary["degenerate"] and "flagged" in summary["load_guard"]


def test_committed_gsm8k_question_2_is_flagged_in_questions_parquet_and_summary():
    run = Q0_9 / "dllm_0.05_df_0.45_60_10__5bd80a0fc7"
    questions = pd.read_parquet(run / "questions.parquet")
    row = questions.set_index("question_id").loc["2"]
    assert bool(row["degenerate"]) and int(row["loop_period"]) == 3
    assert "vanilla_tokens_per_second" in questions.columns
    summary = strict_load((run / "summary.json").read_text())
    assert {"question_id": "2", "loop_period": 3} in summary["degenerate"]["questions"]


def test_accounting_and_load_tolerance_leave_the_config_hash_of_committed_runs_alone(tmp_path):
    """A vanilla run has no drafter weights in its hash: its directory name must survive the new keys (this q0-9
    fixture was recorded under the hash scheme before 2026-11-30, see failfast_bench.rehash)."""
    run = Q0_9 / "vanilla__e825ca0459"
    cfg = OmegaConf.load(run / "config.yaml")
    assert config_hash(cfg, legacy_target_drafters=True)[:10] == "e825ca0459"
    current = config_hash(cfg)
    for accounting in ("paper", "strict"):
        OmegaConf.update(cfg, "run.accounting", accounting, force_add=True)
        OmegaConf.update(cfg, "run.load_tolerance", 0.3, force_add=True)
        assert config_hash(cfg, legacy_target_drafters=True)[:10] == "e825ca0459" and config_hash(cfg) == current
    composed = [compose([f"run.output_dir={tmp_path}", "drafter=vanilla", f"run.accounting={a}"]) for a in ("paper", "strict")]
    assert config_hash(composed[0]) == config_hash(composed[1])


def test_bad_accounting_is_refused_before_anything_loads(tmp_path):
    from failfast_bench.config import ConfigError, validate

    with pytest.raises(ConfigError, match="run.accounting='lenient'"):
        validate(compose([f"run.output_dir={tmp_path}", "run.accounting=lenient"]))
    with pytest.raises(ConfigError, match="run.load_tolerance"):
        validate(compose([f"run.output_dir={tmp_path}", "run.load_tolerance=0"]))


def _trace(replay: bool):
    """Two questions × max_new_tokens 10: question 0 overshoots by 4 in its last round; question 1 stops at EOS."""
    rounds, questions = [], []
    spec = {"0": [(8, 3, 4), (9, 9, 10)], "1": [(4, 1, 2), (4, 2, 3)]}  # (real draft tokens, accepted, committed)
    for qid, plan in spec.items():
        for r, (drafted, accepted, committed) in enumerate(plan):
            rounds.append(trace.RoundRecord(
                question_id=qid, round=r, prefix_len=20, draft_tokens=[5] * drafted, draft_len=10 if drafted == 9 else drafted,
                accepted_len=accepted, next_token=9, bonus=accepted == drafted, target_tokens=[5] * (accepted + 1),
                confidences=[0.9] * drafted, recorded_confidences=[], passes_prefill=0, passes_denoise=2,
                passes_cache_update=1, passes_decode=0, drafter_passes=3, stop_reason="low_confidence",
                committed=committed, drafter_seconds=0.01, verify_seconds=0.02, drafter_forward_seconds=0.01,
                verify_forward_seconds=0.02, verified_tokens=drafted + 1))
        n_out = sum(c for _, _, c in plan)
        questions.append(trace.QuestionRecord(
            question_id=qid, question_index=int(qid), prompt_len=20, prompt_sha256="x", output_tokens=list(range(n_out)),
            n_out=n_out, n_rounds=2, accepted_total=sum(a for _, a, _ in plan),
            drafted_total=sum(10 if d == 9 else d for d, _, _ in plan), drafter_passes=6, stopped_by_eos=qid == "1",
            wall_seconds=1.0, prefill_seconds=0.1, drafter_seconds=0.3, verify_seconds=0.5, forward_seconds=0.9,
            vanilla_wall_seconds=None if replay else 1.5, vanilla_n_out=min(n_out, 10), lossless_mismatch=False,
            first_divergence=None))
    return (trace.records_frame(questions, trace.QUESTION_COLUMNS), trace.records_frame(rounds, trace.ROUND_COLUMNS))


@pytest.mark.parametrize("replay", [False, True])
@pytest.mark.parametrize("accounting", ["paper", "strict"])
def test_summary_stores_both_accountings_and_headlines_the_chosen_one(tmp_path, replay, accounting):
    cfg = compose([f"run.output_dir={tmp_path}", "drafter=failfast", "run.max_new_tokens=10", f"run.accounting={accounting}",
                   f"run.replay={str(replay).lower()}"])
    questions, rounds = _trace(replay)
    summary, flagged = build_summary(cfg, questions, rounds, run_dir=tmp_path, replay=replay, load_seconds=1.0,
                                     config_hash="h")
    paper, strict = summary["accounting"]["paper"]["a6000_paper"], summary["accounting"]["strict"]["a6000_paper"]
    assert summary["headline_accounting"] == accounting == summary["metrics"]["accounting"]
    assert summary["metrics"] == summary["accounting"][accounting]["a6000_paper"]
    assert paper["tokens_per_round_pooled"] == pytest.approx((14 + 5) / 4)
    assert strict["tokens_per_round_pooled"] == pytest.approx((10 + 5) / 4)
    assert paper["acceptance_rate_pooled"] == pytest.approx(15 / 26) and strict["acceptance_rate_pooled"] == pytest.approx(15 / 25)
    assert strict["modeled_speedup_pooled"] < paper["modeled_speedup_pooled"]
    assert {"degenerate", "loop_period", "vanilla_tokens_per_second"} <= set(flagged.columns)
    strict_load(trace.dumps_strict(summary))
    if replay:
        assert summary["metrics"]["measured_speedup"] is None and not summary["load_guard"]["applicable"]
    else:
        assert summary["metrics"]["measured_speedup_pooled"] == pytest.approx(3.0 / 2.0)


def _console_summary(**metric_overrides):
    m = {"profile": "a6000_paper", "accounting": "paper", "n_questions": 10, "acceptance_rate": 0.17, "tokens_per_round": 4.8,
         "drafter_passes_per_round": 2.9, "modeled_speedup": 3.11, "modeled_speedup_median": 1.45,
         "modeled_speedup_pooled": 1.60, "modeled_speedup_pooled_ci_low": 1.33, "modeled_speedup_pooled_ci_high": 2.28,
         "modeled_speedup_refined": 3.1, "modeled_speedup_refined_pooled": 1.6, "measured_speedup": 2.29,
         "measured_speedup_median": 0.7, "measured_speedup_pooled": 0.66, "measured_speedup_pooled_ci_low": 0.5,
         "measured_speedup_pooled_ci_high": 0.9, "throughput_ratio_pooled": 0.67, "tokens_per_second": 4.0,
         "vanilla_tokens_per_second": 6.0, "harness_overhead_share": 0.01, "lossless_mismatches": 0,
         "modeled_speedup_excluding_degenerate": 1.42, "modeled_speedup_median_excluding_degenerate": 1.4,
         "modeled_speedup_pooled_excluding_degenerate": 1.39, "modeled_speedup_pooled_ci_low_excluding_degenerate": 1.3,
         "modeled_speedup_pooled_ci_high_excluding_degenerate": 1.5, **metric_overrides}
    strict = {**m, "accounting": "strict", "modeled_speedup": 2.95}
    return {"target": "smollm2-135m", "dataset": "gsm8k", "config_name": "dllm_0.05_df_0.45_60_10", "run_dir": "runs/x",
            "primary_profile": "a6000_paper", "headline_accounting": "paper", "metrics": m, "metrics_by_profile": {"a6000_paper": m},
            "accounting": {"headline": "paper", "paper": {"a6000_paper": m}, "strict": {"a6000_paper": strict},
                           "definitions": {"paper": "overshoot counts", "strict": "cut at max_new_tokens"}},
            "degenerate": {"count": 1, "questions": [{"question_id": "2", "loop_period": 3}]},
            "load_guard": {"applicable": True, "flagged": True, "reasons": ["vanilla tokens/s varies by 22% (CV)"],
                           "vanilla_tokens_per_second_pooled": 6.0, "vanilla_tokens_per_second_cv": 0.22, "tolerance": 0.15,
                           "expected_tokens_per_second": None, "expected_note": "no matching profile"},
            "stop_reasons": {"low_confidence": 9}, "draft_len": {"min": 10, "median": 10.0, "max": 70, "mean": 12.0}}


def test_console_never_headlines_the_mean_measured_speedup_alone():
    text = format_summary(_console_summary())
    measured = next(line for line in text.splitlines() if line.startswith("measured"))
    # The case: mean 2.29x beside a 0.67x throughput. All three forms on one labelled line.
    assert "per-question mean 2.29x" in measured and "pooled (total vanilla wall / total wall) 0.66x" in measured
    assert "throughput ratio 0.67x (4.0 tok/s vs vanilla 6.0 tok/s)" in measured
    table_row = next(line for line in text.splitlines() if line.startswith("a6000_paper"))
    assert "2.29" not in table_row and "1.60x" in table_row and "[1.33, 2.28]" in table_row
    assert "strict accounting (a6000_paper): modeled mean 2.95x" in text
    assert "degenerate questions" in text and "2 (period 3)" in text and "without them" in text
    assert "load guard: FLAGGED" in text


def test_console_reads_old_and_replayed_summaries():
    old = _console_summary(measured_speedup=None, measured_speedup_pooled=None)
    for key in ("accounting", "degenerate", "load_guard", "headline_accounting"):
        old.pop(key)
    text = format_summary(old)
    assert "measured (wall clock): n/a" in text


def test_resummarize_keeps_the_run_facts_and_adds_the_new_ones(tmp_path):
    import shutil

    src = Q0_9 / "dllm_0.05_df_0.45_70_10__3193253658"
    run = tmp_path / src.name
    shutil.copytree(src, run)
    before = json.loads((run / "summary.json").read_text())  # may predate strict JSON
    summary, changed = resummarize.resummarize(run, write=True)
    assert changed == []  # every stored paper-accounting number is reproduced exactly
    after = strict_load((run / "summary.json").read_text())
    for key in resummarize.KEEP:
        assert after[key] == before[key], key
    assert after["accounting"]["strict"]["a6000_paper"]["modeled_speedup"] == pytest.approx(2.87, abs=0.01)
    assert after["metrics"]["modeled_speedup"] == pytest.approx(3.27, abs=0.01)
    assert resummarize.main([str(run), "--check"]) == 0


def test_a_complete_run_asked_for_under_the_other_accounting_is_reported_without_rerunning():
    from failfast_bench.runner import headline

    run = Q0_9 / "dllm_0.05_df_0.45_60_10__5bd80a0fc7"
    stored = strict_load((run / "summary.json").read_text())
    strict = headline(stored, "strict")
    assert strict["headline_accounting"] == "strict" and strict["metrics"]["accounting"] == "strict"
    assert strict["metrics"]["modeled_speedup"] == pytest.approx(2.95, abs=0.01)
    assert headline(stored, "paper") is stored
    assert "accounting: strict" in format_summary(strict)
