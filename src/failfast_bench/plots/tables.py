"""The paper's tables T1 (end-to-end speedup per target × dataset) and T2 (FailFast vs EAGLE-3),
as DataFrames and as Markdown and LaTeX files (paper-reference.md §14).

Both tables pick the best config of each method per (target, dataset) by modeled speedup under one
latency profile (EAGLE-3, which is measured rather than modeled, falls back to measured speedup).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from . import paper_data
from .figures import (EAGLE3, FAILFAST, MAIN_METHODS, NoDataError, best_per_method, require_columns,
                      select_profile)

TABLE_COLUMNS = ("run_id", "target", "dataset", "drafter", "config_name", "profile", "modeled_speedup",
                 "measured_speedup", "acceptance_rate", "tokens_per_round")


def table_t1(runs: pd.DataFrame, profile: Optional[str] = None, methods: Sequence[str] = MAIN_METHODS) -> pd.DataFrame:
    """T1: one row per (target, dataset, method) with the best config and its speedups, acceptance
    rate and tokens per round; ``paper_failfast_speedup`` holds the paper's per-dataset best FailFast
    speedup (probably 32B) on FailFast rows of the datasets the paper reports."""
    func = "table_t1 (T1)"
    require_columns(runs, TABLE_COLUMNS, func, "runs")
    rows, profile = select_profile(runs, profile, func)
    best = best_per_method(rows, methods)
    if best.empty:
        raise NoDataError(f"{func}: no rows for methods {', '.join(methods)} under profile {profile!r}")
    table = best[["target", "dataset", "method", "config_name", "modeled_speedup", "measured_speedup",
                  "acceptance_rate", "tokens_per_round"]].copy()
    table["paper_failfast_speedup"] = [
        paper_data.T1_FAILFAST_BEST.get(str(ds).lower(), math.nan) if m == FAILFAST else math.nan
        for ds, m in zip(table["dataset"], table["method"])]
    table.attrs["profile"] = profile
    return table.reset_index(drop=True)


def table_t2(runs: pd.DataFrame, profile: Optional[str] = None) -> pd.DataFrame:
    """T2: per (target, dataset), best FailFast vs best EAGLE-3 and their speedup ratios.

    ``ratio_measured`` compares wall-clock speedups; ``ratio_modeled`` modeled ones (when EAGLE-3 has
    one); ``ratio_paper_convention`` is FailFast modeled over EAGLE-3 measured, as the paper did.
    """
    func = "table_t2 (T2)"
    require_columns(runs, TABLE_COLUMNS, func, "runs")
    rows, profile = select_profile(runs, profile, func)
    best = best_per_method(rows, (FAILFAST, EAGLE3))
    out = []
    for (target, dataset), group in best.groupby(["target", "dataset"], sort=True):
        by_method = {r["method"]: r for r in group.to_dict("records")}
        if FAILFAST not in by_method or EAGLE3 not in by_method:
            continue
        ff, eg = by_method[FAILFAST], by_method[EAGLE3]
        out.append({
            "target": target, "dataset": dataset,
            "failfast_config": ff["config_name"], "failfast_modeled": ff["modeled_speedup"],
            "failfast_measured": ff["measured_speedup"],
            "eagle3_config": eg["config_name"], "eagle3_modeled": eg["modeled_speedup"],
            "eagle3_measured": eg["measured_speedup"],
            "ratio_modeled": _ratio(ff["modeled_speedup"], eg["modeled_speedup"]),
            "ratio_measured": _ratio(ff["measured_speedup"], eg["measured_speedup"]),
            "ratio_paper_convention": _ratio(ff["modeled_speedup"], eg["measured_speedup"]),
        })
    if not out:
        raise NoDataError(f"{func}: no (target, dataset) has both FailFast and EAGLE-3 rows under profile {profile!r}")
    table = pd.DataFrame(out)
    table.attrs["profile"] = profile
    return table


def _ratio(a, b) -> float:
    a, b = float(a), float(b)
    return a / b if math.isfinite(a) and math.isfinite(b) and b != 0 else math.nan


# ---------------------------------------------------------------------------------------------
# Display and writing
# ---------------------------------------------------------------------------------------------

T1_HEADERS = {
    "target": "Target", "dataset": "Dataset", "method": "Method", "config_name": "Best config",
    "modeled_speedup": "Modeled speedup (×)", "measured_speedup": "Measured speedup (×)",
    "acceptance_rate": "Acceptance rate (%)", "tokens_per_round": "Tokens per round",
    "paper_failfast_speedup": "Paper FailFast (×)",
}
T2_HEADERS = {
    "target": "Target", "dataset": "Dataset", "failfast_config": "FailFast config",
    "failfast_modeled": "FailFast modeled (×)", "failfast_measured": "FailFast measured (×)",
    "eagle3_config": "EAGLE-3 config", "eagle3_modeled": "EAGLE-3 modeled (×)",
    "eagle3_measured": "EAGLE-3 measured (×)", "ratio_modeled": "Ratio, modeled",
    "ratio_measured": "Ratio, measured", "ratio_paper_convention": "Ratio, paper convention",
}
MISSING = "–"


def _display(table: pd.DataFrame, headers: dict) -> pd.DataFrame:
    """Strings for printing: 2 decimals, acceptance in percent, a dash for missing values."""
    shown = pd.DataFrame(index=table.index)
    for column, header in headers.items():
        if column not in table.columns:
            continue
        values = table[column]
        if column == "acceptance_rate":
            shown[header] = [MISSING if pd.isna(v) else f"{100 * float(v):.1f}" for v in values]
        elif pd.api.types.is_numeric_dtype(values):
            shown[header] = [MISSING if pd.isna(v) else f"{float(v):.2f}" for v in values]
        else:
            shown[header] = [MISSING if pd.isna(v) else str(v) for v in values]
    return shown


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


def write_t1(runs: pd.DataFrame, out_dir: Path | str, profile: Optional[str] = None, stem: str = "t1_speedup") -> list[Path]:
    table = table_t1(runs, profile)
    caption = (f"T1: best config per method, target and dataset (ranked by modeled speedup, profile "
               f"{table.attrs['profile']}). Acceptance rate is the mean of per-question accepted/drafted. "
               f"Paper FailFast: the paper's per-dataset best (probably Qwen2.5-32B, A6000).")
    return write_table(_display(table, T1_HEADERS), out_dir, stem, caption, "tab:t1-speedup")


def write_t2(runs: pd.DataFrame, out_dir: Path | str, profile: Optional[str] = None, stem: str = "t2_eagle3") -> list[Path]:
    table = table_t2(runs, profile)
    caption = (f"T2: FailFast vs EAGLE-3, best config of each (profile {table.attrs['profile']}). Ratios are "
               f"FailFast speedup over EAGLE-3 speedup; the paper convention divides FailFast's modeled "
               f"speedup by EAGLE-3's measured one. Paper: up to {paper_data.HEADLINE_VS_EAGLE3}× (v3).")
    return write_table(_display(table, T2_HEADERS), out_dir, stem, caption, "tab:t2-eagle3")


def write_tables(runs: pd.DataFrame, out_dir: Path | str, profile: Optional[str] = None) -> list[Path]:
    """T1 and T2 (T2 only when some target × dataset has both FailFast and EAGLE-3 rows)."""
    paths = write_t1(runs, out_dir, profile)
    try:
        paths += write_t2(runs, out_dir, profile)
    except NoDataError:
        pass
    return paths
