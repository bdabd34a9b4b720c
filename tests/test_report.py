"""Aggregation, re-pricing, best-config selection and sweep curves (synthetic runs: no model needed)."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import yaml

from failfast_bench import report, trace
from failfast_bench.latency import load_profile
from failfast_bench.metrics import modeled_speedup

from conftest import requires_smollm2


def write_run(root, name: str, drafter: dict, rounds_per_q: int, passes_per_round: int, n_out: int = 40,
              replay: bool = False, questions: int = 2, complete: bool = True, dataset: str = "gsm8k",
              hardware: str | None = None):
    """A complete run directory as runner.py writes it, with made-up but consistent numbers."""
    key = abs(hash((name, replay, questions, hardware))) % 10**10
    run_dir = root / "smollm2-135m" / dataset / f"{name}__{key:010d}"
    q_records, r_records = [], []
    for q in range(questions):
        for r in range(rounds_per_q):
            r_records.append(trace.RoundRecord(
                question_id=str(q), round=r, prefix_len=60 + r, draft_tokens=[5] * 4, draft_len=4, accepted_len=2,
                next_token=9, bonus=False, target_tokens=[5, 5, 9], confidences=[0.9] * 4, recorded_confidences=[],
                passes_prefill=0, passes_denoise=0, passes_cache_update=0, passes_decode=passes_per_round,
                drafter_passes=passes_per_round, stop_reason="fixed_length", committed=3, drafter_seconds=0.01,
                verify_seconds=0.01, drafter_forward_seconds=0.01, verify_forward_seconds=0.01, verified_tokens=5))
        q_records.append(trace.QuestionRecord(
            question_id=str(q), question_index=q, prompt_len=60, prompt_sha256="x", output_tokens=[5] * n_out,
            n_out=n_out, n_rounds=rounds_per_q, accepted_total=2 * rounds_per_q, drafted_total=4 * rounds_per_q,
            drafter_passes=passes_per_round * rounds_per_q, stopped_by_eos=False, wall_seconds=1.0, prefill_seconds=0.1,
            drafter_seconds=0.4, verify_seconds=0.4, forward_seconds=0.9, vanilla_wall_seconds=None if replay else 2.0,
            vanilla_n_out=n_out, lossless_mismatch=False, first_divergence=None))
    cfg = {
        "target": {"name": "smollm2-135m", "latency_key": "smollm2-135m"},
        "dataset": {"name": dataset, "num_questions": questions},
        "drafter": {"name": "ar", "dynamic": False, "spec_len": 8, "tau": 0.45, "n": 10, "n_max": 60, "theta": 0.9, "mode": "faithful", **drafter},
        "run": {"max_new_tokens": 64, "dtype": "float32", "replay": replay},
        **({"hardware": {"name": hardware}} if hardware else {}),
    }
    run_dir.mkdir(parents=True)
    trace.write_parquet(trace.records_frame(r_records, trace.ROUND_COLUMNS), run_dir / "rounds.parquet")
    trace.write_parquet(trace.records_frame(q_records, trace.QUESTION_COLUMNS), run_dir / "questions.parquet")
    trace.write_text(yaml.safe_dump(cfg), run_dir / "config.yaml")
    trace.write_json({"target": "smollm2-135m", "dataset": dataset, "config_name": name}, run_dir / "summary.json")
    if complete:
        trace.write_text("done\n", run_dir / trace.COMPLETE_MARKER)
    return run_dir


@pytest.fixture
def sweep_root(tmp_path):
    root = tmp_path / "runs"
    for tau, rounds in ((0.2, 8), (0.4, 6), (0.6, 10)):  # τ = 0.4 is best
        write_run(root, f"dllm_0.05_df_{tau:g}_60_10", {"name": "failfast", "theta": 0.05, "tau": tau}, rounds, 3)
    write_run(root, "ar_None_sf_4", {"name": "ar", "spec_len": 4}, 12, 4)
    write_run(root, "ar_None_sf_6", {"name": "ar", "spec_len": 6}, 10, 6)
    write_run(root, "ar_None_df_0.45_60_10", {"name": "ar", "dynamic": True}, 9, 5)
    write_run(root, "ar_None_sf_8", {"name": "ar", "spec_len": 8}, 2, 1, complete=False)  # killed: never counted
    return root


def test_collect_reprices_complete_runs_only(sweep_root):
    profile = load_profile("a6000_paper")
    runs, rounds = report.collect([sweep_root], [profile])
    assert len(runs) == 6 and "ar_None_sf_8" not in set(runs["config_name"])
    row = runs.set_index("config_name").loc["dllm_0.05_df_0.4_60_10"]
    step = profile.step_ms("smollm2-135m")
    assert row["modeled_speedup"] == pytest.approx(modeled_speedup(40, 6, 18, profile.pass_ms("failfast"), step))
    assert set(rounds["run_id"]) == set(runs["run_id"])


def test_best_config_per_family_by_mean_speedup(sweep_root):
    runs, _ = report.collect([sweep_root], [load_profile("a6000_paper")])
    best = report.best_configs(runs).set_index("family")["config_name"].to_dict()
    # fixed and dynamic AR are separate families; the best of each is picked by mean modeled speedup
    assert best == {"failfast": "dllm_0.05_df_0.4_60_10", "ar": "ar_None_sf_6", "ar_dynamic": "ar_None_df_0.45_60_10"}


def test_sweep_curves_find_the_tau_curve_only(sweep_root):
    runs, _ = report.collect([sweep_root], [load_profile("a6000_paper")])
    curves = report.sweep_curves(runs)
    assert [(p, len(c)) for p, _, c in curves] == [("tau", 3)]
    param, title, curve = curves[0]
    assert list(curve["tau"]) == [0.2, 0.4, 0.6]
    assert curve["modeled_speedup"].idxmax() == 1
    assert title.startswith("τ curve: failfast (faithful) on smollm2-135m / gsm8k")
    assert "θ=0.05" in title and "N_max=60" in title and "2 questions" in title
    text = report.curve_markdown(param, curve)
    assert text.count("#" * 24) == 1  # the best point has the longest bar
    assert report.sweep_curves(runs, min_points=4) == []


def test_replay_and_live_runs_form_separate_curves(tmp_path, sweep_root):
    for tau, rounds in ((0.2, 8), (0.4, 6), (0.6, 10)):
        write_run(sweep_root, f"dllm_0.05_df_{tau:g}_60_10", {"name": "failfast", "theta": 0.05, "tau": tau}, rounds, 3, replay=True)
    runs, _ = report.collect([sweep_root], [load_profile("a6000_paper")])
    curves = report.sweep_curves(runs)
    assert len(curves) == 2 and sum("replay" in title for _, title, _ in curves) == 1
    replayed = runs[runs["replay"]]
    assert replayed["measured_speedup"].isna().all() and replayed["modeled_speedup"].notna().all()


def test_runs_at_another_temperature_or_with_other_weights_never_join_a_curve(sweep_root):
    """One extra point on other conditions (T = 1, or another drafter's weights) must not be averaged into the
    τ curve at its τ: it is another experiment under the same config name."""
    hot = write_run(sweep_root, "dllm_0.05_df_0.4_60_10", {"name": "failfast", "theta": 0.05, "tau": 0.4}, 40, 3,
                    hardware="hot")
    cfg = yaml.safe_load((hot / "config.yaml").read_text())
    cfg["run"]["temperature"] = 1.0
    trace.write_text(yaml.safe_dump(cfg), hot / "config.yaml")
    other = write_run(sweep_root, "dllm_0.05_df_0.6_60_10", {"name": "failfast", "theta": 0.05, "tau": 0.6}, 40, 3,
                      hardware="other")
    trace.write_json({"hub": {"drafter": {"path": "/somewhere/shipped/smollm2-135m/dllm", "commit": None}}},
                     other / "manifest.json")
    runs, _ = report.collect([sweep_root], [load_profile("a6000_paper")])
    assert runs.set_index("run_dir").loc[str(other), "drafter_weights"] == "shipped:dllm"
    (param, _, curve), = report.sweep_curves(runs)
    base = runs[(runs["temperature"] == 0) & (runs["drafter_weights"] == "") & (runs["family"] == "failfast")]
    assert list(curve["modeled_speedup"]) == pytest.approx(list(base.sort_values("tau")["modeled_speedup"]))


def test_drafter_weights_prefer_what_the_manifest_resolved(tmp_path):
    """A config's ``model: null`` names the target's default of its day; the manifest says which weights ran."""
    run = tmp_path / "run"
    run.mkdir()
    assert report.drafter_weights(run, {"model": None}) == ""
    assert report.drafter_weights(run, {"model": "org/drafter"}) == "org/drafter"
    trace.write_json({"hub": {"drafter": {"path": "/x/shipped/smollm2-135m/dllm_cond_mix"}}}, run / "manifest.json")
    assert report.drafter_weights(run, {"model": None}) == "shipped:dllm_cond_mix"
    trace.write_json({"hub": {"drafter": {"repo": "org/drafter", "revision": None, "commit": "0123456789abcdef"}}},
                     run / "manifest.json")
    assert report.drafter_weights(run, {"model": None}) == "org/drafter@0123456789ab"  # the same on every machine
    trace.write_json({"hub": {"drafter": {"path": "/hf/snapshots/abc"}}}, run / "manifest.json")
    assert report.drafter_weights(run, {"model": "org/drafter"}) == "org/drafter"
    assert report.drafter_weights(run, {"model": None}) == "/hf/snapshots/abc"


def test_report_cli_prints_curves_and_writes_tables(sweep_root, tmp_path, capsys):
    out = tmp_path / "report"
    assert report.main([str(sweep_root), "--profile", "a6000_paper", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "## Best config per (target, dataset, drafter family)" in text and "## τ curve: failfast" in text
    for name in ("runs.csv", "best.csv", "curves.csv", "runs.parquet", "rounds.parquet", "report.md"):
        assert (out / name).exists(), name
    assert "τ curve" in (out / "report.md").read_text()
    assert report.main([str(sweep_root), "--profile", "a6000_paper", "--no-curves"]) == 0
    assert "curve" not in capsys.readouterr().out
    for bad in (["--sort", "speed"], [str(tmp_path / "nowhere")]):
        with pytest.raises(SystemExit) as exc:
            report.main([str(sweep_root), "--profile", "a6000_paper", *bad] if bad[0] == "--sort" else bad)
        assert exc.value.code == 2


def test_best_config_names_the_statistic_it_ranks_by_and_defaults_to_pooled():
    import pandas as pd

    # "a" wins on the mean only because one question runs away; "b" wins pooled (and on the median).
    runs = pd.DataFrame({
        "profile": "p", "target": "t", "dataset": "d", "family": "failfast", "config_name": ["a", "b"],
        "modeled_speedup": [3.1, 2.0], "modeled_speedup_median": [1.4, 1.5], "modeled_speedup_pooled": [1.5, 1.6],
        "measured_speedup": [float("nan")] * 2,
    })
    best = report.best_configs(runs)
    assert list(best["config_name"]) == ["b"] and list(best["ranked_by"]) == ["modeled_speedup_pooled"]
    paper = report.best_configs(runs, statistic="mean")
    assert list(paper["config_name"]) == ["a"] and list(paper["ranked_by"]) == ["modeled_speedup"]
    assert list(report.best_configs(runs, statistic="median")["config_name"]) == ["b"]


def test_collect_carries_accounting_degenerate_questions_and_load_guard(sweep_root):
    runs, _ = report.collect([sweep_root], [load_profile("a6000_paper")], "strict")
    assert set(runs["accounting"]) == {"strict"}
    for column in ("modeled_speedup_pooled", "modeled_speedup_pooled_ci_low", "n_degenerate", "degenerate_questions",
                   "load_guard", "modeled_speedup_pooled_excluding_degenerate", "draft_kind", "machine_profile"):
        assert column in runs.columns, column
    assert set(runs["load_guard"]) <= {"ok", "flagged", "n/a"}
    with pytest.raises(ValueError, match="accounting"):
        report.collect([sweep_root], [load_profile("a6000_paper")], "lenient")


def test_report_cli_rank_by_and_accounting_flags(sweep_root, capsys):
    assert report.main([str(sweep_root), "--profile", "a6000_paper", "--no-curves", "--rank-by", "mean", "--accounting", "strict"]) == 0
    text = capsys.readouterr().out
    assert "Accounting: strict" in text and "ranked by mean modeled_speedup (column modeled_speedup)" in text
    assert report.main([str(sweep_root), "--profile", "a6000_paper", "--no-curves"]) == 0
    assert "ranked by pooled modeled_speedup (column modeled_speedup_pooled)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        report.main([str(sweep_root), "--rank-by", "mode"])


@pytest.mark.integration
@requires_smollm2
def test_micro_tau_multirun_then_report_prints_the_tau_curve_and_rerun_skips(tmp_path):
    """The issue's done-criterion at test scale (AR dynamic with the target as drafter stands in for FailFast
    until the shipped dLLM drafter exists)."""
    from failfast_bench.drafters import resolve_drafter_model
    from failfast_bench.cli import compose
    from failfast_bench.config import ConfigError

    args = ["experiment=micro_tau", "drafter.tau=0.2,0.5,0.8", "dataset.num_questions=1", "run.max_new_tokens=8",
            "drafter.n=4", "drafter.n_max=8", f"run.output_dir={tmp_path}", "run.progress=false", "run.threads=1"]
    try:
        resolve_drafter_model(compose(["experiment=micro_tau"]))
    except ConfigError:
        args += ["drafter=ar_dynamic", "drafter.model=target"]
    cmd = [sys.executable, "-m", "failfast_bench", "-m", *args]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert first.stdout.count("replay: verdicts from the target's cached greedy continuation") == 3
    shown = subprocess.run([sys.executable, "-m", "failfast_bench.report", str(tmp_path), "--profile", "a6000_paper"],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "## τ curve:" in shown.stdout and "replay]" in shown.stdout
    curve_rows = [line for line in shown.stdout.split("## τ curve:")[1].splitlines() if line.startswith("| 0.")]
    assert [row.split("|")[1].strip() for row in curve_rows] == ["0.200", "0.500", "0.800"]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and again.stdout.count("complete results exist, skipping") == 3
    manifests = [json.loads(p.read_text()) for p in tmp_path.rglob("manifest.json")]
    assert len(manifests) == 3 and all(m["replay"] for m in manifests)
