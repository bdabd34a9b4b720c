"""Move finished runs to another results directory, keeping the paths they record true.

    python -m failfast_bench.relocate RUN_DIR [RUN_DIR ...] --to results/runs_drafters [--dry-run]

A run records where it lives twice: ``run_dir`` in ``summary.json`` (printed when a rerun finds it complete) and
``run.output_dir`` in ``config.yaml``. Neither enters the config hash, so moving a directory by hand keeps it a
complete run but leaves both naming the old place (on 2026-11-30, 11 committed runs named stale or machine-local
paths that way). This moves ``<root>/<target>/<dataset>/<name>`` to ``<to>/<target>/<dataset>/<name>`` and
rewrites both (atomically) in the same step. Only complete runs move; an existing destination is never
overwritten. Paths are recorded as given (relative to the working directory when given relative).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

from . import trace
from .report import find_runs


def destination(run_dir: Path, to: Path) -> Path:
    """``<to>/<target>/<dataset>/<name>``: the layout runner.py writes under ``run.output_dir``."""
    return to / run_dir.parent.parent.name / run_dir.parent.name / run_dir.name


def relocate(run_dir: Path, to: Path) -> Path:
    """Move one complete run under ``to`` and rewrite the paths it records; returns the new directory."""
    if not (run_dir / trace.COMPLETE_MARKER).exists():
        raise ValueError(f"{run_dir}: not a complete run (no {trace.COMPLETE_MARKER}); finish or delete it first")
    target = destination(run_dir, to)
    if target.exists():
        raise FileExistsError(f"{target} already exists; not overwritten")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["run_dir"] = str(target)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.run.output_dir = str(to)
    # Rewrite first, rename last: a crash in between leaves a complete run at its old place that names the new
    # one, which a rerun of this command (or the committed-runs test) finds, never a half-moved directory.
    trace.write_json(summary, run_dir / "summary.json")
    trace.write_text(OmegaConf.to_yaml(cfg), run_dir / "config.yaml")
    target.parent.mkdir(parents=True, exist_ok=True)
    run_dir.rename(target)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run directories, or roots to find complete runs under")
    parser.add_argument("--to", type=Path, required=True, help="results directory to move them under")
    parser.add_argument("--dry-run", action="store_true", help="report what would move, change nothing")
    args = parser.parse_args(argv)
    runs = find_runs(args.dirs)
    if not runs:
        parser.error(f"no complete runs under {', '.join(map(str, args.dirs))}")
    clashes = [destination(r, args.to) for r in runs if destination(r, args.to).exists()]
    if clashes:
        parser.error("destination exists, nothing moved: " + ", ".join(map(str, clashes)))
    for run_dir in runs:
        print(f"{run_dir} -> {destination(run_dir, args.to)}")
        if not args.dry_run:
            relocate(run_dir, args.to)
    print(f"[relocate] {'would move' if args.dry_run else 'moved'} {len(runs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
