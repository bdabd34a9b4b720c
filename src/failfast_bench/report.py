"""Collect finished runs into one table, re-price them under any hardware profile, pick best configs.

    python -m failfast_bench.report [DIR ...] [--profile a6000_paper --profile cpu] [--out report/] [--accuracy]
        [--sort modeled_speedup] [--rank-by pooled|mean|median] [--accounting paper|strict]

Every directory is searched recursively for complete runs (``COMPLETE`` marker). No model is loaded:
modeled speedups are recomputed from the stored traces, so a trace can be re-priced for other hardware and
under either output accounting (``--accounting paper|strict``, see metrics.py). Every metric comes in four
forms (mean over questions = the paper's convention, median, pooled, 95 % bootstrap CI of the pooled value).
The best configuration per (target, dataset, drafter family) is chosen by one named statistic of one
metric: by default the *pooled* modeled speedup (``--rank-by mean`` ranks like the paper). Sweeps along one
hyperparameter (τ, N_max, θ, spec_len, N) with the others held fixed are printed as curves, e.g. the τ
curve of ``experiment=micro_tau``. ``--accuracy`` adds
each run's task accuracy (stored by ``eval.accuracy=true``, else scored from the stored outputs; see
:mod:`failfast_bench.accuracy`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable

import pandas as pd
import yaml

from . import metrics, trace
from .latency import HardwareProfile, available_profiles, load_profile

RUN_KEY_COLUMNS = ["run_id", "target", "dataset", "drafter", "family", "config_name", "theta", "tau", "n", "n_max", "spec_len", "mode", "max_new_tokens", "dtype", "drafter_dtype", "replay"]
# Hyperparameters a sweep varies; a curve moves one of them and holds the rest fixed.
SWEEP_PARAMS = ("tau", "n_max", "theta", "spec_len", "n")
# What else a sweep point must share with its neighbours to sit on one curve: runs on other questions, at another
# temperature or with other drafter weights are other experiments even under the same hyperparameters.
SWEEP_CONTEXT = ("profile", "target", "dataset", "family", "mode", "n_questions", "max_new_tokens", "temperature",
                 "dtype", "drafter_dtype", "drafter_weights", "replay")
PARAM_LABELS = {"tau": "τ", "n_max": "N_max", "theta": "θ", "spec_len": "spec_len", "n": "N"}
CURVE_METRICS = ["modeled_speedup", "modeled_speedup_median", "modeled_speedup_pooled", "modeled_speedup_refined",
                 "measured_speedup", "measured_speedup_pooled", "acceptance_rate", "tokens_per_round",
                 "tokens_per_round_pooled", "drafter_passes_per_round", "mean_draft_len"]
# Metrics --sort accepts (each in its four forms: metric, metric_median, metric_pooled, metric_pooled_ci_*).
RANKABLE_METRICS = tuple(metrics.RATIO_METRICS)


def find_runs(roots: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        root = Path(root)
        if trace.is_complete(root):
            found.append(root)
            continue
        found.extend(sorted(p.parent for p in root.rglob(trace.COMPLETE_MARKER)))
    return sorted(set(found))


def _family(family: str, d: dict, cost: bool) -> str:
    """The family a run's best config is picked within: the dynamic-length AR ablation, cost-aware stopping and
    DiffuSpec (ADL and/or CPS on a dLLM drafter) each rank apart from the method they modify (as in the paper)."""
    if family == "ar" and d.get("dynamic"):
        return "ar_dynamic"
    if cost:
        return "dllm_cost"
    if family == "dllm" and (d.get("policy") == "adaptive" or d.get("cps")):
        return "diffuspec"
    return family + "_cps" if d.get("cps") else family


def drafter_weights(run_dir: Path, drafter_cfg: dict) -> str:
    """Which drafter weights a run used, as resolved when it ran (its manifest): ``shipped:<name>`` for a shipped
    drafter, ``<repo>@<commit>`` for a hub one, else the configured model or local path; "" without a drafter
    model. A config's ``model: null`` means the target's default at that time, which later commits may change, so
    the manifest is read first; machine-local paths are the last resort (they differ between machines)."""
    manifest = run_dir / "manifest.json"
    record = {}
    if manifest.exists():
        record = (json.loads(manifest.read_text()).get("hub") or {}).get("drafter") or {}
    if record.get("repo"):
        return f"{record['repo']}@{record['commit'][:12]}" if record.get("commit") else str(record["repo"])
    path = record.get("path")
    if path:
        parts = Path(path).parts
        if len(parts) >= 3 and parts[-3] == "shipped":
            return f"shipped:{parts[-1]}"
    configured = drafter_cfg.get("model")
    return str(configured) if configured else (str(path) if path else "")


def _run_identity(run_dir: Path, summary: dict) -> dict:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    d = cfg["drafter"]
    family = d["name"]
    cost = family == "dllm" and d.get("policy") == "cost_aware"  # length policy: widen by n up to n_max, no τ
    dllm_tree = family in ("dllm", "failfast") and bool(d.get("tree"))  # a prefix tree of diffusion drafts
    adaptive = family == "dllm" and d.get("policy") == "adaptive"  # DiffuSpec's ADL: k from feedback, no spec_len
    applicable = {
        "theta": family in ("dllm", "failfast"),
        "tau": family == "failfast" or (family == "ar" and d.get("dynamic")),
        "n": family == "failfast" or (family == "ar" and d.get("dynamic")) or cost,
        "n_max": family == "failfast" or (family == "ar" and d.get("dynamic")) or cost,
        "spec_len": (family in ("dllm", "eagle3") and not (cost or adaptive)) or (family == "ar" and not d.get("dynamic")),
    }
    row = {
        "run_id": f"{summary['target']}/{summary['dataset']}/{run_dir.name}",
        "run_dir": str(run_dir),
        "target": summary["target"],
        "dataset": summary["dataset"],
        "drafter": family,
        "family": _family(family, d, cost) + ("_tree" if dllm_tree else ""),
        "config_name": summary["config_name"],
        "mode": d.get("mode") if family == "failfast" else None,
        "max_new_tokens": cfg["run"]["max_new_tokens"],
        "dtype": cfg["run"]["dtype"],
        "drafter_dtype": d.get("dtype") or cfg["run"]["dtype"],
        "drafter_weights": drafter_weights(run_dir, d),
        "latency_key": cfg["target"].get("latency_key", summary["target"]),
        "replay": bool(cfg["run"].get("replay", False)),
        # The profile the run itself ran under: a cost-aware stop priced its extensions with it.
        "run_hardware": (cfg.get("hardware") or {}).get("name"),
        # Sampling (T > 0) runs are another experiment than greedy ones under the same config name.
        "temperature": float(cfg["run"].get("temperature") or 0.0),
        "top_p": float(cfg["run"].get("top_p") or 1.0),
        "top_k": int(cfg["run"].get("top_k") or 0),
        # Trees (EAGLE-3, dLLM prefix trees): the acceptance denominator is every tree node, not a chain's length.
        "draft_kind": "tree" if (family == "eagle3" and d.get("tree")) or dllm_tree else "chain",
    }
    for key, ok in applicable.items():
        row[key] = d.get(key) if ok else float("nan")
    return row


def run_accuracy(run_dir: Path, summary: dict, execute_code: bool = False) -> dict:
    """``accuracy`` and ``accuracy_n`` of a run: stored, else scored from its outputs (NaN, with a note, when it cannot be)."""
    from .accuracy import score_run
    from .config import ConfigError

    acc = summary.get("accuracy")
    if acc is None:
        try:
            acc = score_run(run_dir, execute_code=execute_code)[1]
        except ConfigError as exc:
            print(f"[report] no accuracy for {run_dir}: {exc}", file=sys.stderr)
            return {"accuracy": float("nan"), "accuracy_n": 0}
    return {"accuracy": acc["accuracy"], "accuracy_n": acc["n_questions"]}


def collect(roots: Iterable[Path], profiles: list[HardwareProfile], accounting: str = "paper", accuracy: bool = False,
            execute_code: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, rounds): one row per run × profile under one output ``accounting`` (metrics.py), and every
    round of every run (with run_id). Each run row also carries its degenerate questions and load guard, and
    with ``accuracy`` its task accuracy."""
    if accounting not in metrics.ACCOUNTING_MODES:
        raise ValueError(f"accounting={accounting!r}; valid: {', '.join(metrics.ACCOUNTING_MODES)}")
    run_rows, round_frames = [], []
    every_profile = _all_profiles(profiles)
    for run_dir in find_runs(roots):
        rounds, questions, summary = trace.load_run(run_dir)
        ident = _run_identity(run_dir, summary)
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        max_new = int(cfg["run"]["max_new_tokens"])
        questions = metrics.with_question_flags(questions, max_new)
        guard = metrics.load_guard(questions, every_profile, ident["latency_key"], str(cfg["run"].get("dtype")),
                                   cfg["run"].get("threads") or None,
                                   float(cfg["run"].get("load_tolerance", metrics.DEFAULT_LOAD_TOLERANCE)))
        flagged = questions[questions["degenerate"]]
        facts = {
            "accounting": accounting,
            "degenerate_questions": ", ".join(f"{q} (p={p})" for q, p in zip(flagged["question_id"], flagged["loop_period"])),
            "load_guard": ("flagged" if guard["flagged"] else "ok") if guard["applicable"] else "n/a",
            "load_guard_reasons": "; ".join(guard["reasons"]) if guard["applicable"] else "",
            "vanilla_tokens_per_second_cv": guard.get("vanilla_tokens_per_second_cv", float("nan")),
            # The profile measured on the machine and dtype this run ran with (T2's like-for-like ratio).
            "machine_profile": getattr(metrics.machine_profile(every_profile, ident["latency_key"],
                                                               str(cfg["run"].get("dtype")))[0], "name", None),
        }
        if accuracy:
            ident.update(run_accuracy(run_dir, summary, execute_code))
        stored = summary.get("accuracy") or {}
        ident.update(accuracy=stored.get("accuracy", ident.get("accuracy", float("nan"))),
                     accuracy_ci_low=(stored.get("ci95") or [float("nan")] * 2)[0],
                     accuracy_ci_high=(stored.get("ci95") or [float("nan")] * 2)[1])
        for profile in profiles:
            try:
                m = metrics.summarize(questions, rounds, profile, ident["latency_key"], ident["drafter"], accounting, max_new)
            except KeyError:
                continue
            run_rows.append({**ident, **m, **facts})
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


