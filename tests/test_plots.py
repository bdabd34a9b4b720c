"""Figures and tables from small synthetic results frames (no models involved)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from failfast_bench.metrics import alpha_from_acceptance

from failfast_bench.plots import figures, paper_data, tables, trajectory
from failfast_bench.plots.__main__ import main as plots_main

TARGET = "smollm2-135m"
DATASETS = ("gsm8k", "humaneval")
PROFILES = {"a6000_paper": (6.1, 52.6), "cpu": (9.0, 30.0)}  # drafter pass ms, target step ms


def _run_row(rng, dataset, drafter, config_name, *, theta=math.nan, tau=math.nan, n=math.nan, n_max=math.nan,
             spec_len=math.nan, acceptance, mean_draft_len, passes_per_round, measured=math.nan):
    accepted = acceptance * mean_draft_len
    tokens_per_round = accepted + 1
    n_out, rows = 200, []
    rounds_per_q = n_out / tokens_per_round
    for profile, (t_draft, tpt) in PROFILES.items():
        spec_ms = passes_per_round * rounds_per_q * t_draft
        verif_ms = rounds_per_q * tpt
        modeled = math.nan if drafter == "eagle3" else tokens_per_round / (1 + passes_per_round * t_draft / tpt)
        rows.append(dict(
            run_id=f"{TARGET}/{dataset}/{config_name}", target=TARGET, dataset=dataset, drafter=drafter,
            config_name=config_name, theta=theta, tau=tau, n=n, n_max=n_max, spec_len=spec_len, n_questions=6,
            acceptance_rate=acceptance, acceptance_rate_token_weighted=acceptance * 0.98,
            mean_accepted_len=accepted, mean_draft_len=mean_draft_len, tokens_per_round=tokens_per_round,
            drafter_passes_per_round=passes_per_round, speculation_ms_per_question=spec_ms,
            verification_ms_per_question=verif_ms, profile=profile, modeled_speedup=modeled,
            modeled_speedup_refined=modeled * 0.9 if not math.isnan(modeled) else math.nan,
            measured_speedup=measured if not math.isnan(measured) else 1.1 + rng.random() * 0.3,
            lossless_mismatches=0))
        row = rows[-1]
        # The other aggregate forms (metrics.py): pooled a little below the mean, as when one question runs away.
        for metric in ("modeled_speedup", "modeled_speedup_refined", "measured_speedup"):
            mean = row[metric]
            row.update({f"{metric}_median": mean * 0.9, f"{metric}_pooled": mean * 0.95,
                        f"{metric}_pooled_ci_low": mean * 0.85, f"{metric}_pooled_ci_high": mean * 1.05})
        row.update(acceptance_rate_pooled=acceptance * 0.98, mean_draft_len_pooled=mean_draft_len,
                   drafter_passes_per_round_pooled=passes_per_round, tokens_per_round_pooled=tokens_per_round,
                   accounting="paper", draft_kind="tree" if "tree" in config_name else "chain")
    return rows


def make_runs(seed: int = 0) -> pd.DataFrame:
    """Every family the figures use: AR and Fast-dLLM sweeps, FailFast τ and N_max sweeps, EAGLE-3."""
    rng = np.random.default_rng(seed)
    rows = []
    for ds in DATASETS:
        rows += _run_row(rng, ds, "vanilla", "vanilla", acceptance=0.0, mean_draft_len=0.0, passes_per_round=0.0,
                         measured=1.0)
        for k in (4, 8):
            rows += _run_row(rng, ds, "ar", f"ar_None_sf_{k}", spec_len=k, acceptance=0.7 - 0.02 * k,
                             mean_draft_len=k, passes_per_round=k)
        rows += _run_row(rng, ds, "ar", "ar_None_df_0.45_60_10", tau=0.45, n=10, n_max=60, acceptance=0.5,
                         mean_draft_len=12, passes_per_round=12)
        for i, theta in enumerate(np.round(np.arange(0.05, 1.0, 0.15), 2)):
            rows += _run_row(rng, ds, "dllm", f"dllm_{theta:g}_sf_8", theta=theta, spec_len=8,
                             acceptance=0.45 + 0.1 * (1 - math.exp(-i / 2)), mean_draft_len=8,
                             passes_per_round=2.3 + 0.6 * i)
        for tau in np.round(np.arange(0.1, 1.0, 0.1), 2):
            rows += _run_row(rng, ds, "failfast", f"dllm_0.05_df_{tau:g}_60_10", theta=0.05, tau=tau, n=10,
                             n_max=60, acceptance=0.3 + 0.2 * tau, mean_draft_len=30 - 20 * tau,
                             passes_per_round=2 + 3 * (1 - tau))
        for n_max in (20, 30, 40, 50, 70):
            rows += _run_row(rng, ds, "failfast", f"dllm_0.05_df_0.45_{n_max}_10", theta=0.05, tau=0.45, n=10,
                             n_max=n_max, acceptance=0.4, mean_draft_len=min(n_max, 30) * 0.6,
                             passes_per_round=2 + n_max / 40)
        rows += _run_row(rng, ds, "eagle3", "eagle3_chain_5", spec_len=5, acceptance=0.6, mean_draft_len=5,
                         passes_per_round=5, measured=1.2)
        rows += _run_row(rng, ds, "eagle3", "eagle3_tree_8_10_60", acceptance=0.4, mean_draft_len=8,
                         passes_per_round=8, measured=1.3)
    return pd.DataFrame(rows)


def make_rounds(seed: int = 0, questions: int = 4, n_rounds: int = 25) -> pd.DataFrame:
    """Rounds for an AR and a FailFast config: long easy stretches broken by hard spots; FailFast
    confidences track acceptance."""
    rng = np.random.default_rng(seed)
    rows = []
    for ds in DATASETS:
        for config, dynamic in (("ar_None_sf_8", False), ("dllm_0.05_df_0.45_60_10", True)):
            for q in range(questions):
                prefix = 40
                for r in range(n_rounds):
                    hard = rng.random() < 0.35
                    draft_len = int(rng.integers(3, 12)) if dynamic and hard else (int(rng.integers(10, 60)) if dynamic else 8)
                    accepted = int(rng.integers(0, min(3, draft_len) + 1)) if hard else int(rng.integers(draft_len // 2, draft_len + 1))
                    draft = [int(t) for t in rng.integers(5, 300, draft_len)]
                    bonus = accepted == draft_len
                    conf = [float(np.clip(rng.normal(0.85 if i < accepted else 0.35, 0.15), 0.01, 1.0))
                            for i in range(draft_len)]
                    rows.append(dict(
                        run_id=f"{TARGET}/{ds}/{config}", config_name=config, dataset=ds, question_id=str(q),
                        round=r, prefix_len=prefix, draft_tokens=draft, draft_len=draft_len, accepted_len=accepted,
                        next_token=int(rng.integers(5, 300)), bonus=bonus,
                        target_tokens=draft[:accepted] + [int(rng.integers(5, 300))] * (draft_len - accepted),
                        confidences=conf, recorded_confidences=conf if dynamic else [],
                        drafter_passes=draft_len if not dynamic else 2 + draft_len // 8,
                        stop_reason="low_confidence" if dynamic and hard else "spec_len"))
                    prefix += accepted + 1
    return pd.DataFrame(rows)


def make_curve(steps: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    step = np.arange(steps)
    frames = []
    for label, ceiling in (("7B head", 0.7), ("32B head", 0.75)):
        acc = ceiling * (1 - np.exp(-step / 150)) + rng.normal(0, 0.03, steps)
        frames.append(pd.DataFrame({"step": step, "accuracy": acc, "loss": 5 * np.exp(-step / 200) + 1, "label": label}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def runs():
    return make_runs()


@pytest.fixture(scope="module")
def rounds():
    return make_rounds()


FIGURES = {
    # name: (function, which frame, required columns)
    "F1": (figures.plot_concavity, "runs", figures.F1_COLUMNS),
    "F2": (figures.plot_difficulty_raster, "rounds", figures.F2_COLUMNS),
    "F3": (figures.plot_easy_region_cdf, "rounds", figures.F3_COLUMNS),
    "F4": (trajectory.plot_trajectory, "rounds", trajectory.F4_COLUMNS),
    "F5": (figures.plot_latency_breakdown, "runs", figures.F5_COLUMNS),
    "F6": (figures.plot_length_cdf, "rounds", figures.F6_COLUMNS),
    "F7": (figures.plot_tau_sensitivity, "runs", figures.SWEEP_COLUMNS),
    "F8": (figures.plot_nmax_sensitivity, "runs", figures.SWEEP_COLUMNS),
    "F9": (figures.plot_training_curve, "curve", figures.F9_COLUMNS),
    "F10": (figures.plot_theoretical_speedup, "runs", figures.F10_COLUMNS),
    "F11": (figures.plot_calibration, "rounds", figures.F11_COLUMNS),
}


def _frame(kind, runs, rounds):
    return {"runs": runs, "rounds": rounds, "curve": make_curve()}[kind]


@pytest.mark.parametrize("name", sorted(FIGURES, key=lambda n: int(n[1:])))
def test_figure_writes_png_and_pdf(name, runs, rounds, tmp_path):
    func, kind, _ = FIGURES[name]
    paths = func(_frame(kind, runs, rounds), tmp_path)
    suffixes = {p.suffix for p in paths}
    assert {".png", ".pdf"} <= suffixes
    for path in paths:
        assert path.exists() and path.stat().st_size > 1000, path
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("name", sorted(FIGURES, key=lambda n: int(n[1:])))
def test_figure_refuses_missing_column(name, runs, rounds, tmp_path):
    func, kind, required = FIGURES[name]
    column = required[-1]
    broken = _frame(kind, runs, rounds).drop(columns=[column])
    with pytest.raises(ValueError, match=rf"{func.__name__}.*missing required column.*{column}"):
        func(broken, tmp_path)
    assert not list(tmp_path.iterdir())


def test_sweep_figures_skip_without_failfast_rows(runs, tmp_path):
    with pytest.raises(figures.NoDataError, match="no FailFast rows"):
        figures.plot_tau_sensitivity(runs[runs["drafter"] != "failfast"], tmp_path)


def test_unknown_profile_is_reported(runs, tmp_path):
    with pytest.raises(figures.NoDataError, match="profile 'h100' not in runs"):
        figures.plot_latency_breakdown(runs, tmp_path, profile="h100")


def test_theorem_3_8_reproduces_paper_f10_values():
    c = paper_data.T_DRAFT_MS / paper_data.TPT_MS["Qwen2.5-32B"]
    alpha_ar = alpha_from_acceptance(*paper_data.F10_AR_ACCEPTANCE)
    alpha_dllm = alpha_from_acceptance(*paper_data.F10_DLLM_ACCEPTANCE)
    assert alpha_ar == pytest.approx(paper_data.F10_ALPHA_AR, abs=1e-4)
    assert alpha_dllm == pytest.approx(paper_data.F10_ALPHA_DLLM, abs=1e-4)
    gammas = sorted(paper_data.F10_CHECK_AR)
    ar = figures.theoretical_curves(alpha_ar, c, gammas, dllm=False)
    dllm = figures.theoretical_curves(alpha_dllm, c, gammas, dllm=True)
    assert ar == pytest.approx([paper_data.F10_CHECK_AR[g] for g in gammas], abs=0.011)
    assert dllm == pytest.approx([paper_data.F10_CHECK_DLLM[g] for g in gammas], abs=0.011)


def test_easy_regions_follow_the_f3_decision_rule():
    # Round 1: 3 accepted then rejection; round 2: whole draft of 2 accepted plus bonus; round 3: 0 accepted.
    decisions = figures.round_decisions(3, False) + figures.round_decisions(2, True) + figures.round_decisions(0, False)
    assert decisions == [True, True, True, False, True, True, True, False]
    lengths = figures.easy_run_lengths(decisions)
    assert lengths == [3, 3]
    assert figures.easy_region_ratio(lengths, len(decisions), [0, 2, 3]).tolist() == [0.75, 0.75, 0.0]


def test_calibration_pairs_mark_tokens_before_the_first_rejection():
    frame = pd.DataFrame({"confidences": [[0.9, 0.8, 0.2, 0.7]], "accepted_len": [2], "draft_len": [4]})
    pairs = figures.confidence_acceptance_pairs(frame)
    assert pairs["accepted"].tolist() == [True, True, False, False]


def test_best_per_method_ranks_by_modeled_speedup_and_eagle_by_measured(runs):
    rows = runs[runs["profile"] == "a6000_paper"]
    best = figures.best_per_method(rows).set_index(["dataset", "method"])
    ar = rows[(rows["dataset"] == "gsm8k") & (rows["config_name"].str.startswith("ar_None_sf_"))]
    assert best.loc[("gsm8k", figures.AR), "config_name"] == ar.loc[ar["modeled_speedup"].idxmax(), "config_name"]
    assert best.loc[("gsm8k", figures.EAGLE3), "config_name"] == "eagle3_tree_8_10_60"
    assert figures.VANILLA not in best.index.get_level_values("method")


def test_trajectory_html_marks_each_kind(rounds):
    page = trajectory.render_trajectory_html(rounds, config_name="ar_None_sf_8", question_id="0", dataset="gsm8k",
                                             decode=lambda ids: f"t{ids[0]}<")
    assert '<span class="rejected" title=' in page and 'class="acc0"' in page and "&lt;" in page
    accepted_only = trajectory.render_trajectory_html(rounds, config_name="ar_None_sf_8", question_id="0",
                                                      dataset="gsm8k", accepted_only=True)
    assert '<span class="rejected" title=' not in accepted_only


def test_tables_write_markdown_and_latex(runs, tmp_path):
    t1 = tables.table_t1(runs)
    assert set(t1["method"]) == {figures.AR, figures.FAST_DLLM, figures.FAILFAST, figures.EAGLE3}
    t2 = tables.table_t2(runs)
    row = t2.iloc[0]
    assert row["ratio_measured"] == pytest.approx(row["failfast_measured"] / row["eagle3_measured"])
    paths = tables.write_tables(runs, tmp_path)
    assert sorted(p.name for p in paths) == ["t1_speedup.md", "t1_speedup.tex", "t2_eagle3.md", "t2_eagle3.tex"]
    md = (tmp_path / "t1_speedup.md").read_text()
    assert "| Target | Dataset | Method |" in md and "FailFast" in md
    tex = (tmp_path / "t1_speedup.tex").read_text()
    assert r"\begin{tabular}" in tex and r"dllm\_0.05\_df" in tex and "Modeled mean ($\\times$)" in tex


def test_tables_refuse_missing_column(runs, tmp_path):
    with pytest.raises(ValueError, match="table_t1.*missing required column.*tokens_per_round"):
        tables.table_t1(runs.drop(columns=["tokens_per_round"]))


def test_command_line_writes_what_it_has_data_for(runs, rounds, tmp_path, capsys):
    runs_path, rounds_path = tmp_path / "runs.parquet", tmp_path / "rounds.parquet"
    # Without EAGLE-3 and FailFast rows, T2, F7 and F8 have no data and are skipped, not failed.
    runs[~runs["drafter"].isin(["eagle3", "failfast"])].to_parquet(runs_path)
    rounds[rounds["question_id"].isin(["0", "1"])].to_parquet(rounds_path)
    out = tmp_path / "out"
    assert plots_main(["--runs", str(runs_path), "--rounds", str(rounds_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "F7: skipped" in printed and "T2: skipped" in printed
    written = {p.name for p in out.iterdir()}
    for stem in ("f1_concavity", "f2_difficulty_raster", "f3_easy_region_cdf", "f4_trajectory", "f5_latency_breakdown",
                 "f6_length_cdf", "f10_theoretical_speedup", "f11_confidence_calibration"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= written, stem
    assert {"t1_speedup.md", "t1_speedup.tex"} <= written


def test_rounds_of_several_targets_are_never_interleaved(rounds, tmp_path):
    other = rounds.assign(run_id=rounds["run_id"].str.replace(TARGET, "other-target"), accepted_len=0, bonus=False)
    both = pd.concat([rounds, other], ignore_index=True)
    decisions = figures.question_decisions(both[(both["config_name"] == "ar_None_sf_8") & (both["dataset"] == "gsm8k")])
    assert len(decisions) == 2 * 4 and all(isinstance(k, tuple) for k in decisions)
    chosen, run_id = figures.one_run(both[both["config_name"] == "ar_None_sf_8"])
    assert run_id == f"other-target/gsm8k/ar_None_sf_8" and chosen["run_id"].nunique() == 1
    assert figures.plot_easy_region_cdf(both, tmp_path)[0].exists()


def test_question_ids_match_as_int_or_str(rounds):
    page = trajectory.render_trajectory_html(rounds, config_name="ar_None_sf_8", question_id=1, dataset="gsm8k")
    assert "question 1" in page


# ------------------------------------------------------------------------------------------------
# Issue 13: like-for-like T2, tree acceptance, F10 conventions, named statistics


def test_t2_paper_convention_ratio_compares_like_with_like(runs):
    """The paper divides FailFast's modeled speedup by EAGLE-3's measured one. That is only like for like
    when both describe one machine: FailFast is priced under the profile measured where EAGLE-3 ran."""
    frame = runs.assign(machine_profile="cpu")
    t2 = tables.table_t2(frame).set_index("dataset")
    row = t2.loc["gsm8k"]
    ff_cpu = frame[(frame["profile"] == "cpu") & (frame["config_name"] == row["failfast_config"]) & (frame["dataset"] == "gsm8k")]
    eg = frame[(frame["profile"] == "a6000_paper") & (frame["config_name"] == row["eagle3_config"]) & (frame["dataset"] == "gsm8k")]
    expected = ff_cpu["modeled_speedup_pooled"].iloc[0] / eg["measured_speedup_pooled"].iloc[0]
    assert row["ratio_paper_convention"] == pytest.approx(expected)
    a6000_over_cpu = row["failfast_modeled"] / row["eagle3_measured"]  # the old, mixed ratio
    assert row["ratio_paper_convention"] != pytest.approx(a6000_over_cpu)
    assert row["machine_profile"] == "cpu"
    # Without a profile of the measuring machine the ratio is left empty, never A6000-modeled over CPU-measured.
    assert math.isnan(tables.table_t2(runs).set_index("dataset").loc["gsm8k", "ratio_paper_convention"])


def test_t1_keeps_tree_acceptance_out_of_the_chain_acceptance_column(runs, tmp_path):
    t1 = tables.table_t1(runs).set_index(["dataset", "method"])
    tree = t1.loc[("gsm8k", figures.EAGLE3)]
    assert tree["config_name"] == "eagle3_tree_8_10_60"
    assert math.isnan(tree["acceptance_rate"]) and tree["acceptance_tree"] == pytest.approx(0.4)
    chain = t1.loc[("gsm8k", figures.FAILFAST)]
    assert not math.isnan(chain["acceptance_rate"]) and math.isnan(chain["acceptance_tree"])
    md = tables.write_t1(runs, tmp_path)[0].read_text()
    assert "Acceptance, tree: accepted / nodes (%)" in md and "Acceptance, chain (%)" in md


def test_t1_shows_mean_pooled_ci_and_names_ranking_and_accounting(runs, tmp_path):
    md = tables.write_t1(runs, tmp_path)[0].read_text()
    assert "ranked by pooled modeled speedup (modeled_speedup_pooled)" in md and "paper accounting" in md
    for header in ("Modeled mean (×)", "Modeled median (×)", "Modeled pooled [95% CI] (×)", "Degenerate questions", "Load guard"):
        assert header in md, header
    assert tables.table_t1(runs, statistic="mean").attrs["ranked_by"] == "modeled_speedup"


def _f10_row(**overrides):
    # Two questions: R = 10, P = 20 and R = 30, P = 80: mean P/R = 2.33, pooled P/R = 100/40 = 2.5.
    pass_ms, step_ms = 6.1, 52.6
    row = dict(drafter_passes_per_round=(20 / 10 + 80 / 30) / 2, drafter_passes_per_round_pooled=100 / 40,
               speculation_ms_per_question=100 * pass_ms / 2, verification_ms_per_question=40 * step_ms / 2,
               acceptance_rate=0.3, acceptance_rate_pooled=0.25, mean_draft_len=12.0, mean_draft_len_pooled=10.0)
    row.update(overrides)
    return row


def test_f10_cost_ratio_is_pooled_throughout():
    """c = t_draft / TPT exactly: the pooled time split over the pooled passes per round (not the mean)."""
    assert figures._cost_ratio_per_pass(_f10_row()) == pytest.approx(6.1 / 52.6)
    alpha, gamma, c = figures.f10_inputs(_f10_row())
    assert gamma == 10.0 and alpha == pytest.approx(alpha_from_acceptance(0.25, 10.0))


def test_f10_on_the_committed_failfast_trace_recovers_the_paper_cost_ratio():
    from pathlib import Path

    from failfast_bench.latency import load_profile
    from failfast_bench.report import collect

    run = Path(__file__).resolve().parent / "data" / "runs_gsm8k_q0-9" / "dllm_0.05_df_0.45_60_10__5bd80a0fc7"
    runs_frame, _ = collect([run], [load_profile("a6000_paper")])
    assert figures._cost_ratio_per_pass(runs_frame.iloc[0].to_dict()) == pytest.approx(6.1 / 52.6)  # was 0.1055


def test_f10_code_and_docs_agree_on_the_dllm_pass_count():
    """paper-reference §13 F10: (γ − 1)//8 + 2 = ⌈γ/8⌉ + 1 passes: one per started sub-block plus ONE more."""
    for gamma in range(1, 50):
        assert figures._dllm_passes(gamma, 8) == math.ceil(gamma / 8) + 1
    for func in (figures._dllm_passes, figures.plot_theoretical_speedup, figures.theoretical_curves):
        doc = func.__doc__ or ""
        assert "plus two" not in doc, func.__name__
    assert "plus one housekeeping pass" in figures._dllm_passes.__doc__
    assert "⌈γ/8⌉ + 1" in figures.plot_theoretical_speedup.__doc__


