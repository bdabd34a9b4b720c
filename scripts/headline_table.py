"""The headline table of results/README.md and the method ordering under each statistic, from stored runs
(no model runs): per method family its best replayed or live config (report.best_configs, ranked by pooled
modeled speedup) plus every live run, modeled under one profile in both accountings, measured where live.

    .venv/bin/python scripts/headline_table.py [--results results/runs] [--dataset gsm8k] [--profile a6000_paper]

Rows repeat a method when both its replayed best and its live config are shown: the replayed one is the best
of a sweep (modeled only); the live one carries the measured columns.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from failfast_bench.latency import load_profile
from failfast_bench.plots.figures import method_of
from failfast_bench.plots.tables import _fmt, _pair, _with_ci
from failfast_bench.report import best_configs, collect

# statistic label -> (column, which accounting frame)
ORDERINGS = {
    "mean (the paper's convention)": ("modeled_speedup", "paper"),
    "median": ("modeled_speedup_median", "paper"),
    "pooled": ("modeled_speedup_pooled", "paper"),
    "pooled without degenerate questions": ("modeled_speedup_pooled_excluding_degenerate", "paper"),
    "pooled, strict accounting": ("modeled_speedup_pooled", "strict"),
    "measured pooled wall-time ratio (live runs)": ("measured_speedup_pooled", "paper"),
}


def _ci(row, base: str) -> str:
    return _with_ci(row[base], row[base + "_ci_low"], row[base + "_ci_high"])


def _label(row) -> str:
    how = "replay" if row["replay"] else "live"
    dtype = f", {row['drafter_dtype']} drafter" if not row["replay"] and row.get("drafter_dtype") not in (None, "float32") else ""
    return f"{method_of(row['drafter'], row['config_name'])} `{row['config_name']}` ({how}{dtype})"


def headline_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The best config of every family (pooled modeled speedup) and every live run, vanilla left out."""
    runs = runs[runs["drafter"] != "vanilla"]
    best = best_configs(runs)
    chosen = pd.concat([best, runs[~runs["replay"].astype(bool)]]).drop_duplicates("run_id")
    return chosen.sort_values("modeled_speedup_pooled", ascending=False)


def table(paper: pd.DataFrame, strict: pd.DataFrame) -> list[str]:
    strict = strict.set_index("run_id")
    lines = [
        "| method (config) | modeled mean | median | pooled [95% CI] | w/o degenerate: mean / pooled | strict: mean / pooled [95% CI] "
        "| τ pooled [95% CI] | measured mean | measured pooled [95% CI] | throughput ratio | load guard |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, row in paper.iterrows():
        s = strict.loc[row["run_id"]]
        live = not row["replay"]
        guard = ("flagged" if row["load_guard"] == "flagged" else "ok") if live else "n/a"
        lines.append(
            f"| {_label(row)} | {_fmt(row['modeled_speedup'])}× | {_fmt(row['modeled_speedup_median'])}× | "
            f"{_ci(row, 'modeled_speedup_pooled')}× | "
            f"{_pair(row['modeled_speedup_excluding_degenerate'], row['modeled_speedup_pooled_excluding_degenerate'])} | "
            f"{_fmt(s['modeled_speedup'])} / {_ci(s, 'modeled_speedup_pooled')} | {_ci(row, 'tokens_per_round_pooled')} | "
            f"{_fmt(row['measured_speedup']) if live else '–'} | {_ci(row, 'measured_speedup_pooled') if live else '–'} | "
            f"{_fmt(row['throughput_ratio_pooled']) if live else '–'} | {guard} |"
        )
    return lines


def orderings(paper: pd.DataFrame, strict: pd.DataFrame) -> list[str]:
    frames = {"paper": paper, "strict": strict}
    lines = []
    for label, (column, accounting) in ORDERINGS.items():
        frame = frames[accounting].dropna(subset=[column])
        if frame.empty:
            continue
        frame = frame.sort_values(column, ascending=False)
        ranked = " > ".join(f"{method_of(r['drafter'], r['config_name'])} `{r['config_name']}`{'' if r['replay'] else ' (live)'} "
                            f"{r[column]:.2f}" for _, r in frame.iterrows())
        lines.append(f"- **{label}**: {ranked}")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/runs")
    parser.add_argument("--dataset", default="gsm8k")
    parser.add_argument("--profile", default="a6000_paper")
    args = parser.parse_args(argv)
    profile = [load_profile(args.profile)]
    paper, _ = collect([Path(args.results)], profile, "paper")
    strict, _ = collect([Path(args.results)], profile, "strict")
    paper = headline_rows(paper[paper["dataset"] == args.dataset])
    strict = strict[strict["run_id"].isin(paper["run_id"])]
    print(f"{args.dataset}, modeled under {args.profile}, paper accounting unless stated\n")
    print("\n".join(table(paper, strict)))
    print()
    print("\n".join(orderings(paper, strict.set_index("run_id").loc[paper["run_id"]].reset_index())))


if __name__ == "__main__":
    main()
