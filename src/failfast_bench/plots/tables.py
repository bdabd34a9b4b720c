"""The paper's tables T1 (end-to-end speedup per target × dataset) and T2 (FailFast vs EAGLE-3),
as DataFrames and as Markdown and LaTeX files (paper-reference.md §14).

Both tables pick the best config of each method per (target, dataset) by one named statistic of the
modeled speedup under one latency profile (default: pooled; ``statistic="mean"`` ranks like the paper) and
show every speedup as mean over questions (the paper's convention), median, and pooled with its 95 %
bootstrap CI, with and without degenerate (looping) questions. The output accounting of the runs frame
(``paper`` or ``strict``, see metrics.py) is stated in each caption.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from ..metrics import DEFAULT_RANK_STATISTIC
from . import paper_data
from .figures import (EAGLE3, FAILFAST, MAIN_METHODS, NoDataError, accounting_of, best_per_method, require_columns,
                      select_profile)

TABLE_COLUMNS = ("run_id", "target", "dataset", "drafter", "config_name", "profile", "modeled_speedup",
                 "modeled_speedup_median", "modeled_speedup_pooled", "modeled_speedup_pooled_ci_low",
                 "modeled_speedup_pooled_ci_high", "measured_speedup", "acceptance_rate", "tokens_per_round")
# Shown when the runs frame has them (report.collect writes them all).
OPTIONAL_COLUMNS = ("modeled_speedup_excluding_degenerate", "modeled_speedup_pooled_excluding_degenerate",
                    "measured_speedup_pooled", "measured_speedup_pooled_ci_low", "measured_speedup_pooled_ci_high",
                    "throughput_ratio_pooled", "acceptance_rate_pooled", "tokens_per_round_pooled", "n_questions",
                    "n_degenerate", "degenerate_questions", "load_guard", "draft_kind")


def _get(row: dict, column: str, default=math.nan):
    value = row.get(column, default)
    return default if value is None else value


def table_t1(runs: pd.DataFrame, profile: Optional[str] = None, methods: Sequence[str] = MAIN_METHODS,
             statistic: str = DEFAULT_RANK_STATISTIC) -> pd.DataFrame:
    """T1: one row per (target, dataset, method) with the best config (by ``statistic`` of the modeled
    speedup) and its speedups in their aggregate forms, acceptance, tokens per round, the degenerate
    questions and the load guard. An EAGLE-3 tree's acceptance (accepted / tree nodes) is in its own column
    ``acceptance_tree``, never beside chain acceptance. ``paper_failfast_speedup`` holds the paper's
    per-dataset best FailFast speedup (probably 32B) on FailFast rows of the datasets the paper reports."""
    func = "table_t1 (T1)"
    require_columns(runs, TABLE_COLUMNS, func, "runs")
    rows, profile = select_profile(runs, profile, func)
    best = best_per_method(rows, methods, statistic)
    if best.empty:
        raise NoDataError(f"{func}: no rows for methods {', '.join(methods)} under profile {profile!r}")
    out = []
    for r in best.to_dict("records"):
        tree = _get(r, "draft_kind", "chain") == "tree"
        acc_mean, acc_pooled = _get(r, "acceptance_rate"), _get(r, "acceptance_rate_pooled")
        out.append({
            "target": r["target"], "dataset": r["dataset"], "method": r["method"], "config_name": r["config_name"],
            "modeled_speedup": r["modeled_speedup"], "modeled_speedup_median": r["modeled_speedup_median"],
            "modeled_speedup_pooled": r["modeled_speedup_pooled"],
            "modeled_speedup_pooled_ci_low": r["modeled_speedup_pooled_ci_low"],
            "modeled_speedup_pooled_ci_high": r["modeled_speedup_pooled_ci_high"],
            "modeled_speedup_excluding_degenerate": _get(r, "modeled_speedup_excluding_degenerate"),
            "modeled_speedup_pooled_excluding_degenerate": _get(r, "modeled_speedup_pooled_excluding_degenerate"),
            "measured_speedup": r["measured_speedup"],
            "measured_speedup_pooled": _get(r, "measured_speedup_pooled"),
            "measured_speedup_pooled_ci_low": _get(r, "measured_speedup_pooled_ci_low"),
            "measured_speedup_pooled_ci_high": _get(r, "measured_speedup_pooled_ci_high"),
            "throughput_ratio_pooled": _get(r, "throughput_ratio_pooled"),
            "acceptance_rate": math.nan if tree else acc_mean,
            "acceptance_rate_pooled": math.nan if tree else acc_pooled,
            "acceptance_tree": acc_mean if tree else math.nan,
            "acceptance_tree_pooled": acc_pooled if tree else math.nan,
            "tokens_per_round": r["tokens_per_round"], "tokens_per_round_pooled": _get(r, "tokens_per_round_pooled"),
            "n_questions": _get(r, "n_questions"), "n_degenerate": _get(r, "n_degenerate"),
            "degenerate_questions": _get(r, "degenerate_questions", ""), "load_guard": _get(r, "load_guard", "n/a"),
            "paper_failfast_speedup": (paper_data.T1_FAILFAST_BEST.get(str(r["dataset"]).lower(), math.nan)
                                       if r["method"] == FAILFAST else math.nan),
        })
    table = pd.DataFrame(out)
    table.attrs.update(profile=profile, statistic=statistic, accounting=accounting_of(rows),
                       ranked_by=str(best["ranked_by"].iloc[0]))
    return table


def table_t2(runs: pd.DataFrame, profile: Optional[str] = None, statistic: str = DEFAULT_RANK_STATISTIC,
             machine_profile: Optional[str] = None) -> pd.DataFrame:
    """T2: per (target, dataset), best FailFast vs best EAGLE-3 and their speedup ratios, like for like.

    ``ratio_modeled*``: both modeled under ``profile``; ``ratio_measured*``: both measured on this machine
    (wall clock); each as mean over questions and pooled. ``ratio_paper_convention``: the paper divides
    FailFast's *modeled* speedup by EAGLE-3's *measured* one, which compares like with like only when the
    model prices the hardware EAGLE-3 ran on; so FailFast is priced under ``machine_profile`` (default: the
    EAGLE-3 run's ``machine_profile`` column, the profile measured on the machine and dtype it ran with)
    and the ratio is pooled over questions; without such a profile it is left empty (never a modeled
    A6000 number over a measured CPU one)."""
    func = "table_t2 (T2)"
    require_columns(runs, TABLE_COLUMNS, func, "runs")
    rows, profile = select_profile(runs, profile, func)
    best = best_per_method(rows, (FAILFAST, EAGLE3), statistic)
    out = []
    for (target, dataset), group in best.groupby(["target", "dataset"], sort=True):
        by_method = {r["method"]: r for r in group.to_dict("records")}
        if FAILFAST not in by_method or EAGLE3 not in by_method:
            continue
        ff, eg = by_method[FAILFAST], by_method[EAGLE3]
        machine = machine_profile or _get(eg, "machine_profile", None)
        ff_machine = runs[(runs["run_id"] == ff["run_id"]) & (runs["profile"] == machine)] if machine else runs.iloc[0:0]
        ff_on_machine = float(ff_machine["modeled_speedup_pooled"].iloc[0]) if len(ff_machine) else math.nan
        out.append({
            "target": target, "dataset": dataset,
            "failfast_config": ff["config_name"], "eagle3_config": eg["config_name"],
            "eagle3_draft_kind": _get(eg, "draft_kind", "chain"),
            "failfast_modeled": ff["modeled_speedup"], "failfast_modeled_pooled": ff["modeled_speedup_pooled"],
            "eagle3_modeled": eg["modeled_speedup"], "eagle3_modeled_pooled": eg["modeled_speedup_pooled"],
            "ratio_modeled": _ratio(ff["modeled_speedup"], eg["modeled_speedup"]),
            "ratio_modeled_pooled": _ratio(ff["modeled_speedup_pooled"], eg["modeled_speedup_pooled"]),
            "failfast_measured": ff["measured_speedup"], "failfast_measured_pooled": _get(ff, "measured_speedup_pooled"),
            "eagle3_measured": eg["measured_speedup"], "eagle3_measured_pooled": _get(eg, "measured_speedup_pooled"),
            "ratio_measured": _ratio(ff["measured_speedup"], eg["measured_speedup"]),
            "ratio_measured_pooled": _ratio(_get(ff, "measured_speedup_pooled"), _get(eg, "measured_speedup_pooled")),
            "machine_profile": machine or "",
            "failfast_modeled_on_machine_pooled": ff_on_machine,
            "ratio_paper_convention": _ratio(ff_on_machine, _get(eg, "measured_speedup_pooled")),
        })
    if not out:
        raise NoDataError(f"{func}: no (target, dataset) has both FailFast and EAGLE-3 rows under profile {profile!r}")
    table = pd.DataFrame(out)
    table.attrs.update(profile=profile, statistic=statistic, accounting=accounting_of(rows),
                       ranked_by=str(best["ranked_by"].iloc[0]))
    return table


def table_t1b(runs: pd.DataFrame, profile: Optional[str] = None, methods: Sequence[str] = MAIN_METHODS,
              statistic: str = DEFAULT_RANK_STATISTIC) -> pd.DataFrame:
    """T1b: speculative sampling (``run.temperature > 0``), one row per (target, dataset, method, T) with the
    best config at that temperature, beside the same config's greedy run: measured speedup (pooled, with
    its CI), throughput ratio, acceptance, tokens per round and task accuracy (with its Wilson 95 % CI) at
    T > 0 and at T = 0. Lossless at T > 0 means the output distribution is the target's, not its tokens."""
    func = "table_t1b (T1b)"
    if "temperature" not in runs.columns:
        raise NoDataError(f"{func}: runs have no temperature column (greedy runs only)")
    require_columns(runs, TABLE_COLUMNS, func, "runs")
    rows, profile = select_profile(runs, profile, func)
    sampled = rows[rows["temperature"].fillna(0.0) > 0]
    if sampled.empty:
        raise NoDataError(f"{func}: no run with run.temperature > 0 under profile {profile!r}")
    greedy_rows = rows[rows["temperature"].fillna(0.0) == 0.0]
    out = []
    for temperature, group in sampled.groupby("temperature", sort=True):
        best = best_per_method(group.assign(temperature=0.0), methods, statistic)  # ranked within this T
        for r in best.to_dict("records"):
            g = _greedy_counterpart(greedy_rows, r)
            out.append({
                "target": r["target"], "dataset": r["dataset"], "method": r["method"], "temperature": float(temperature),
                "config_name": r["config_name"],
                "measured_speedup_pooled": _get(r, "measured_speedup_pooled"),
                "measured_speedup_pooled_ci_low": _get(r, "measured_speedup_pooled_ci_low"),
                "measured_speedup_pooled_ci_high": _get(r, "measured_speedup_pooled_ci_high"),
                "throughput_ratio_pooled": _get(r, "throughput_ratio_pooled"),
                "acceptance_rate_pooled": _get(r, "acceptance_rate_pooled"),
                "tokens_per_round_pooled": _get(r, "tokens_per_round_pooled"),
                "modeled_speedup_pooled": r["modeled_speedup_pooled"],
                "accuracy": _get(r, "accuracy"), "accuracy_ci_low": _get(r, "accuracy_ci_low"),
                "accuracy_ci_high": _get(r, "accuracy_ci_high"),
                "greedy_config_name": g.get("config_name", ""),
                "greedy_measured_speedup_pooled": _get(g, "measured_speedup_pooled"),
                "greedy_tokens_per_round_pooled": _get(g, "tokens_per_round_pooled"),
                "greedy_accuracy": _get(g, "accuracy"),
                "n_questions": _get(r, "n_questions"), "load_guard": _get(r, "load_guard", "n/a"),
            })
    table = pd.DataFrame(out)
    table.attrs.update(profile=profile, statistic=statistic, accounting=accounting_of(rows),
                       ranked_by=str(best["ranked_by"].iloc[0]) if len(best) else statistic)
    return table