def test_sweep_figures_draw_mean_and_pooled(runs, tmp_path):
    paths = figures.plot_nmax_sensitivity(runs, tmp_path)
    assert paths[0].exists()
    with pytest.raises(ValueError, match="modeled_speedup_pooled"):
        figures.plot_nmax_sensitivity(runs.drop(columns=["modeled_speedup_pooled"]), tmp_path)


def test_sweep_figures_keep_runs_on_other_questions_or_temperatures_off_the_curve(runs):
    """A q0-9 run at T = 1 with the sweep's θ, N and N_max must not be averaged into F7's point at its τ
    (it once pulled F7's pooled GSM8K curve down to 1.52 at τ = 0.45, where every q0-29 run said 1.73)."""
    rows = figures.with_methods(runs[runs["profile"] == "a6000_paper"]).assign(temperature=0.0)
    rows = rows[rows["method"] == figures.FAILFAST]
    sweep = rows[(rows["dataset"] == "gsm8k") & rows["tau"].notna() & (rows["n_max"] == 60)]
    stray = sweep.head(1).assign(temperature=1.0, n_questions=2, modeled_speedup=0.1, modeled_speedup_pooled=0.1)
    clean = figures._one_axis_sweeps(rows, "tau", ("theta", "n", "n_max"), paper_data.F7_FIXED)
    mixed = figures._one_axis_sweeps(pd.concat([rows, stray]), "tau", ("theta", "n", "n_max"), paper_data.F7_FIXED)
    for (_, _, _, before), (_, _, _, after) in zip(clean, mixed, strict=True):
        pd.testing.assert_frame_equal(before.reset_index(drop=True), after.reset_index(drop=True))


