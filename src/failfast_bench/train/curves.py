"""Training curves of the drafter runs as one table (figure F9's input).

    python -m failfast_bench.train.curves [--target smollm2-135m] [--out results/training/curves.csv]

Rows: ``label, step, accuracy, loss, kind``. For the dLLM and AR recipes, ``kind=train`` rows are the logged
training accuracy (the drafter's guess equals the target's token, on the training batch) and loss; for the
EAGLE-3 head, ``kind=heldout`` rows are its periodic held-out top-1 agreement and step-0 loss (its training
log is not kept per step). A drafter trained in several warm-started runs (e.g. ``dllm_cond``, then ``dllm_cond_2``,
``dllm_cond_3``, ... as ``make drafters`` runs them) is one line, each run's steps counted after the previous
run's last one. Labels whose runs are not on this machine keep their rows from the existing ``--out`` table
(training logs live in ``~/.cache``, which a fresh machine does not have).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pandas as pd

RECIPES = ("dllm", "dllm_cond", "ar", "eagle3")
LABELS = {"dllm": "dLLM drafter (training accuracy, masked positions)",
          "dllm_cond": "target-conditioned dLLM drafter (training accuracy, masked positions)",
          "ar": "AR drafter (training accuracy)"}


def _jsonl_curve(path: Path, label: str, offset: int = 0) -> tuple[list[dict], int]:
    """The training rows of one run's log (steps shifted by ``offset``) and its last logged step."""
    rows, last = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        last = max(last, rec.get("step", 0))
        if rec.get("kind") == "train" and "accuracy" in rec:
            rows.append({"label": label, "step": offset + rec["step"], "accuracy": rec["accuracy"], "loss": rec.get("loss"),
                         "kind": "train"})
    return rows, last


def _chain(runs_root: Path, recipe: str) -> list[Path]:
    """``recipe``'s run directory, then its continuations ``recipe_2``, ``recipe_3``, ... in order."""
    chain = [runs_root / recipe]
    while (runs_root / f"{recipe}_{len(chain) + 1}" / "log.jsonl").exists():
        chain.append(runs_root / f"{recipe}_{len(chain) + 1}")
    return [d for d in chain if (d / "log.jsonl").exists()]


def _eagle3_curve(run_dir: Path, label: str) -> list[dict]:
    summary = run_dir / "export" / "train_summary.json"
    if not summary.exists():
        return []
    history = json.loads(summary.read_text()).get("history") or []
    return [{"label": label, "step": h["step"], "accuracy": h["top1_agreement"], "loss": h.get("step0_loss"), "kind": "heldout"}
            for h in history]


def collect_curves(runs_root: Path) -> pd.DataFrame:
    rows: list[dict] = []
    for recipe in RECIPES:
        run_dir = runs_root / recipe
        if recipe == "eagle3":
            rows += _eagle3_curve(run_dir, "EAGLE-3 head (held-out top-1)")
        else:
            offset = 0
            for part in _chain(runs_root, recipe):
                part_rows, last = _jsonl_curve(part / "log.jsonl", LABELS[recipe], offset)
                rows += part_rows
                offset += last
    return pd.DataFrame(rows, columns=["label", "step", "accuracy", "loss", "kind"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="smollm2-135m")
    parser.add_argument("--cache-root", default=os.environ.get("FAILFAST_BENCH_CACHE", "~/.cache/failfast-bench"))
    parser.add_argument("--out", default="results/training/curves.csv")
    args = parser.parse_args(argv)
    root = Path(os.path.expanduser(args.cache_root)) / "train_runs" / args.target
    frame = collect_curves(root)
    out = Path(args.out)
    if out.exists():
        kept = pd.read_csv(out)
        frame = pd.concat([kept[~kept.label.isin(set(frame.label))], frame], ignore_index=True) if not frame.empty else kept
    if frame.empty:
        parser.error(f"no training logs under {root} (train with `make drafters`)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, out)
    print(f"{out}: {len(frame)} rows ({', '.join(frame.label.unique())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