def _greedy_counterpart(greedy_rows: pd.DataFrame, r: dict) -> dict:
    """The greedy (T = 0) run of the same config on the same target and dataset, preferring one measured live
    with its accuracy scored (the sampled run's own companion), else any; {} when there is none."""
    same = greedy_rows[(greedy_rows["target"] == r["target"]) & (greedy_rows["dataset"] == r["dataset"])
                       & (greedy_rows["config_name"] == r["config_name"])]
    if same.empty:
        return {}
    measured = same["measured_speedup"].notna() if "measured_speedup" in same.columns else False
    scored = same["accuracy"].notna() if "accuracy" in same.columns else False
    return same.assign(_order=(measured * 1 + scored * 2)).sort_values("_order", ascending=False, kind="stable").iloc[0].to_dict()


def display_t1b(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{
        "Target": str(r["target"]), "Dataset": str(r["dataset"]), "Method": str(r["method"]), "T": _fmt(r["temperature"], "g"),
        "Config": str(r["config_name"]),
        "Measured pooled [95% CI] (×)": _with_ci(r["measured_speedup_pooled"], r["measured_speedup_pooled_ci_low"],
                                                  r["measured_speedup_pooled_ci_high"]),
        "Throughput ratio (×)": _fmt(r["throughput_ratio_pooled"]),
        "Acceptance pooled (%)": _fmt(r["acceptance_rate_pooled"], ".1f", 100),
        "Tokens per round, pooled": _fmt(r["tokens_per_round_pooled"]),
        "Accuracy [95% CI]": _with_ci(r["accuracy"], r["accuracy_ci_low"], r["accuracy_ci_high"], ".2f"),
        "Same config at T = 0: measured pooled (×) / tokens per round / accuracy": " / ".join(
            (_fmt(r["greedy_measured_speedup_pooled"]), _fmt(r["greedy_tokens_per_round_pooled"]), _fmt(r["greedy_accuracy"]))),
        "Load guard": str(r.get("load_guard") or "n/a"),
    } for r in table.to_dict("records")])


