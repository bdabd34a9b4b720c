"""Collect finished runs into one table, re-price them under any hardware profile, pick best configs.

    python -m failfast_bench.report [DIR ...] [--profile a6000_paper --profile cpu] [--out report/]

Every directory is searched recursively for complete runs (``COMPLETE`` marker). No model is loaded:
modeled speedups are recomputed from the stored traces, so a trace can be re-priced for other hardware.
The best configuration per (target, dataset, drafter family) is chosen by mean modeled speedup, as the
paper does.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterable

import pandas as pd
import yaml

from . import metrics, trace
from .latency import HardwareProfile, available_profiles, load_profile

RUN_KEY_COLUMNS = ["run_id", "target", "dataset", "drafter", "config_name", "theta", "tau", "n", "n_max", "spec_len", "mode", "max_new_tokens", "dtype"]


def find_runs(roots: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        root = Path(root)
        if trace.is_complete(root):
            found.append(root)
            continue
        found.extend(sorted(p.parent for p in root.rglob(trace.COMPLETE_MARKER)))
    return sorted(set(found))


def _run_identity(run_dir: Path, summary: dict) -> dict:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    d = cfg["drafter"]
    family = d["name"]
    applicable = {
        "theta": family in ("dllm", "failfast"),
        "tau": family == "failfast" or (family == "ar" and d.get("dynamic")),
        "n": family == "failfast" or (family == "ar" and d.get("dynamic")),
        "n_max": family == "failfast" or (family == "ar" and d.get("dynamic")),
        "spec_len": family in ("dllm", "eagle3") or (family == "ar" and not d.get("dynamic")),
    }
    row = {
        "run_id": f"{summary['target']}/{summary['dataset']}/{run_dir.name}",
        "run_dir": str(run_dir),
        "target": summary["target"],
        "dataset": summary["dataset"],
        "drafter": family,
        "config_name": summary["config_name"],
        "mode": d.get("mode") if family == "failfast" else None,
        "max_new_tokens": cfg["run"]["max_new_tokens"],
        "dtype": cfg["run"]["dtype"],
        "latency_key": cfg["target"].get("latency_key", summary["target"]),
        "replay": bool(cfg["run"].get("replay", False)),
    }
    for key, ok in applicable.items():
        row[key] = d.get(key) if ok else float("nan")
    return row


def collect(roots: Iterable[Path], profiles: list[HardwareProfile]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, rounds): one row per run × profile, and every round of every run (with run_id)."""
    run_rows, round_frames = [], []
    for run_dir in find_runs(roots):
        rounds, questions, summary = trace.load_run(run_dir)
        ident = _run_identity(run_dir, summary)
        for profile in profiles:
            try:
                m = metrics.summarize(questions, rounds, profile, ident["latency_key"], ident["drafter"])
            except KeyError:
                continue
            run_rows.append({**ident, **m})
        r = rounds.copy()
        r["run_id"] = ident["run_id"]
        r["config_name"] = ident["config_name"]
        r["dataset"] = ident["dataset"]
        r["target"] = ident["target"]
        r["drafter"] = ident["drafter"]
        round_frames.append(r)
    runs = pd.DataFrame(run_rows)
    rounds_all = pd.concat(round_frames, ignore_index=True) if round_frames else pd.DataFrame()
    return runs, rounds_all


def best_configs(runs: pd.DataFrame, metric: str = "modeled_speedup") -> pd.DataFrame:
    """Best config per (profile, target, dataset, drafter family) by mean ``metric`` (paper convention)."""
    if runs.empty:
        return runs
    ranked = runs.sort_values(metric, ascending=False)
    return ranked.groupby(["profile", "target", "dataset", "drafter"], as_index=False, sort=True).head(1).sort_values(
        ["profile", "target", "dataset", metric], ascending=[True, True, True, False]
    )


SHOW = ["target", "dataset", "drafter", "config_name", "acceptance_rate", "tokens_per_round", "drafter_passes_per_round", "modeled_speedup", "modeled_speedup_refined", "measured_speedup", "lossless_mismatches"]


def to_markdown(frame: pd.DataFrame, columns: list[str] = SHOW) -> str:
    cols = [c for c in columns if c in frame.columns]
    if frame.empty:
        return "(no complete runs found)\n"
    return frame[cols].to_markdown(index=False, floatfmt=".3f") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m failfast_bench.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="*", default=["runs"], help="run directories or roots to search (default: runs)")
    parser.add_argument("--profile", action="append", help=f"hardware profile(s) to price under (default: all: {', '.join(available_profiles())})")
    parser.add_argument("--out", help="write runs.csv, runs.parquet, rounds.parquet, best.csv, report.md here")
    parser.add_argument("--sort", default="modeled_speedup")
    args = parser.parse_args(argv)
    try:
        profiles = [load_profile(p) for p in (args.profile or available_profiles())]
    except FileNotFoundError as exc:
        parser.error(str(exc))
    missing = [d for d in args.dirs if not Path(d).exists()]
    if missing:
        parser.error(f"no such directory: {', '.join(missing)}")
    runs, rounds = collect([Path(d) for d in args.dirs], profiles)
    best = best_configs(runs, args.sort)
    text = "## All runs\n\n" + to_markdown(runs.sort_values(["profile", "target", "dataset", args.sort], ascending=[True, True, True, False]) if not runs.empty else runs)
    text += "\n## Best config per (target, dataset, drafter family)\n\n" + to_markdown(best, ["profile"] + SHOW)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        trace._atomic(out / "runs.csv", lambda tmp: runs.to_csv(tmp, index=False))
        trace._atomic(out / "best.csv", lambda tmp: best.to_csv(tmp, index=False))
        trace.write_parquet(runs, out / "runs.parquet")
        if not rounds.empty:
            trace.write_parquet(rounds, out / "rounds.parquet")
        trace.write_text(text, out / "report.md")
        print(f"[report] wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
