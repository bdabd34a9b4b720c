"""Write every figure and table the given results have data for.

    python -m failfast_bench.plots --runs runs.parquet --rounds rounds.parquet --out results/figures
        [--training-curve curve.csv] [--profile a6000_paper] [--tokenizer DIR]
        [--accounting paper|strict] [--rank-by pooled|mean|median] [--strategies results/runs_strategies]

A figure whose data is absent (no FailFast sweep, no EAGLE-3 rows, ...) is skipped with a note; a
frame that breaks the column contract is reported and makes the exit status 1.
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from ..metrics import ACCOUNTING_MODES, DEFAULT_RANK_STATISTIC, STATISTICS
from . import figures, strategies, tables, trajectory


def read_frame(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise SystemExit(f"error: {path} does not exist")
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise SystemExit(f"error: {path}: expected a .parquet or .csv file")


def _decoder(tokenizer_dir: Optional[str]) -> Optional[Callable[[list[int]], str]]:
    if tokenizer_dir is None:
        return None
    from transformers import AutoTokenizer  # only when asked: importing transformers is slow

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return lambda ids: tokenizer.decode(ids)


def build_jobs(runs: Optional[pd.DataFrame], rounds: Optional[pd.DataFrame], curve: Optional[pd.DataFrame],
               out: Path, profile: Optional[str], decode,
               statistic: str = DEFAULT_RANK_STATISTIC,
               strategy_runs: Optional[pd.DataFrame] = None) -> list[tuple[str, Callable[[], list[Path]]]]:
    jobs = []
    if strategy_runs is not None:
        compared = functools.cache(lambda: strategies.strategies_frame(strategy_runs))  # the oracle reads traces: once
        jobs += [("T3", lambda: tables.write_t3(compared(), out)),
                 ("F12", lambda: figures.plot_strategies(compared(), out))]
    if runs is not None:
        jobs += [
            ("F1", lambda: figures.plot_concavity(runs, out)),
            ("F5", lambda: figures.plot_latency_breakdown(runs, out, profile=profile)),
            ("F7", lambda: figures.plot_tau_sensitivity(runs, out, profile=profile)),
            ("F8", lambda: figures.plot_nmax_sensitivity(runs, out, profile=profile)),
            ("F10", lambda: figures.plot_theoretical_speedup(runs, out, profile=profile)),
            ("T1", lambda: tables.write_t1(runs, out, profile, statistic=statistic)),
            ("T2", lambda: tables.write_t2(runs, out, profile, statistic=statistic)),
            ("T1b", lambda: tables.write_t1b(runs, out, profile, statistic=statistic)),
        ]
    if rounds is not None:
        jobs += [
            ("F2", lambda: figures.plot_difficulty_raster(rounds, out)),
            ("F3", lambda: figures.plot_easy_region_cdf(rounds, out)),
            ("F4", lambda: trajectory.plot_trajectory(rounds, out, decode=decode)),
            ("F6", lambda: figures.plot_length_cdf(rounds, out)),
            ("F11", lambda: figures.plot_calibration(rounds, out)),
        ]
    if curve is not None:
        jobs.append(("F9", lambda: figures.plot_training_curve(curve, out)))
    order = ["F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "F9", "F10", "F11", "F12", "T1", "T1b", "T2", "T3"]
    return sorted(jobs, key=lambda job: order.index(job[0]))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m failfast_bench.plots", description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, action="append", help="run directories to collect (report.collect; no model runs); repeatable")
    parser.add_argument("--strategies", type=Path, action="append",
                        help="run directories of the dLLM strategies comparison (T3, F12), collected apart from "
                             "--results so their runs never enter T1's best-config choice; repeatable")
    parser.add_argument("--runs", type=Path, help="runs table (.parquet or .csv), one row per run × profile")
    parser.add_argument("--rounds", type=Path, help="rounds table (.parquet or .csv), one row per round")
    parser.add_argument("--training-curve", type=Path, help="drafter training curve: step, accuracy[, loss, label]")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--profile", help="latency profile for modeled numbers (default: a6000_paper if present)")
    parser.add_argument("--tokenizer", help="local tokenizer directory to show F4 tokens as text")
    parser.add_argument("--accounting", default="paper", choices=ACCOUNTING_MODES,
                        help="output accounting of --results (paper: overshoot counts, nominal draft lengths; strict: "
                             "cut at max_new_tokens, tokens actually drafted); figures and tables name it")
    parser.add_argument("--rank-by", default=DEFAULT_RANK_STATISTIC, choices=STATISTICS,
                        help="statistic of the modeled speedup that picks T1/T2's best configs (default pooled)")
    args = parser.parse_args(argv)
    if not (args.results or args.runs or args.rounds or args.training_curve or args.strategies):
        parser.error("give at least one of --results, --strategies, --runs, --rounds, --training-curve")

    runs = read_frame(args.runs) if args.runs else None
    rounds = read_frame(args.rounds) if args.rounds else None
    curve = read_frame(args.training_curve) if args.training_curve else None
    if args.results:
        from ..latency import available_profiles, load_profile
        from ..report import collect

        missing = [str(d) for d in args.results if not d.exists()]
        if missing:
            parser.error(f"no such results directory: {', '.join(missing)}")
        runs, rounds = collect(args.results, [load_profile(p) for p in available_profiles()], args.accounting)
        if runs.empty:
            parser.error(f"no complete runs under {', '.join(map(str, args.results))}")
    strategy_runs = None
    if args.strategies:
        from ..latency import load_profile
        from ..report import collect

        missing = [str(d) for d in args.strategies if not d.exists()]
        if missing:
            parser.error(f"no such strategies directory: {', '.join(missing)}")
        strategy_runs, _ = collect(args.strategies, [load_profile(p) for p in strategies.PROFILES], args.accounting)
    status = 0
    for name, job in build_jobs(runs, rounds, curve, args.out, args.profile, _decoder(args.tokenizer), args.rank_by,
                                strategy_runs):
        try:
            paths = job()
        except figures.NoDataError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        except ValueError as exc:
            print(f"{name}: FAILED ({exc})", file=sys.stderr)
            status = 1
            continue
        print(f"{name}: " + ", ".join(str(p) for p in paths))
    return status


if __name__ == "__main__":
    sys.exit(main())