def _ratio(a, b) -> float:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return math.nan
    return a / b if math.isfinite(a) and math.isfinite(b) and b != 0 else math.nan


# ---------------------------------------------------------------------------------------------
# Display and writing
# ---------------------------------------------------------------------------------------------

MISSING = "–"


def _fmt(value, fmt: str = ".2f", scale: float = 1.0) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return MISSING
    return MISSING if not math.isfinite(value) else format(scale * value, fmt)


def _with_ci(value, low, high, fmt: str = ".2f") -> str:
    """``1.60 [1.33, 2.28]``: a pooled value and its 95 % bootstrap CI."""
    shown = _fmt(value, fmt)
    if shown == MISSING:
        return MISSING
    lo, hi = _fmt(low, fmt), _fmt(high, fmt)
    return shown if MISSING in (lo, hi) else f"{shown} [{lo}, {hi}]"


def _pair(a, b, fmt: str = ".2f", scale: float = 1.0) -> str:
    """``mean / pooled`` in one cell (a dash when both are missing)."""
    left, right = _fmt(a, fmt, scale), _fmt(b, fmt, scale)
    return MISSING if left == right == MISSING else f"{left} / {right}"


def _degenerate_cell(row: dict) -> str:
    n, total = _fmt(row.get("n_degenerate"), ".0f"), _fmt(row.get("n_questions"), ".0f")
    if n == MISSING:
        return MISSING
    which = str(row.get("degenerate_questions") or "")
    return f"{n}/{total}" + (f": {which}" if which and n != "0" else "")