def _all_profiles(given: list[HardwareProfile]) -> list[HardwareProfile]:
    """The given profiles, then every other one in conf/hardware (the load guard looks for a measured one)."""
    out = list(given)
    for name in available_profiles():
        if name not in {p.name for p in out}:
            try:
                out.append(load_profile(name))
            except Exception:  # noqa: BLE001 - a broken optional profile must not sink a report
                continue
    return out


def best_configs(runs: pd.DataFrame, metric: str = "modeled_speedup",
                 statistic: str = metrics.DEFAULT_RANK_STATISTIC) -> pd.DataFrame:
    """Best config per (profile, target, dataset, drafter family) by ``statistic`` of ``metric``.

    ``statistic``: ``pooled`` (default: Σ over questions, robust to one runaway question), ``mean`` (the
    paper's mean over questions) or ``median``. The column ranked by is recorded in ``ranked_by``.
    Families are the ``drafter=`` options: ``ar`` (fixed length) and ``ar_dynamic`` are ranked separately.
    """
    if runs.empty:
        return runs
    column = metrics.statistic_column(metric, statistic)
    family = "family" if "family" in runs.columns else "drafter"
    # Ties (a replayed sweep point and its live rerun price alike) go to the run with a measured speedup.
    live = runs["measured_speedup"].notna() if "measured_speedup" in runs.columns else pd.Series(False, index=runs.index)
    ranked = runs.assign(_live=live).sort_values([column, "_live"], ascending=[False, False], na_position="last").drop(columns="_live")
    keys = ["profile", "target", "dataset", family] + (["temperature"] if "temperature" in runs.columns else [])
    best = ranked.groupby(keys, as_index=False, sort=True).head(1).sort_values(
        ["profile", "target", "dataset", column], ascending=[True, True, True, False]
    )
    return best.assign(ranked_by=column)


