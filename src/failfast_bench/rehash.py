"""Rename finished runs recorded under the previous config-hash scheme, without loading a model.

    python -m failfast_bench.rehash DIR [DIR ...] [--dry-run]

A run directory is ``<config name>__<first 10 hex of the config hash>``, and a rerun skips a config whose
directory is complete. Until 2026-11-30 the hash covered the target's whole table of per-family default
drafters (``target.drafters``), so making another drafter the default of one family orphaned every committed
run of every family. :func:`runner.config_hash` now names the drafter by the model it runs; this tool moves runs
recorded under the old scheme to their new names so that ``make results`` finds them complete.

A run moves only when its stored ``config.yaml`` reproduces the hash it recorded (``manifest.json``) under the
old scheme *with the drafter weights on disk now*: the same check a rerun would make, so a run whose drafter has
since been retrained (or whose config no longer hashes as it did) keeps its name and is reported. Moves rewrite
``config_hash`` in ``manifest.json`` and ``summary.json`` and ``run_dir`` in ``summary.json`` (atomically),
then rename the directory; an existing directory of the new name is never overwritten.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

from . import trace
from .report import find_runs
from .runner import config_hash


def plan(run_dir: Path) -> tuple[str, Path | None]:
    """(why, new directory or None) for one complete run."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    recorded = json.loads((run_dir / "manifest.json").read_text()).get("config_hash")
    new = config_hash(cfg)
    if config_hash(cfg, legacy_target_drafters=True) != recorded:
        if new == recorded:
            return "current scheme", None
        return "kept: its config or drafter weights no longer hash as recorded (a rerun would not find it either)", None
    target = run_dir.with_name(f"{run_dir.name.rsplit('__', 1)[0]}__{new[:10]}")
    if target == run_dir:
        return "same name under both schemes", None
    if target.exists():
        return f"kept: {target.name} already exists", None
    return new, target


def move(run_dir: Path, new_hash: str, target: Path) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["config_hash"] = new_hash
    trace.write_json(manifest, run_dir / "manifest.json")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["config_hash"] = new_hash
    if summary.get("run_dir"):
        summary["run_dir"] = str(Path(summary["run_dir"]).with_name(target.name))
    trace.write_json(summary, run_dir / "summary.json")
    run_dir.rename(target)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="report what would move, change nothing")
    args = parser.parse_args(argv)
    moved = kept = 0
    for run_dir in find_runs(args.dirs):
        why, target = plan(run_dir)
        if target is None:
            kept += 1
            print(f"{run_dir}: {why}")
            continue
        moved += 1
        print(f"{run_dir} -> {target.name}")
        if not args.dry_run:
            move(run_dir, why, target)
    print(f"[rehash] {'would move' if args.dry_run else 'moved'} {moved}, kept {kept}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