def display_t1(table: pd.DataFrame) -> pd.DataFrame:
    """T1 as strings: pooled values with their CI, mean / pooled pairs, acceptance in percent, chain and
    tree acceptance in separate columns, a dash for missing values."""
    rows = []
    for r in table.to_dict("records"):
        rows.append({
            "Target": str(r["target"]), "Dataset": str(r["dataset"]), "Method": str(r["method"]),
            "Best config": str(r["config_name"]),
            "Modeled mean (×)": _fmt(r["modeled_speedup"]),
            "Modeled median (×)": _fmt(r["modeled_speedup_median"]),
            "Modeled pooled [95% CI] (×)": _with_ci(r["modeled_speedup_pooled"], r["modeled_speedup_pooled_ci_low"],
                                                     r["modeled_speedup_pooled_ci_high"]),
            "Modeled w/o degenerate, mean / pooled (×)": _pair(r["modeled_speedup_excluding_degenerate"],
                                                                r["modeled_speedup_pooled_excluding_degenerate"]),
            "Measured mean (×)": _fmt(r["measured_speedup"]),
            "Measured pooled [95% CI] (×)": _with_ci(r["measured_speedup_pooled"], r["measured_speedup_pooled_ci_low"],
                                                      r["measured_speedup_pooled_ci_high"]),
            "Throughput ratio (×)": _fmt(r["throughput_ratio_pooled"]),
            "Acceptance, chain (%), mean / pooled": _pair(r["acceptance_rate"], r["acceptance_rate_pooled"], ".1f", 100),
            "Acceptance, tree: accepted / nodes (%), mean / pooled": _pair(r["acceptance_tree"], r["acceptance_tree_pooled"], ".1f", 100),
            "Tokens per round, mean / pooled": _pair(r["tokens_per_round"], r["tokens_per_round_pooled"]),
            "Degenerate questions": _degenerate_cell(r),
            "Load guard": str(r.get("load_guard") or "n/a"),
            "Paper FailFast (×)": _fmt(r["paper_failfast_speedup"]),
        })
    return pd.DataFrame(rows)