def sweep_curves(runs: pd.DataFrame, params=SWEEP_PARAMS, min_points: int = 3) -> list[tuple[str, str, pd.DataFrame]]:
    """Every one-hyperparameter sweep in ``runs``: (parameter, title, curve) with one row per value.

    A curve holds everything else fixed (``SWEEP_CONTEXT`` and the other hyperparameters). Repeated runs of one
    value are averaged.
    """
    out: list[tuple[str, str, pd.DataFrame]] = []
    if runs.empty:
        return out
    for param in params:
        if param not in runs.columns:
            continue
        rows = runs[runs[param].notna()]
        fixed = [c for c in [*SWEEP_CONTEXT, *(p for p in SWEEP_PARAMS if p != param)] if c in rows.columns]
        for key, group in rows.groupby(fixed, dropna=False, sort=True):
            if group[param].nunique() < min_points:
                continue
            held = dict(zip(fixed, key))
            metrics = [m for m in CURVE_METRICS if m in group.columns]
            curve = group.groupby(param, as_index=False).agg({**{m: "mean" for m in metrics}, "config_name": "first"})
            out.append((param, _curve_title(param, held), curve.sort_values(param).reset_index(drop=True)))
    return out


def _curve_title(param: str, held: dict) -> str:
    others = ", ".join(
        f"{PARAM_LABELS[p]}={held[p]:g}" for p in SWEEP_PARAMS if p != param and p in held and not pd.isna(held[p])
    )
    mode = f" ({held['mode']})" if isinstance(held.get("mode"), str) else ""
    setting = f"{held.get('n_questions', '?')} questions, {held.get('max_new_tokens', '?')} tokens" + (", replay" if held.get("replay") else "")
    return (
        f"{PARAM_LABELS[param]} curve: {held['family']}{mode} on {held['target']} / {held['dataset']} "
        f"[profile {held['profile']}; {others}; {setting}]"
    )


