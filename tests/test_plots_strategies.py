"""T3 / F12, the dLLM drafting strategies comparison, from tiny synthetic run directories (no model)."""
from __future__ import annotations

import pytest

from failfast_bench.latency import load_profile
from failfast_bench.plots import figures, strategies, tables
from failfast_bench.plots.__main__ import main as plots_main
from failfast_bench.report import collect

from test_report import write_run

S = strategies
# (config name, drafter config, rounds per question, passes per round, run's hardware); fewer rounds = faster.
RUNS = (
    ("dllm_0.9_sf_8", {"name": "dllm"}, 8, 3, None),
    ("dllm_0.05_df_0.45_60_10", {"name": "failfast", "mode": "faithful"}, 6, 3, None),
    ("dllm_0.05_df_0.45_60_10_clean", {"name": "failfast", "mode": "clean"}, 6, 2, None),
    ("dllm_0.05_adl_20_30_10_cps", {"name": "dllm", "policy": "adaptive", "cps": True}, 5, 4, None),
    ("dllm_0.05_adl_20_30_10", {"name": "dllm", "policy": "adaptive"}, 5, 4, None),
    ("dllm_0.05_sf_8_cps", {"name": "dllm", "cps": True}, 7, 3, None),
    ("dllm_0.9_sf_8_tree_k3_t0.5_b8_p1", {"name": "dllm", "tree": True}, 6, 5, None),
    ("dllm_0.05_df_0.45_60_10_tree_k3_t0.5_b8_p1", {"name": "failfast", "tree": True}, 5, 5, None),
    ("dllm_0.05_cost_60_10", {"name": "dllm", "policy": "cost_aware"}, 6, 3, "cpu"),  # listed out of order on purpose
    ("dllm_0.05_cost_60_10", {"name": "dllm", "policy": "cost_aware"}, 7, 1, "a6000_paper"),
    ("ar_None_sf_4", {"name": "ar", "spec_len": 4}, 6, 4, None),  # not a dLLM strategy: left out
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs_strategies")
    for dataset in ("mt_bench", "gsm8k"):  # written out of display order
        for name, drafter, rounds, passes, hardware in reversed(RUNS):
            write_run(root, name, drafter, rounds, passes, n_out=3 * rounds, replay=True, dataset=dataset,
                      hardware=hardware)
    return root


@pytest.fixture(scope="module")
def table(root):
    runs, _ = collect([root], [load_profile(p) for p in S.PROFILES])
    return S.strategies_frame(runs)


def test_rows_are_ordered_by_dataset_then_strategy_with_each_oracle_after_its_run(table):
    expected = [S.FAST_DLLM, S.oracle_of(S.FAST_DLLM), S.FAILFAST, S.oracle_of(S.FAILFAST), S.FAILFAST_CLEAN,
                S.DIFFUSPEC, S.ADL_ONLY, S.CPS_ONLY, S.TREE, S.FAILFAST_TREE, S.cost_aware("a6000_paper"),
                S.cost_aware("cpu")]
    assert list(table["dataset"]) == ["gsm8k"] * len(expected) + ["mt_bench"] * len(expected)
    assert list(table["strategy"]) == expected * 2
    assert list(table["is_oracle"]) == [s.startswith(S.ORACLE_PREFIX) for s in expected] * 2


def test_speedups_come_from_the_runs_frame_and_the_oracle_bounds_its_run(table, root):
    runs, _ = collect([root], [load_profile(p) for p in S.PROFILES])
    gsm = table[table["dataset"] == "gsm8k"].set_index("strategy")
    for profile in S.PROFILES:
        ff = runs[(runs["family"] == "failfast") & (runs["mode"] == "faithful") & (runs["dataset"] == "gsm8k")
                  & (runs["profile"] == profile)].iloc[0]
        row = gsm.loc[S.FAILFAST]
        assert row[f"speedup_{profile}_pooled"] == ff["modeled_speedup_pooled"]
        assert row[f"speedup_{profile}_pooled_ci_low"] == ff["modeled_speedup_pooled_ci_low"]
        assert 0 < row[f"of_oracle_{profile}"] <= 1
        bound = gsm.loc[S.oracle_of(S.FAILFAST), f"speedup_{profile}_pooled"]
        assert bound >= row[f"speedup_{profile}_pooled"] * 0.99  # committed = accepted + 1 vs N_out: within 1 %
    assert gsm.loc[S.cost_aware("a6000_paper"), "tokens_per_round_pooled"] == pytest.approx(3.0)  # 2 accepted + 1
    best = S.best_online(table, "gsm8k", "a6000_paper")
    assert best["strategy"] == S.cost_aware("a6000_paper") and not best["is_oracle"]  # one pass per round: cheapest


def test_t3_and_f12_write_files_and_name_the_accounting(table, tmp_path):
    md, tex = tables.write_t3(table, tmp_path)
    text = md.read_text()
    assert "paper accounting" in text and "Oracle stop on FailFast (faithful)" in text
    assert "Modeled a6000_paper, pooled [95% CI]" in text and "Run / oracle, a6000_paper / cpu" in text
    assert tex.read_text().startswith(r"\begin{table}")
    assert [p.suffix for p in figures.plot_strategies(table, tmp_path)] == [".png", ".pdf"]


def test_command_line_builds_t3_and_f12_from_strategy_runs_only(root, tmp_path, capsys):
    assert plots_main(["--strategies", str(root), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "T3:" in out and "F12:" in out and "T1:" not in out
    assert (tmp_path / "t3_strategies.md").exists() and (tmp_path / "f12_strategies.png").exists()
