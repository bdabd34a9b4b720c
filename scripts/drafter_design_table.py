"""One markdown row per run directory for the drafter-design comparison in results/README.md (issue 14):
pooled and mean tokens per round (τ) with the pooled 95 % CI, the share of rounds whose draft extended past
N (FailFast widened its window at least once), the longest draft, drafter passes per round, and the
measured throughput ratio when the run was live. Paper accounting, primary profile; no model runs.

    .venv/bin/python scripts/drafter_design_table.py LABEL=RUN_DIR [LABEL=RUN_DIR ...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from failfast_bench.plots.tables import _fmt, _with_ci


def row(label: str, run_dir: Path) -> str:
    summary = json.loads((run_dir / "summary.json").read_text())
    m = summary["metrics"]
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    n = json.loads((run_dir / "manifest.json").read_text())["drafter"].get("n")
    extended = float((rounds["draft_len"] > n).mean()) if n else float("nan")
    throughput = m.get("throughput_ratio_pooled")
    ci = _with_ci(m.get("tokens_per_round_pooled"), m.get("tokens_per_round_pooled_ci_low"), m.get("tokens_per_round_pooled_ci_high"))
    return (
        f"| {label} | {len(summary.get('degenerate', {}).get('questions', []))}/{m.get('n_questions')} | {ci} | "
        f"{_fmt(m.get('tokens_per_round'))} | {_fmt(m.get('tokens_per_round_pooled_excluding_degenerate'))} | "
        f"{'n/a' if n is None else f'{100 * extended:.1f} %'} | {int(rounds['draft_len'].max())} | {_fmt(m.get('drafter_passes_per_round_pooled'))} | "
        f"{'n/a' if throughput is None else _fmt(throughput) + 'x'} |"
    )


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    print("| drafter | degenerate | τ pooled [95% CI] | τ mean | τ pooled w/o degenerate | rounds past N | longest draft | passes/round | throughput (measured, pooled) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arg in argv:
        label, _, path = arg.partition("=")
        print(row(label, Path(path)))


if __name__ == "__main__":
    main(sys.argv[1:])