def curve_markdown(param: str, curve: pd.DataFrame, metric: str = "modeled_speedup") -> str:
    """The curve as a table, with a bar per row scaled between the lowest and highest ``metric``."""
    values = curve[metric].astype(float)
    lo, hi = values.min(), values.max()
    width = 24

    def bar(v: float) -> str:
        if pd.isna(v):
            return ""
        frac = 1.0 if hi == lo else (v - lo) / (hi - lo)
        return "#" * (1 + round(frac * (width - 1)))

    metrics = [m for m in CURVE_METRICS if m in curve.columns and curve[m].notna().any() and m != metric]
    shown = curve[[param, "config_name", metric]].rename(columns={param: PARAM_LABELS[param]})
    shown[f"{metric} ({lo:.3f} .. {hi:.3f})"] = [bar(v) for v in values]
    shown = pd.concat([shown, curve[metrics]], axis=1)
    return shown.to_markdown(index=False, floatfmt=".3f") + "\n"


def curves_frame(curves: list[tuple[str, str, pd.DataFrame]]) -> pd.DataFrame:
    """All curves in one long table (for curves.csv)."""
    frames = []
    for param, title, curve in curves:
        f = curve.rename(columns={param: "value"}).copy()
        f.insert(0, "parameter", param)
        f.insert(0, "curve", title)
        frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


SHOW = ["target", "dataset", "family", "config_name", "replay", "accounting", "acceptance_rate", "acceptance_rate_pooled",
        "tokens_per_round", "tokens_per_round_pooled", "drafter_passes_per_round", "modeled_speedup",
        "modeled_speedup_median", "modeled_speedup_pooled", "modeled_speedup_pooled_ci_low", "modeled_speedup_pooled_ci_high",
        "modeled_speedup_pooled_excluding_degenerate", "modeled_speedup_refined_pooled", "measured_speedup",
        "measured_speedup_pooled", "throughput_ratio_pooled", "n_degenerate", "load_guard", "lossless_mismatches", "accuracy"]