def display_t2(table: pd.DataFrame) -> pd.DataFrame:
    """T2 as strings: mean / pooled pairs and like-for-like ratios."""
    profile = table.attrs.get("profile", "")
    rows = []
    for r in table.to_dict("records"):
        machine = r.get("machine_profile") or "none"
        rows.append({
            "Target": str(r["target"]), "Dataset": str(r["dataset"]),
            "FailFast config": str(r["failfast_config"]), "EAGLE-3 config": f"{r['eagle3_config']} ({r['eagle3_draft_kind']})",
            f"FailFast modeled, {profile}, mean / pooled (×)": _pair(r["failfast_modeled"], r["failfast_modeled_pooled"]),
            f"EAGLE-3 modeled, {profile}, mean / pooled (×)": _pair(r["eagle3_modeled"], r["eagle3_modeled_pooled"]),
            "Ratio modeled, mean / pooled": _pair(r["ratio_modeled"], r["ratio_modeled_pooled"]),
            "FailFast measured, mean / pooled (×)": _pair(r["failfast_measured"], r["failfast_measured_pooled"]),
            "EAGLE-3 measured, mean / pooled (×)": _pair(r["eagle3_measured"], r["eagle3_measured_pooled"]),
            "Ratio measured, mean / pooled": _pair(r["ratio_measured"], r["ratio_measured_pooled"]),
            "Paper convention, same machine: FailFast modeled / EAGLE-3 measured, pooled":
                (f"{_fmt(r['ratio_paper_convention'])} ({machine})" if _fmt(r["ratio_paper_convention"]) != MISSING else MISSING),
        })
    return pd.DataFrame(rows)