def test_t1b_reports_sampling_runs_apart_from_greedy_ones(runs, tmp_path):
    """T > 0 runs share config names with greedy runs: T1 ignores them, T1b shows them beside the greedy best."""
    greedy = runs.assign(temperature=0.0, accuracy=0.3, accuracy_ci_low=0.1, accuracy_ci_high=0.6)
    ff = greedy[greedy["drafter"] == "failfast"]
    hot = ff.assign(temperature=1.0, modeled_speedup=99.0, modeled_speedup_pooled=99.0, measured_speedup_pooled=0.8,
                    accuracy=0.2, run_id=ff["run_id"] + "@T1")
    both = pd.concat([greedy, hot], ignore_index=True)
    t1 = tables.table_t1(both)
    assert not (t1["modeled_speedup_pooled"] == 99).any()  # the sampled run's 99x never reaches the greedy table
    with pytest.raises(figures.NoDataError, match="temperature > 0"):
        tables.table_t1b(greedy)
    t1b = tables.table_t1b(both)
    assert list(t1b["method"].unique()) == [figures.FAILFAST] and (t1b["temperature"] == 1.0).all()
    row = t1b.iloc[0]
    assert row["accuracy"] == 0.2 and row["greedy_accuracy"] == 0.3 and row["measured_speedup_pooled"] == 0.8
    paths = tables.write_t1b(both, tmp_path)
    assert sorted(p.name for p in paths) == ["t1b_sampling.md", "t1b_sampling.tex"]
    assert "distribution is the target's" in (tmp_path / "t1b_sampling.md").read_text()