def to_markdown(frame: pd.DataFrame, columns: list[str] = SHOW) -> str:
    cols = [c for c in columns if c in frame.columns]
    if frame.empty:
        return "(no complete runs found)\n"
    return frame[cols].to_markdown(index=False, floatfmt=".3f") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m failfast_bench.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="*", default=["runs"], help="run directories or roots to search (default: runs)")
    parser.add_argument("--profile", action="append", help=f"hardware profile(s) to price under (default: all: {', '.join(available_profiles())})")
    parser.add_argument("--out", help="write runs.csv, runs.parquet, rounds.parquet, best.csv, curves.csv, report.md here")
    parser.add_argument("--sort", default="modeled_speedup", help="metric that ranks configs and draws curve bars")
    parser.add_argument("--rank-by", default=metrics.DEFAULT_RANK_STATISTIC, choices=metrics.STATISTICS,
                        help="statistic of --sort that picks the best config: pooled (default; Σ over questions), "
                             "mean (the paper's mean over questions) or median")
    parser.add_argument("--accounting", default="paper", choices=metrics.ACCOUNTING_MODES,
                        help="output accounting: paper (overshoot past max_new_tokens counts; nominal draft lengths) "
                             "or strict (cut at max_new_tokens; tokens actually drafted)")
    parser.add_argument("--no-curves", dest="curves", action="store_false", help="do not print one-hyperparameter sweep curves")
    parser.add_argument("--accuracy", action="store_true", help="add task accuracy (stored, else scored from the outputs; no model runs)")
    parser.add_argument("--execute-code", action="store_true", help="with --accuracy: allow HumanEval pass@1 (runs model-written programs, sandboxed)")
    args = parser.parse_args(argv)
    try:
        profiles = [load_profile(p) for p in (args.profile or available_profiles())]
    except FileNotFoundError as exc:
        parser.error(str(exc))
    missing = [d for d in args.dirs if not Path(d).exists()]
    if missing:
        parser.error(f"no such directory: {', '.join(missing)}")
    if args.sort not in RANKABLE_METRICS:
        parser.error(f"--sort {args.sort!r} is not a metric; try one of: {', '.join(RANKABLE_METRICS)}")
    runs, rounds = collect([Path(d) for d in args.dirs], profiles, args.accounting, accuracy=args.accuracy, execute_code=args.execute_code)
    rank_column = metrics.statistic_column(args.sort, args.rank_by)
    best = best_configs(runs, args.sort, args.rank_by)
    text = (f"Accounting: {args.accounting}. Every metric: mean over questions (paper; bare name), _median, _pooled "
            f"(Σ over questions), _pooled_ci_low/_high (95 % bootstrap CI of the pooled value).\n\n")
    text += "## All runs\n\n" + to_markdown(runs.sort_values(["profile", "target", "dataset", rank_column], ascending=[True, True, True, False]) if not runs.empty else runs)
    text += (f"\n## Best config per (target, dataset, drafter family), ranked by {args.rank_by} {args.sort} "
             f"(column {rank_column})\n\n" + to_markdown(best, ["profile", "ranked_by"] + SHOW))
    curves = sweep_curves(runs) if args.curves else []
    for param, title, curve in curves:
        text += f"\n## {title}\n\n" + curve_markdown(param, curve, rank_column if rank_column in curve.columns else "modeled_speedup_pooled")
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        trace._atomic(out / "runs.csv", lambda tmp: runs.to_csv(tmp, index=False))
        trace._atomic(out / "best.csv", lambda tmp: best.to_csv(tmp, index=False))
        trace.write_parquet(runs, out / "runs.parquet")
        if curves:
            table = curves_frame(curves)
            trace._atomic(out / "curves.csv", lambda tmp: table.to_csv(tmp, index=False))
        if not rounds.empty:
            trace.write_parquet(rounds, out / "rounds.parquet")
        trace.write_text(text, out / "report.md")
        print(f"[report] wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