def to_markdown(shown: pd.DataFrame) -> str:
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    body = ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "×": r"$\times$", "–": "--"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def to_latex(shown: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table; text columns left-aligned, numeric ones right-aligned."""
    align = "".join("r" if _looks_numeric(shown[c]) else "l" for c in shown.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", f"\\caption{{{latex_escape(caption)}}}",
             f"\\label{{{label}}}", f"\\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in shown.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in shown.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _looks_numeric(values: pd.Series) -> bool:
    def numeric(v: str) -> bool:
        try:
            float(v)
            return True
        except ValueError:
            return v == MISSING

    return all(numeric(v) for v in values)


def write_table(shown: pd.DataFrame, out_dir: Path | str, stem: str, caption: str, label: str) -> list[Path]:
    """Write ``stem.md`` (caption as a paragraph above the table) and ``stem.tex``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, tex = out_dir / f"{stem}.md", out_dir / f"{stem}.tex"
    md.write_text(f"{caption}\n\n{to_markdown(shown)}", encoding="utf-8")
    tex.write_text(to_latex(shown, caption, label), encoding="utf-8")
    return [md, tex]


def _convention_text(attrs: dict) -> str:
    return (f"profile {attrs['profile']}, {attrs.get('accounting', 'paper')} accounting; best config ranked by "
            f"{attrs.get('statistic', DEFAULT_RANK_STATISTIC)} modeled speedup ({attrs.get('ranked_by', '')})")


def write_t1(runs: pd.DataFrame, out_dir: Path | str, profile: Optional[str] = None, stem: str = "t1_speedup",
             statistic: str = DEFAULT_RANK_STATISTIC) -> list[Path]:
    table = table_t1(runs, profile, statistic=statistic)
    caption = (f"T1: best config per method, target and dataset ({_convention_text(table.attrs)}). Speedups: mean "
               f"over questions (the paper's convention), median, and pooled (total modeled vanilla time / total "
               f"time; measured: total vanilla wall / total wall) with its 95% bootstrap CI over questions. "
               f"Degenerate questions (the target's output loops, metrics.loop_period) are kept in every column "
               f"except 'w/o degenerate'. Throughput ratio: tokens/s over vanilla tokens/s. Acceptance: accepted / "
               f"drafted; for an EAGLE-3 tree, accepted / tree nodes (not comparable with chains). Load guard: "
               f"flagged when vanilla tokens/s varies by more than the tolerance within the run or from the "
               f"hardware profile. Paper FailFast: the paper's per-dataset best (probably Qwen2.5-32B, A6000).")
    return write_table(display_t1(table), out_dir, stem, caption, "tab:t1-speedup")


def write_t2(runs: pd.DataFrame, out_dir: Path | str, profile: Optional[str] = None, stem: str = "t2_eagle3",
             statistic: str = DEFAULT_RANK_STATISTIC) -> list[Path]:
    table = table_t2(runs, profile, statistic=statistic)
    caption = (f"T2: FailFast vs EAGLE-3, best config of each ({_convention_text(table.attrs)}). Ratios are FailFast "
               f"speedup over EAGLE-3 speedup, like for like: both modeled under {table.attrs['profile']}, or both "
               f"measured on this machine. The paper divides FailFast's modeled speedup by EAGLE-3's measured one; "
               f"here that ratio prices FailFast under the profile measured on the machine EAGLE-3 ran on (named in "
               f"the cell), pooled over questions. Paper: up to {paper_data.HEADLINE_VS_EAGLE3}× (v3).")
    return write_table(display_t2(table), out_dir, stem, caption, "tab:t2-eagle3")


def write_t1b(runs: pd.DataFrame, out_dir: Path | str, profile: Optional[str] = None, stem: str = "t1b_sampling",
              statistic: str = DEFAULT_RANK_STATISTIC) -> list[Path]:
    table = table_t1b(runs, profile, statistic=statistic)
    caption = (f"T1b: speculative sampling (run.temperature > 0), best config per method at each temperature "
               f"({_convention_text(table.attrs)}), beside the same config's greedy run (T = 0). Measured: total vanilla wall "
               f"/ total wall over the same questions, vanilla sampled at the same temperature, with its 95% bootstrap "
               f"CI. Accuracy: share of questions answered correctly within max_new_tokens, Wilson 95% CI (as a "
               f"fraction). Lossless at T > 0 means the output distribution is the target's: tokens differ from "
               f"vanilla's sample and mismatches are not counted.")
    return write_table(display_t1b(table), out_dir, stem, caption, "tab:t1b-sampling")


def write_tables(runs: pd.DataFrame, out_dir: Path | str, profile: Optional[str] = None) -> list[Path]:
    """T1 and T2 (T2 only when some target × dataset has both FailFast and EAGLE-3 rows)."""
    paths = write_t1(runs, out_dir, profile)
    try:
        paths += write_t2(runs, out_dir, profile)
    except NoDataError:
        pass
    return paths


def display_t3(table: pd.DataFrame) -> pd.DataFrame:
    """T3 as strings: τ and passes as mean / pooled, each profile's pooled speedup with its CI, and on the
    FailFast and Fast-dLLM rows their share of the oracle bound beside them."""
    profiles = table.attrs.get("profiles", ())
    rows = []
    for r in table.to_dict("records"):
        shown = {"Dataset": str(r["dataset"]), "Strategy": str(r["strategy"]), "Config": str(r["config_name"]),
                 "τ (tokens per round), mean / pooled": _pair(r.get("tokens_per_round"), r.get("tokens_per_round_pooled")),
                 "Drafter passes per round, mean / pooled": _pair(r.get("drafter_passes_per_round"),
                                                                  r.get("drafter_passes_per_round_pooled"))}
        for p in profiles:
            shown[f"Modeled {p}, pooled [95% CI] (×)"] = _with_ci(r.get(f"speedup_{p}_pooled"), r.get(f"speedup_{p}_pooled_ci_low"),
                                                                r.get(f"speedup_{p}_pooled_ci_high"))
            shown[f"Modeled {p}, mean (×)"] = _fmt(r.get(f"speedup_{p}"))
        shares = [_fmt(r.get(f"of_oracle_{p}"), ".0%") for p in profiles]
        shown["Run / oracle, " + " / ".join(profiles)] = MISSING if set(shares) == {MISSING} else " / ".join(shares)
        rows.append(shown)
    return pd.DataFrame(rows)


def write_t3(table: pd.DataFrame, out_dir: Path | str, stem: str = "t3_strategies") -> list[Path]:
    """T3 ("dLLM drafting strategies") from plots.strategies.strategies_frame."""
    if table.empty:
        raise NoDataError("write_t3 (T3): no strategy rows")
    profiles = ", ".join(table.attrs.get("profiles", ()))
    caption = (f"T3: dLLM drafting strategies on one engine and one drafter, replayed on identical target "
               f"continuations ({table.attrs.get('accounting', 'paper')} accounting: N_out counts the last round's "
               f"overshoot, a dLLM draft cut at a stop token counts its whole window). τ: output tokens per "
               f"verification round, bonus included; passes: drafter forward passes of every kind per round. Modeled "
               f"speedup under each profile ({profiles}): total modeled vanilla time / total time (pooled) with its 95% "
               f"bootstrap CI over questions, every verification charged one target decode step, and the mean over "
               f"questions. Oracle rows: the per-round hindsight-best cut of the run above (failfast_bench.oracle; "
               f"rounds scored independently, passes of a cut draft scale with its length, committed = accepted + 1), "
               f"priced the same way; no CI (a hindsight optimum); τ and passes are those of its cut under "
               f"{table.attrs.get('rank_profile', '')}. Run / oracle: the run's pooled speedup over the bound on the "
               f"oracle's own footing. Cost-aware rows: the profile named is the one the run's stop rule priced its "
               f"extensions with; its speedup is shown under every profile. Replay: no measured speedup.")
    return write_table(display_t3(table), out_dir, stem, caption, "tab:t3-strategies")
