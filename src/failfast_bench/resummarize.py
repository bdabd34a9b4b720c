"""Summarise finished runs again from their stored traces, without loading a model.

    python -m failfast_bench.resummarize DIR [DIR ...] [--accounting paper|strict] [--check]

For every complete run under the directories: reads ``rounds.parquet``, ``questions.parquet`` and
``config.yaml``, recomputes ``summary.json`` with the current metric definitions (both accountings, the four
aggregate forms, degenerate questions, the load guard; strict JSON) and adds the derived question columns
(``degenerate``, ``loop_period``, ``vanilla_tokens_per_second``) to ``questions.parquet``. Facts only the
original run knew (run directory, config hash, load time) are kept from the old summary; the run directory
(keyed by config hash) is never renamed. ``--check`` writes nothing and exits 1 when a paper-accounting metric
the old summary holds would change.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from . import trace
from .report import find_runs
from .runner import build_summary

# Kept from the stored summary: what the run itself knew.
KEEP = ("run_dir", "config_name", "config_hash", "target", "dataset", "drafter", "load_seconds")
DERIVED_QUESTION_COLUMNS = ("degenerate", "loop_period", "vanilla_tokens_per_second")


def resummarize(run_dir: Path, accounting: Optional[str] = None, write: bool = True) -> tuple[dict, list[str]]:
    """(new summary, changed paper-accounting metrics as 'profile/key: old -> new') of one complete run."""
    run_dir = Path(run_dir)
    rounds, questions, old = trace.load_run(run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    if accounting is not None:
        OmegaConf.update(cfg, "run.accounting", accounting, force_add=True)
    questions = questions.drop(columns=[c for c in DERIVED_QUESTION_COLUMNS if c in questions.columns])
    extra = {k: old[k] for k in KEEP if k in old}
    summary, questions = build_summary(cfg, questions, rounds, run_dir=old.get("run_dir", str(run_dir)),
                                       replay=bool(OmegaConf.select(cfg, "run.replay", default=False)),
                                       load_seconds=old.get("load_seconds"), config_hash=old.get("config_hash", ""),
                                       extra=extra)
    changed = []
    paper = summary["accounting"]["paper"]
    for profile, metrics in (old.get("metrics_by_profile") or {}).items():
        new = paper.get(profile, {})
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value is None:
                continue
            got = new.get(key)
            if isinstance(value, float) and math.isnan(value) and got is None:
                continue
            if got is None or not math.isclose(float(value), float(got), rel_tol=1e-9, abs_tol=1e-12):
                changed.append(f"{profile}/{key}: {value} -> {got}")
    if write:
        trace.write_parquet(questions, run_dir / "questions.parquet")
        trace.write_json(summary, run_dir / "summary.json")
    return summary, changed


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m failfast_bench.resummarize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", help="run directories or roots to search for complete runs")
    parser.add_argument("--accounting", choices=("paper", "strict"), help="headline accounting (default: the run's run.accounting, else paper)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a stored paper-accounting metric would change")
    args = parser.parse_args(argv)
    missing = [d for d in args.dirs if not Path(d).exists()]
    if missing:
        parser.error(f"no such directory: {', '.join(missing)}")
    status = 0
    for run_dir in find_runs([Path(d) for d in args.dirs]):
        summary, changed = resummarize(run_dir, args.accounting, write=not args.check)
        m = summary["metrics"]
        print(f"{run_dir}: modeled mean {m.get('modeled_speedup')}, pooled {m.get('modeled_speedup_pooled')}; "
              f"{summary['degenerate']['count']} degenerate; load guard "
              f"{'flagged' if summary['load_guard'].get('flagged') else 'ok' if summary['load_guard'].get('applicable') else 'n/a'}")
        for line in changed:
            print(f"  changed {line}")
        if changed and args.check:
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
