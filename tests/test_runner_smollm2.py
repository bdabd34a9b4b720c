"""Integration: the whole pipeline on the real embedded default (SmolLM2-135M-Instruct, CPU)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from failfast_bench import trace
from failfast_bench.cli import compose
from failfast_bench.report import collect
from failfast_bench.latency import load_profile
from failfast_bench.runner import Runner, format_summary, preflight

from conftest import requires_smollm2, resolved_question_ids

pytestmark = [pytest.mark.integration, requires_smollm2]


def cfg_for(tmp_path, *overrides):
    cfg = compose([f"run.output_dir={tmp_path}", "run.progress=false", "dataset.num_questions=2", "run.max_new_tokens=24", *overrides])
    preflight(cfg)
    return cfg


def test_ar_drafter_is_target_accepts_everything_and_writes_every_file(tmp_path):
    cfg = cfg_for(tmp_path, "drafter=ar", "drafter.model=target", "drafter.spec_len=6")
    summary = Runner(cfg).run()
    run_dir = Runner(cfg).run_dir
    for name in ("rounds.parquet", "questions.parquet", "summary.json", "config.yaml", "manifest.json", trace.COMPLETE_MARKER):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "partial").exists()
    rounds, questions, saved = trace.load_run(run_dir)
    m = summary["metrics"]
    assert m["acceptance_rate"] == 1.0 and m["lossless_mismatches"] == 0
    assert m["n_questions"] == 2
    assert set(trace.ROUND_COLUMNS) <= set(rounds.columns)
    assert set(trace.QUESTION_COLUMNS) <= set(questions.columns)
    # every column filled (nothing null) for a run that measured vanilla
    assert not rounds[[c for c in trace.ROUND_COLUMNS]].isna().any().any()
    filled = [c for c in trace.QUESTION_COLUMNS if c != "first_divergence"]
    assert not questions[filled].isna().any().any()
    assert (rounds["accepted_len"] == rounds["draft_len"]).all()
    assert (rounds["passes_decode"] == rounds["draft_len"]).all() or (rounds["stop_reason"] == "stop_token").any()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for key in ("git_sha", "config_hash", "packages", "hardware", "dataset_source"):
        assert manifest[key]
    assert manifest["dataset_source"]["sha256"]
    assert "a6000_paper" in summary["metrics_by_profile"]
    text = format_summary(summary)
    assert "measured" in text and "a6000_paper" in text
    # re-pricing the stored trace needs no model
    runs, _ = collect([tmp_path], [load_profile("a6000_paper")])
    assert runs.loc[0, "modeled_speedup"] == pytest.approx(m["modeled_speedup"])


def test_killed_run_resumes_and_finished_run_is_skipped(tmp_path, monkeypatch):
    cfg = cfg_for(tmp_path, "drafter=vanilla")
    calls = []
    original = Runner._run_question

    def dies_on_second(self, index, *a, **k):
        calls.append(index)
        if index == 1 and len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")
        return original(self, index, *a, **k)

    monkeypatch.setattr(Runner, "_run_question", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        Runner(cfg).run()
    run_dir = Runner(cfg).run_dir
    assert (run_dir / "partial" / "q00000.json").exists()
    assert not (run_dir / "summary.json").exists() and not trace.is_complete(run_dir)
    assert not list(run_dir.rglob("*.partial"))
    Runner(cfg).run()
    assert calls == [0, 1, 1]  # question 0 came from its checkpoint
    assert trace.is_complete(run_dir)
    _, questions, _ = trace.load_run(run_dir)
    assert list(questions["question_id"]) == resolved_question_ids(cfg.dataset)
    Runner(cfg).run()  # complete: skipped, nothing recomputed
    assert calls == [0, 1, 1]


def test_vanilla_is_reused_across_jobs_of_the_same_setup(tmp_path):
    """A sweep measures vanilla once: later jobs take its tokens and timings, and the manifest says so."""
    first = cfg_for(tmp_path, "drafter=ar", "drafter.model=target", "drafter.spec_len=3", "run.measure_vanilla=always")
    Runner(first).run()
    _, q_first, _ = trace.load_run(Runner(first).run_dir)
    second = cfg_for(tmp_path, "drafter=ar", "drafter.model=target", "drafter.spec_len=5", "run.measure_vanilla=reuse")
    summary = Runner(second).run()
    _, q_second, _ = trace.load_run(Runner(second).run_dir)
    assert list(q_second["vanilla_wall_seconds"]) == list(q_first["vanilla_wall_seconds"])
    assert summary["metrics"]["lossless_mismatches"] == 0
    reference = json.loads((Runner(second).run_dir / "manifest.json").read_text())["vanilla_reference"]
    assert reference["policy"] == "reuse" and reference["reused_questions"] == 2 and reference["measured_questions"] == 0
    assert any(str(Runner(first).run_dir) in origin for origin in reference["reused_from"])


def test_strict_accounting_on_the_embedded_default_shares_the_run_directory(tmp_path):
    """run.accounting is a reporting choice: same trace, same directory, both accountings stored."""
    paper_cfg = cfg_for(tmp_path, "drafter=ar", "drafter.model=target", "drafter.spec_len=6")
    strict_cfg = cfg_for(tmp_path, "drafter=ar", "drafter.model=target", "drafter.spec_len=6", "run.accounting=strict")
    assert Runner(paper_cfg).run_dir == Runner(strict_cfg).run_dir
    summary = Runner(strict_cfg).run()
    assert summary["headline_accounting"] == "strict" and summary["metrics"]["accounting"] == "strict"
    saved = json.loads((Runner(strict_cfg).run_dir / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    paper, strict = saved["accounting"]["paper"]["a6000_paper"], saved["accounting"]["strict"]["a6000_paper"]
    assert strict["n_out_total"] <= min(paper["n_out_total"], 2 * 24)
    assert strict["acceptance_rate"] == paper["acceptance_rate"] == 1.0  # the target drafting for itself
    _, questions, _ = trace.load_run(Runner(strict_cfg).run_dir)
    assert {"degenerate", "loop_period", "vanilla_tokens_per_second"} <= set(questions.columns)
    assert Runner(paper_cfg).run()["headline_accounting"] == "paper"  # complete: re-headlined, not rerun
    text = format_summary(summary)
    assert "accounting: strict" in text and "paper accounting" in text and "load guard" in text
