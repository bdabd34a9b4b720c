"""The paper's figures F1–F11 (paper-reference.md §13), one function per figure.

Every function takes DataFrames in the report module's layout (``runs``: one row per run and latency
profile; ``rounds``: one row per verification round), writes ``<stem>.png`` and ``<stem>.pdf`` into
``out_dir`` and returns their paths. A frame missing a required column is refused with a
``ValueError`` naming the function and the columns; a frame with nothing to plot after selection
raises :class:`NoDataError` (also a ``ValueError``) so callers can skip that figure.

Figures are drawn on bare ``matplotlib.figure.Figure`` objects with the Agg canvas, never through
pyplot, so plotting leaves no global state behind and needs no display.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..metrics import (DEFAULT_RANK_STATISTIC, alpha_from_acceptance, dllm_passes_per_draft, statistic_column,
                       theorem_3_8_speedup)
from ..report import SWEEP_CONTEXT
from . import paper_data

# ---------------------------------------------------------------------------------------------
# Shared vocabulary: methods, colours, validation, selection
# ---------------------------------------------------------------------------------------------

AR = "AR drafter"
AR_DYNAMIC = "AR drafter (dynamic)"
FAST_DLLM = "Fast-dLLM"
FAILFAST = "FailFast"
EAGLE3 = "EAGLE-3"
VANILLA = "vanilla"
# Order of methods in figures and tables.
METHODS = (AR, AR_DYNAMIC, FAST_DLLM, FAILFAST, EAGLE3)
MAIN_METHODS = (AR, FAST_DLLM, FAILFAST, EAGLE3)

METHOD_COLORS = {
    AR: "#74c476",
    AR_DYNAMIC: "#31a354",
    FAST_DLLM: "#3182bd",
    FAILFAST: "#00441b",
    EAGLE3: "#8856a7",
    VANILLA: "#636363",
}
PAPER_COLOR = "#525252"
DEFAULT_PROFILE = "a6000_paper"
PAPER_TARGET_14B = "Qwen2.5-14B"


class NoDataError(ValueError):
    """The input frames hold nothing this figure or table can be drawn from."""


def require_columns(frame: pd.DataFrame, columns: Iterable[str], func: str, what: str = "frame") -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{func}: {what} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{func}: {what} is missing required column(s) {', '.join(missing)}")


def method_of(drafter: str, config_name: str) -> str:
    """Map a run's drafter family and config name to the method names used in figures and tables."""
    if drafter == "ar":
        return AR_DYNAMIC if "_df_" in str(config_name) else AR
    return {"dllm": FAST_DLLM, "failfast": FAILFAST, "eagle3": EAGLE3, "vanilla": VANILLA}.get(drafter, str(drafter))


def with_methods(runs: pd.DataFrame) -> pd.DataFrame:
    out = runs.copy()
    out["method"] = [method_of(d, c) for d, c in zip(out["drafter"], out["config_name"])]
    return out


def select_profile(runs: pd.DataFrame, profile: Optional[str], func: str) -> tuple[pd.DataFrame, str]:
    """Rows of one latency profile: the one asked for, else the paper's, else the first by name."""
    available = sorted(str(p) for p in runs["profile"].dropna().unique())
    if not available:
        raise NoDataError(f"{func}: no rows with a latency profile")
    if profile is None:
        profile = DEFAULT_PROFILE if DEFAULT_PROFILE in available else available[0]
    elif profile not in available:
        raise NoDataError(f"{func}: profile {profile!r} not in runs (available: {', '.join(available)})")
    return runs[runs["profile"] == profile], profile


def one_row_per_run(runs: pd.DataFrame) -> pd.DataFrame:
    """Profile-independent metrics: keep one row per run (runs repeat once per latency profile)."""
    return runs.drop_duplicates("run_id") if "run_id" in runs.columns else runs


def _rank_key(rows: pd.DataFrame, statistic: str = DEFAULT_RANK_STATISTIC) -> pd.Series:
    # A run without a modeled speedup (a measured-only EAGLE-3 row) is ranked by its measured one.
    column = statistic_column("modeled_speedup", statistic)
    if column not in rows.columns:
        raise ValueError(f"best_per_method: runs is missing required column(s) {column} (ranking by {statistic})")
    modeled = rows[column].astype(float)
    measured = statistic_column("measured_speedup", statistic)
    if measured in rows.columns:
        return modeled.where(modeled.notna(), rows[measured].astype(float))
    return modeled


def best_per_method(runs: pd.DataFrame, methods: Sequence[str] = MAIN_METHODS,
                    statistic: str = DEFAULT_RANK_STATISTIC) -> pd.DataFrame:
    """The best config of each method per (target, dataset), ranked by ``statistic`` (pooled by default;
    ``mean`` = the paper's mean over questions) of the modeled speedup.

    ``runs`` must already be restricted to one latency profile. Returns one row per
    (target, dataset, method) with every column of ``runs`` plus ``method`` and ``ranked_by``.
    """
    rows = with_methods(runs)
    rows = rows[rows["method"].isin(methods)]
    if "temperature" in rows.columns:
        # Greedy tables: a T > 0 run is another experiment under the same config name (see tables.table_t1b).
        rows = rows[rows["temperature"].fillna(0.0) == 0.0]
    if "measured_speedup" in rows.columns:
        # Ties (a replayed sweep point and its live rerun price alike) go to the run with a measured speedup.
        rows = rows.assign(_live=rows["measured_speedup"].notna()).sort_values("_live", ascending=False, kind="stable")
        rows = rows.drop(columns="_live")
    rows = rows.reset_index(drop=True)
    rows["_rank"] = _rank_key(rows, statistic)
    rows = rows[rows["_rank"].notna()]
    if rows.empty:
        return rows.drop(columns="_rank")
    best = rows.loc[rows.groupby(["target", "dataset", "method"], sort=False)["_rank"].idxmax()]
    order = {m: i for i, m in enumerate(methods)}
    best = best.assign(_order=best["method"].map(order)).sort_values(["target", "dataset", "_order"])
    best = best.assign(ranked_by=statistic_column("modeled_speedup", statistic))
    return best.drop(columns=["_rank", "_order"]).reset_index(drop=True)


def accounting_of(rows: pd.DataFrame) -> str:
    """The output accounting the rows were computed under (``paper`` when the frame does not say)."""
    if "accounting" not in rows.columns or rows["accounting"].dropna().empty:
        return "paper"
    return ", ".join(sorted(map(str, rows["accounting"].dropna().unique())))


def _sorted_ids(ids: Iterable) -> list:
    """Question ids in natural order (ids are strings, often numeric)."""
    ids = list(dict.fromkeys(ids))
    return sorted(ids, key=lambda q: (0, int(q), "") if str(q).isdigit() else (1, 0, str(q)))


def _pair_label(target, dataset) -> str:
    return f"{target} · {dataset}"


def _new_figure(width: float = 6.4, height: float = 4.2, layout: Optional[str] = None) -> Figure:
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_dir: Path | str, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf``; PDF without a creation date so reruns are byte-stable."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"
    fig.savefig(png, dpi=150, bbox_inches="tight")
    fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None})
    return [png, pdf]


def _filter(frame: pd.DataFrame, **equals) -> pd.DataFrame:
    for column, value in equals.items():
        if value is not None:
            frame = frame[frame[column] == value]
    return frame


# ---------------------------------------------------------------------------------------------
# Per-round decisions (F2, F3) and per-token calibration pairs (F11)
# ---------------------------------------------------------------------------------------------


def round_decisions(accepted_len: int, bonus: bool) -> list[bool]:
    """One round's token decisions: each accepted draft token is True; then the bonus token (whole
    draft accepted) is True, or the first rejected position is False."""
    return [True] * int(accepted_len) + [bool(bonus)]


def question_decisions(rounds: pd.DataFrame) -> dict:
    """question_id (or (run_id, question_id) when several runs are present) -> the concatenated
    decisions of its rounds, in round order."""
    several_runs = "run_id" in rounds.columns and rounds["run_id"].nunique() > 1
    keys = ["run_id", "question_id"] if several_runs else "question_id"
    out = {}
    for key, group in rounds.sort_values("round").groupby(keys, sort=False):
        out[key] = [d for a, b in zip(group["accepted_len"], group["bonus"]) for d in round_decisions(a, b)]
    return out


def one_run(rows: pd.DataFrame, run_id: Optional[str] = None) -> tuple[pd.DataFrame, Optional[str]]:
    """Rounds of a single run: the one asked for, else the first by id when a config × dataset
    selection still spans several runs (e.g. several targets), so question sequences never mix."""
    if "run_id" not in rows.columns:
        return rows, None
    if run_id is None:
        ids = sorted(map(str, rows["run_id"].dropna().unique()))
        if len(ids) <= 1:
            return rows, None
        run_id = ids[0]
    return rows[rows["run_id"].astype(str) == str(run_id)], run_id


def with_str_question_ids(rounds: pd.DataFrame) -> pd.DataFrame:
    """Question ids as strings (the trace schema's type), so ``question_id=2`` and ``"2"`` both match."""
    return rounds.assign(question_id=rounds["question_id"].astype(str))


def easy_run_lengths(decisions: Sequence[bool]) -> list[int]:
    """Lengths of the maximal runs of True ("easy regions")."""
    runs, current = [], 0
    for decision in decisions:
        if decision:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    if current:
        runs.append(current)
    return runs


def easy_region_ratio(run_lengths: Sequence[int], total_decisions: int, thresholds: Sequence[int]) -> np.ndarray:
    """y(c) = (Σ lengths of runs longer than c) / total decisions, for each c in ``thresholds``."""
    lengths = np.asarray(sorted(run_lengths), dtype=float)
    if total_decisions <= 0:
        return np.zeros(len(thresholds))
    # Suffix sums over sorted lengths give Σ{L : L > c} with one searchsorted per threshold.
    suffix = np.concatenate([np.cumsum(lengths[::-1])[::-1], [0.0]])
    idx = np.searchsorted(lengths, np.asarray(thresholds, dtype=float), side="right")
    return suffix[idx] / total_decisions


def confidence_acceptance_pairs(rounds: pd.DataFrame) -> pd.DataFrame:
    """Per draft token: its drafter confidence and whether it was accepted (index < accepted_len)."""
    conf, accepted = [], []
    for confidences, accepted_len, draft_len in zip(rounds["confidences"], rounds["accepted_len"], rounds["draft_len"]):
        if confidences is None:
            continue
        values = list(confidences)[: int(draft_len)]
        conf.extend(float(c) for c in values)
        accepted.extend(i < int(accepted_len) for i in range(len(values)))
    return pd.DataFrame({"confidence": conf, "accepted": accepted})


def _pick_config(available: Sequence[str], preferred: Sequence[str], pattern: Optional[str]) -> Optional[str]:
    available = sorted(set(available))
    for name in preferred:
        if name in available:
            return name
    if pattern is not None:
        for name in available:
            if re.match(pattern, name):
                return name
    return None


AR_CONFIG_PATTERN = r"^ar_None_sf_\d+$"
FAILFAST_CONFIG_PATTERN = r"^dllm_[^_]+_df_"
PAPER_AR_CONFIG = "ar_None_sf_8"
PAPER_FAILFAST_CONFIGS = ("dllm_0.05_df_0.4_60_10", "dllm_0.05_df_0.45_60_10")

# ---------------------------------------------------------------------------------------------
# Leviathan et al. (2023) Theorem 3.8 (F10): the formulas live in failfast_bench.metrics.
# ---------------------------------------------------------------------------------------------


def _dllm_passes(gamma: int, sub_block: int) -> int:
    """Passes for a γ-token dLLM draft: one per started sub-block plus one housekeeping pass,
    ⌈γ/b⌉ + 1 (:func:`failfast_bench.metrics.dllm_passes_per_draft`)."""
    return dllm_passes_per_draft(gamma, sub_block)


def theoretical_curves(alpha: float, cost_ratio: float, gammas: Sequence[int], dllm: bool, sub_block: int = 8) -> np.ndarray:
    """Theorem 3.8 speedup per γ; for a dLLM drafter the per-token cost ratio is sub-linear in γ:
    c(γ) = c · (⌈γ/b⌉ + 1) / γ (one pass per started sub-block plus one housekeeping pass)."""
    values = []
    for g in gammas:
        c = cost_ratio * _dllm_passes(g, sub_block) / g if dllm else cost_ratio
        values.append(theorem_3_8_speedup(alpha, g, c))
    return np.asarray(values)


# ---------------------------------------------------------------------------------------------
# F1 — acceptance vs drafter compute (concavity)
# ---------------------------------------------------------------------------------------------

F1_COLUMNS = ("run_id", "target", "dataset", "drafter", "config_name", "theta", "spec_len",
              "drafter_passes_per_round", "acceptance_rate")


def plot_concavity(runs: pd.DataFrame, out_dir: Path | str, *, spec_len: Optional[int] = None,
                   target: Optional[str] = None, dataset: Optional[str] = None,
                   paper: bool = True, stem: str = "f1_concavity") -> list[Path]:
    """F1: acceptance rate vs drafter passes per round over a Fast-dLLM θ sweep at fixed spec_len,
    plus the AR drafter at the same spec_len."""
    func = "plot_concavity (F1)"
    require_columns(runs, F1_COLUMNS, func, "runs")
    rows = with_methods(one_row_per_run(_filter(runs, target=target, dataset=dataset)))
    dllm = rows[rows["method"] == FAST_DLLM]
    if spec_len is None:
        lengths = dllm["spec_len"].dropna()
        # Prefer the paper's spec_len 8, else the spec_len with the widest θ sweep.
        if (lengths == paper_data.F1_SPEC_LEN).any():
            spec_len = paper_data.F1_SPEC_LEN
        elif not lengths.empty:
            spec_len = int(dllm.dropna(subset=["spec_len"]).groupby("spec_len")["theta"].nunique().idxmax())
    dllm = dllm[dllm["spec_len"] == spec_len]
    ar = rows[(rows["method"] == AR) & (rows["spec_len"] == spec_len)]
    if dllm.empty and ar.empty:
        raise NoDataError(f"{func}: no Fast-dLLM θ-sweep or AR rows at a fixed spec_len")

    fig = _new_figure()
    ax = fig.add_subplot()
    markers = iter("osD^vP")
    for (tgt, ds), group in dllm.groupby(["target", "dataset"]):
        group = group.sort_values("theta")
        marker = next(markers, "o")
        ax.plot(group["drafter_passes_per_round"], group["acceptance_rate"] * 100, marker=marker, ms=4,
                color=METHOD_COLORS[FAST_DLLM], label=f"Fast-dLLM θ sweep, spec {spec_len} ({_pair_label(tgt, ds)})")
        for _, end in (group.iloc[[0, -1]].iterrows() if len(group) > 1 else group.iterrows()):
            ax.annotate(f"θ={end['theta']:g}", (end["drafter_passes_per_round"], end["acceptance_rate"] * 100),
                        textcoords="offset points", xytext=(4, -10), fontsize=7, color=METHOD_COLORS[FAST_DLLM])
    for (tgt, ds), group in ar.groupby(["target", "dataset"]):
        ax.plot(group["drafter_passes_per_round"], group["acceptance_rate"] * 100, linestyle="none", marker="*",
                ms=12, color=METHOD_COLORS[AR], markeredgecolor="black",
                label=f"AR drafter, spec {spec_len} ({_pair_label(tgt, ds)})")
    if paper:
        ref = paper_data.f1_frame()
        ax.plot(ref["drafter_passes_per_round"], ref["acceptance_pct"], linestyle="--", marker="o", ms=4,
                mfc="none", color=PAPER_COLOR, label=f"{paper_data.PAPER_LABEL}: Fast-dLLM θ sweep, spec 8")
        ax.plot(*paper_data.F1_AR_POINT, linestyle="none", marker="*", ms=12, mfc="none", color=PAPER_COLOR,
                label=f"{paper_data.PAPER_LABEL}: AR drafter, spec 8")
    ax.set_xlabel("Avg. drafter forward passes per round (passes)")
    ax.set_ylabel("Acceptance rate (%)")
    ax.set_title(f"F1: acceptance vs drafter compute per round\n(mean over questions, {accounting_of(rows)} accounting)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, out_dir, stem)


# ---------------------------------------------------------------------------------------------
# F2 — varying-difficulty raster
# ---------------------------------------------------------------------------------------------

F2_COLUMNS = ("config_name", "dataset", "question_id", "round", "accepted_len", "bonus")


def plot_difficulty_raster(rounds: pd.DataFrame, out_dir: Path | str, *, config_name: Optional[str] = None,
                           dataset: Optional[str] = None, question_ids: Optional[Sequence] = None,
                           max_questions: int = 5, run_id: Optional[str] = None,
                           stem: str = "f2_difficulty_raster") -> list[Path]:
    """F2: one raster row per question; dark green = accepted or bonus token, white = first rejected."""
    func = "plot_difficulty_raster (F2)"
    require_columns(rounds, F2_COLUMNS, func, "rounds")
    if config_name is None:
        config_name = _pick_config(rounds["config_name"].unique(), [PAPER_AR_CONFIG], AR_CONFIG_PATTERN) \
            or (sorted(rounds["config_name"].unique()) or [None])[0]
    rows = _filter(rounds, config_name=config_name)
    if dataset is None and not rows.empty:
        dataset = sorted(rows["dataset"].unique())[0]
    rows, chosen_run = one_run(with_str_question_ids(_filter(rows, dataset=dataset)), run_id)
    if rows.empty:
        raise NoDataError(f"{func}: no rounds for config {config_name!r}, dataset {dataset!r}, run {run_id!r}")
    if question_ids is None:
        question_ids = _sorted_ids(rows["question_id"])[:max_questions]
    question_ids = [str(q) for q in question_ids]
    decisions = question_decisions(rows[rows["question_id"].isin(question_ids)])
    question_ids = [q for q in question_ids if q in decisions]
    if not question_ids:
        raise NoDataError(f"{func}: none of the requested questions is in the rounds")

    width = max(len(decisions[q]) for q in question_ids)
    grid = np.full((len(question_ids), width), np.nan)
    for i, qid in enumerate(question_ids):
        grid[i, : len(decisions[qid])] = decisions[qid]
    fig = _new_figure(9.0, 1.4 + 0.45 * len(question_ids), layout="constrained")
    ax = fig.add_subplot()
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(["white", "#006d2c"]).with_extremes(bad="#d9d9d9")
    ax.imshow(np.ma.masked_invalid(grid), aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=1,
              extent=(-0.5, width - 0.5, len(question_ids) - 0.5, -0.5))
    for k in range(len(question_ids) - 1):
        ax.axhline(k + 0.5, color="white", linewidth=4)
    ax.set_yticks(range(len(question_ids)), [str(q) for q in question_ids])
    ax.set_xlabel("Output token index (tokens)")
    ax.set_ylabel("Query ID")
    where = f"{config_name}, {dataset}" + (f", run {chosen_run}" if chosen_run else "")
    ax.set_title(f"F2: accepted vs rejected tokens along each output ({where})", fontsize=10)
    fig.legend(handles=[Patch(facecolor="#006d2c", label="accepted or bonus token"),
                        Patch(facecolor="white", edgecolor="black", label="first rejected token (target corrects it)"),
                        Patch(facecolor="#d9d9d9", label="after the end of the output")],
               fontsize=7, loc="outside lower center", ncol=3, frameon=False)
    return save_figure(fig, out_dir, stem)


# ---------------------------------------------------------------------------------------------
# F3 — easy-region length distribution
# ---------------------------------------------------------------------------------------------

F3_COLUMNS = ("config_name", "dataset", "question_id", "round", "accepted_len", "bonus")


def plot_easy_region_cdf(rounds: pd.DataFrame, out_dir: Path | str, *, config_name: Optional[str] = None,
                         max_len: Optional[int] = None, stem: str = "f3_easy_region_cdf") -> list[Path]:
    """F3: share of tokens lying in easy regions (runs of accepted decisions) longer than c, per dataset."""
    func = "plot_easy_region_cdf (F3)"
    require_columns(rounds, F3_COLUMNS, func, "rounds")
    if config_name is None:
        config_name = _pick_config(rounds["config_name"].unique(), [PAPER_AR_CONFIG], AR_CONFIG_PATTERN) \
            or (sorted(rounds["config_name"].unique()) or [None])[0]
    rows = _filter(rounds, config_name=config_name)
    if rows.empty:
        raise NoDataError(f"{func}: no rounds for config {config_name!r}")
    # One line per dataset; per run when a dataset holds several runs of this config (several targets).
    several = "run_id" in rows.columns and (rows.groupby("dataset")["run_id"].nunique() > 1).any()
    per_line = {}
    for key, group in rows.groupby("run_id" if several else "dataset", sort=True):
        decisions = question_decisions(group)
        lengths = [n for d in decisions.values() for n in easy_run_lengths(d)]
        per_line[key] = (lengths, sum(len(d) for d in decisions.values()))
    longest = max((max(l) for l, _ in per_line.values() if l), default=1)
    x_max = max_len if max_len is not None else max(10, longest)
    thresholds = np.arange(0, x_max + 1)

    fig = _new_figure()
    ax = fig.add_subplot()
    for key, (lengths, total) in per_line.items():
        y = easy_region_ratio(lengths, total, thresholds)
        y50 = easy_region_ratio(lengths, total, [50])[0]
        ax.plot(thresholds, y, label=f"{key} (y(50) = {y50:.2f})")
    ax.set_xlim(0, x_max)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Easy region length c (tokens)")
    ax.set_ylabel("Ratio of tokens in easy regions longer than c")
    ax.set_title(f"F3: how much of the output lies in long easy stretches ({config_name})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="run" if several else "dataset", title_fontsize=8)
    return save_figure(fig, out_dir, stem)


# ---------------------------------------------------------------------------------------------
# F5 — latency breakdown (speculation vs verification)
# ---------------------------------------------------------------------------------------------

F5_COLUMNS = ("run_id", "target", "dataset", "drafter", "config_name", "profile", "modeled_speedup",
              "modeled_speedup_pooled", "speculation_ms_per_question", "verification_ms_per_question")
F5_METHODS = (AR, FAST_DLLM, FAILFAST)


def _lighter(color: str, amount: float = 0.55) -> tuple:
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def plot_latency_breakdown(runs: pd.DataFrame, out_dir: Path | str, *, profile: Optional[str] = None,
                           methods: Sequence[str] = F5_METHODS, paper: bool = True,
                           stem: str = "f5_latency_breakdown") -> list[Path]:
    """F5: per target × dataset, stacked bars of modeled verification (dark, bottom) and speculation
    (light, top) time per question for the best config of each method."""
    func = "plot_latency_breakdown (F5)"
    require_columns(runs, F5_COLUMNS, func, "runs")
    rows, profile = select_profile(runs, profile, func)
    best = best_per_method(rows, methods)
    if best.empty:
        raise NoDataError(f"{func}: no rows for methods {', '.join(methods)} under profile {profile!r}")
    groups = []  # (label, {method: (spec_s, verif_s)}, is_paper)
    several_datasets = best["dataset"].nunique() > 1
    for (tgt, ds), group in best.groupby(["target", "dataset"], sort=True):
        values = {m: (r["speculation_ms_per_question"] / 1000, r["verification_ms_per_question"] / 1000)
                  for m, r in zip(group["method"], group.to_dict("records"))}
        groups.append((f"{tgt}\n{ds}" if several_datasets else str(tgt), values, False))
    if paper:
        for tgt, by_method in paper_data.F5_LATENCY_MS.items():
            groups.append((f"paper\n{tgt}", {m: (v[0] / 1000, v[1] / 1000) for m, v in by_method.items()}, True))

    fig = _new_figure(max(6.4, 1.3 * len(groups) + 1.5), 4.4)
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    for gi, (_, values, is_paper) in enumerate(groups):
        for mi, method in enumerate(methods):
            if method not in values:
                continue
            spec, verif = values[method]
            x = gi + (mi - (len(methods) - 1) / 2) * width
            color = METHOD_COLORS.get(method, "#888888")
            hatch = "//" if is_paper else None
            ax.bar(x, verif, width, color=color, edgecolor="black", linewidth=0.5, hatch=hatch)
            ax.bar(x, spec, width, bottom=verif, color=_lighter(color), edgecolor="black", linewidth=0.5, hatch=hatch)
    ax.set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
    ax.set_xlabel("Target model and dataset" if several_datasets else "Target model")
    ax.set_ylabel("Latency per query (s)")
    ax.set_title(f"F5: latency breakdown, best config per method by pooled speedup\n(modeled, profile {profile}, "
                 f"{accounting_of(rows)} accounting; mean per question)", fontsize=10)
    handles = [Patch(facecolor=METHOD_COLORS.get(m, "#888888"), edgecolor="black", label=m) for m in methods]
    handles += [Patch(facecolor="#525252", edgecolor="black", label="verification (dark, bottom)"),
                Patch(facecolor=_lighter("#525252"), edgecolor="black", label="speculation (light, top)")]
    if paper:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//",
                             label=f"hatched: {paper_data.PAPER_LABEL},\n{paper_data.paper_label(PAPER_TARGET_14B)}"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, out_dir, stem)


# ---------------------------------------------------------------------------------------------
# F6 — CDF of speculated and accepted lengths per round
# ---------------------------------------------------------------------------------------------

F6_COLUMNS = ("config_name", "dataset", "draft_len", "accepted_len")


def plot_length_cdf(rounds: pd.DataFrame, out_dir: Path | str, *, ar_config: Optional[str] = None,
                    failfast_config: Optional[str] = None, dataset: Optional[str] = None,
                    stem: str = "f6_length_cdf") -> list[Path]:
    """F6: CDF over rounds of the drafted length and the accepted length, AR drafter vs FailFast."""
    func = "plot_length_cdf (F6)"
    require_columns(rounds, F6_COLUMNS, func, "rounds")
    rows = _filter(rounds, dataset=dataset)
    names = rows["config_name"].unique()
    ar_config = ar_config or _pick_config(names, [PAPER_AR_CONFIG], AR_CONFIG_PATTERN)
    failfast_config = failfast_config or _pick_config(names, PAPER_FAILFAST_CONFIGS, FAILFAST_CONFIG_PATTERN)
    series = [(AR, ar_config), (FAILFAST, failfast_config)]
    series = [(m, c) for m, c in series if c is not None and (rows["config_name"] == c).any()]
    if not series:
        raise NoDataError(f"{func}: no AR (ar_None_sf_*) or FailFast (dllm_*_df_*) rounds")

    fig = _new_figure()
    ax = fig.add_subplot()
    x_end = float(rows.loc[rows["config_name"].isin([c for _, c in series]), "draft_len"].max()) + 1
    for method, config in series:
        chosen = rows[rows["config_name"] == config]
        color = METHOD_COLORS[method]
        for column, style, what in (("draft_len", "-", "spec len"), ("accepted_len", ":", "acc len")):
            values = np.sort(chosen[column].to_numpy(dtype=float))
            cdf = np.arange(1, len(values) + 1) / len(values)
            # Carry each CDF on at 1.0 to the common right edge so short curves do not just stop.
            ax.step(np.concatenate([[0], values, [x_end]]), np.concatenate([[0], cdf, [1.0]]), where="post",
                    linestyle=style, color=color, linewidth=1.8, label=f"{method} {what} ({config})")
    ax.set_ylim(0, 1.05)
    ax.set_xlim(left=0)
    ax.set_xlabel("Number of tokens per round (tokens)")
    ax.set_ylabel("CDF (fraction of rounds)")
    where = dataset if dataset is not None else ", ".join(sorted(map(str, rows["dataset"].unique())))
    ax.set_title(f"F6: drafted and accepted length per round ({where})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, out_dir, stem)


# ---------------------------------------------------------------------------------------------
# F7 / F8 — modeled speedup vs τ and vs N_max (FailFast microbenchmarks)
# ---------------------------------------------------------------------------------------------

SWEEP_COLUMNS = ("run_id", "target", "dataset", "drafter", "config_name", "profile", "theta", "tau", "n",
                 "n_max", "modeled_speedup", "modeled_speedup_pooled")


def _one_axis_sweeps(rows: pd.DataFrame, x_col: str, fixed_cols: Sequence[str], preferred: dict) -> list:
    """Per (target, dataset): the sub-sweep along ``x_col`` with the other hyperparameters held fixed,
    choosing the fixed values with the most x points (ties: the paper's fixed values)."""
    out = []
    # Runs on other questions, temperatures or drafter weights are other experiments: never one curve.
    context = [c for c in SWEEP_CONTEXT if c in rows.columns and c not in ("target", "dataset")]
    keys = [*fixed_cols, *context]
    for (tgt, ds), group in rows.groupby(["target", "dataset"], sort=True):
        candidates = []
        for key, sub in group.groupby(keys, dropna=False, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            matches_paper = all(
                not pd.isna(v) and math.isclose(float(v), float(preferred[c])) for c, v in zip(fixed_cols, key)
                if c in preferred)
            candidates.append((sub[x_col].nunique(), matches_paper, dict(zip(fixed_cols, key)), sub))
        if not candidates:
            continue
        count, _, fixed, sub = max(candidates, key=lambda t: (t[0], t[1]))
        sub = sub.groupby(x_col, as_index=False)[["modeled_speedup", "modeled_speedup_pooled"]].mean().sort_values(x_col)
        out.append((tgt, ds, fixed, sub))
    return out


def _fixed_text(fixed: dict) -> str:
    names = {"theta": "θ", "tau": "τ", "n": "N", "n_max": "N_max"}
    return ", ".join(f"{names.get(k, k)}={v:g}" for k, v in fixed.items() if not pd.isna(v))


def _plot_sweep(runs: pd.DataFrame, out_dir, *, func: str, x_col: str, fixed_cols: Sequence[str], preferred: dict,
                reference: pd.DataFrame, paper: bool, profile: Optional[str], xlabel: str, title: str,
                paper_fixed: str, stem: str) -> list[Path]:
    require_columns(runs, SWEEP_COLUMNS, func, "runs")
    rows, profile = select_profile(runs, profile, func)
    rows = with_methods(rows)
    rows = rows[(rows["method"] == FAILFAST) & rows[x_col].notna()]
    sweeps = _one_axis_sweeps(rows, x_col, fixed_cols, preferred)
    if not sweeps:
        raise NoDataError(f"{func}: no FailFast rows with {x_col} under profile {profile!r}")
    fig = _new_figure()
    ax = fig.add_subplot()
    for tgt, ds, fixed, sub in sweeps:
        line, = ax.plot(sub[x_col], sub["modeled_speedup"], marker="o", ms=4,
                        label=f"FailFast {_pair_label(tgt, ds)} ({_fixed_text(fixed)}): mean over questions")
        ax.plot(sub[x_col], sub["modeled_speedup_pooled"], marker="^", ms=4, linestyle=":", color=line.get_color(),
                label=f"FailFast {_pair_label(tgt, ds)}: pooled (Σ vanilla time / Σ time)")
    if paper:
        ax.plot(reference[x_col], reference["modeled_speedup"], linestyle="--", marker="s", ms=4, mfc="none",
                color=PAPER_COLOR, label=f"{paper_data.PAPER_LABEL}: MATH ({paper_fixed})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Modeled speedup over vanilla (×)")
    ax.set_title(f"{title} (profile {profile}, {accounting_of(rows)} accounting)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, out_dir, stem)


def plot_tau_sensitivity(runs: pd.DataFrame, out_dir: Path | str, *, profile: Optional[str] = None,
                         paper: bool = True, stem: str = "f7_tau_sensitivity") -> list[Path]:
    """F7: FailFast modeled speedup vs the confidence threshold τ (θ, N, N_max held fixed)."""
    return _plot_sweep(runs, out_dir, func="plot_tau_sensitivity (F7)", x_col="tau",
                       fixed_cols=("theta", "n", "n_max"), preferred=paper_data.F7_FIXED,
                       reference=paper_data.f7_frame(), paper=paper, profile=profile,
                       xlabel="Confidence threshold τ (probability)", title="F7: sensitivity to τ",
                       paper_fixed="θ=0.05, N=10, N_max=60", stem=stem)


def plot_nmax_sensitivity(runs: pd.DataFrame, out_dir: Path | str, *, profile: Optional[str] = None,
                          paper: bool = True, stem: str = "f8_nmax_sensitivity") -> list[Path]:
    """F8: FailFast modeled speedup vs the draft-length cap N_max (θ, τ, N held fixed)."""
    return _plot_sweep(runs, out_dir, func="plot_nmax_sensitivity (F8)", x_col="n_max",
                       fixed_cols=("theta", "tau", "n"), preferred=paper_data.F8_FIXED,
                       reference=paper_data.f8_frame(), paper=paper, profile=profile,
                       xlabel="Max spec length N_max (tokens)", title="F8: sensitivity to N_max",
                       paper_fixed="θ=0.05, τ=0.45, N=10", stem=stem)


# ---------------------------------------------------------------------------------------------
# F9 — drafter (EAGLE-3 head) training curve
# ---------------------------------------------------------------------------------------------

F9_COLUMNS = ("step", "accuracy")


def plot_training_curve(curve: pd.DataFrame, out_dir: Path | str, *, window: int = 250,
                        stem: str = "f9_training_curve") -> list[Path]:
    """F9: training accuracy (raw, faint; moving average, bold) vs step, one line per ``label``;
    the loss, when present, on a second axis."""
    func = "plot_training_curve (F9)"
    require_columns(curve, F9_COLUMNS, func, "curve")
    if curve.empty:
        raise NoDataError(f"{func}: the training curve is empty")
    labelled = curve if "label" in curve.columns else curve.assign(label="drafter")
    # A 250-step window (the paper's) on a short log would mostly show its own lag: cap it at a tenth.
    longest = int(labelled.groupby("label").size().max())
    window = max(1, min(window, longest // 10))
    fig = _new_figure(6.4, 4.8, layout="constrained")
    ax = fig.add_subplot()
    loss_ax = ax.twinx() if "loss" in curve.columns else None
    colors = ["#00441b", "#3182bd", "#8856a7", "#e6550d", "#636363"]
    for i, (label, group) in enumerate(labelled.groupby("label", sort=True)):
        group = group.sort_values("step")
        color = colors[i % len(colors)]
        smooth = group["accuracy"].rolling(window, min_periods=1).mean()
        ax.plot(group["step"], group["accuracy"], color=color, alpha=0.2, linewidth=0.8)
        ax.plot(group["step"], smooth, color=color, linewidth=1.8, label=f"{label}: accuracy ({window}-step moving avg.)")
        if loss_ax is not None:
            loss_ax.plot(group["step"], group["loss"].rolling(window, min_periods=1).mean(), color=color,
                         linestyle=":", linewidth=1.2, label=f"{label}: loss ({window}-step moving avg.)")
    ax.set_xlabel("Training steps (optimizer steps)")
    ax.set_ylabel("Training accuracy (fraction of tokens)")
    ax.set_title("F9: drafter training curve", fontsize=10)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if loss_ax is not None:
        loss_ax.set_ylabel("Training loss (cross-entropy, nats)")
        more_h, more_l = loss_ax.get_legend_handles_labels()
        handles, labels = handles + more_h, labels + more_l
    fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncol=2, frameon=False)
    return save_figure(fig, out_dir, stem)


# ---------------------------------------------------------------------------------------------
# F10 — theoretical speedup vs speculation length
# ---------------------------------------------------------------------------------------------

F10_COLUMNS = ("run_id", "target", "dataset", "drafter", "config_name", "profile", "modeled_speedup",
               "modeled_speedup_pooled", "acceptance_rate_pooled", "mean_draft_len_pooled",
               "speculation_ms_per_question", "verification_ms_per_question", "drafter_passes_per_round_pooled")


def _cost_ratio_per_pass(row: dict) -> float:
    """t_draft / TPT implied by the modeled split, pooled throughout: Σ speculation / Σ verification =
    (ΣP / ΣR) · c, so c = (Σ speculation / Σ verification) / (ΣP / ΣR). The per-question means of the split
    are Σ / n on both sides, so their ratio is the pooled one; dividing it by the *mean* of per-question
    P/R (as before) mixed two conventions and gave c = 0.1055 instead of 6.1 / 52.6 = 0.116."""
    passes = float(row["drafter_passes_per_round_pooled"])
    verif = float(row["verification_ms_per_question"])
    if not passes > 0 or not verif > 0:
        return float("nan")
    return float(row["speculation_ms_per_question"]) / verif / passes


def f10_inputs(row: dict) -> tuple[float, float, float]:
    """(α, γ, c) of one run for F10, one convention throughout (pooled over questions): γ = Σ drafted / Σ
    rounds, α backed out of Σ accepted / Σ drafted at that γ, c from :func:`_cost_ratio_per_pass`."""
    rate, gamma, c = float(row["acceptance_rate_pooled"]), float(row["mean_draft_len_pooled"]), _cost_ratio_per_pass(row)
    alpha = alpha_from_acceptance(rate, gamma) if gamma > 0 and math.isfinite(rate) else float("nan")
    return alpha, gamma, c


def plot_theoretical_speedup(runs: pd.DataFrame, out_dir: Path | str, *, profile: Optional[str] = None,
                             gammas: Sequence[int] = paper_data.F10_GAMMAS, sub_block: int = paper_data.F10_SUB_BLOCK,
                             paper: bool = True, stem: str = "f10_theoretical_speedup") -> list[Path]:
    """F10: Leviathan Theorem 3.8 speedup vs γ, with α backed out from the measured acceptance of the
    best AR drafter and the best FailFast config, and the cost ratio implied by the latency model, all
    pooled over questions (:func:`f10_inputs`). AR costs one pass per token; the dLLM one pass per started
    sub-block plus one housekeeping pass, ⌈γ/8⌉ + 1 (paper-reference §13 F10: (γ − 1)//8 + 2)."""
    func = "plot_theoretical_speedup (F10)"
    require_columns(runs, F10_COLUMNS, func, "runs")
    rows, profile = select_profile(runs, profile, func)
    best = best_per_method(rows, (AR, FAILFAST))
    gammas = list(gammas)
    fig = _new_figure(7.0, 4.4)
    ax = fig.add_subplot()
    drawn = 0
    for row in best.to_dict("records"):
        alpha, gamma, c = f10_inputs(row)
        if not (gamma > 0 and math.isfinite(c) and math.isfinite(alpha)):
            continue
        dllm = row["method"] == FAILFAST
        curve = theoretical_curves(alpha, c, gammas, dllm=dllm, sub_block=sub_block)
        color = METHOD_COLORS[row["method"]]
        ax.plot(gammas, curve, marker="o" if dllm else "D", ms=3, color=color,
                label=f"{'dLLM (FailFast acc.)' if dllm else 'AR drafter'} {_pair_label(row['target'], row['dataset'])}: "
                      f"α={alpha:.3f} (pooled acc. at γ={gamma:.1f}), c={c:.3f}")
        drawn += 1
    if drawn == 0:
        raise NoDataError(f"{func}: no AR or FailFast rows with acceptance, draft length and latency split")
    if paper:
        c_paper = paper_data.T_DRAFT_MS / paper_data.TPT_MS["Qwen2.5-32B"]
        for dllm, alpha, marker, what in ((False, paper_data.F10_ALPHA_AR, "D", "AR drafter"),
                                          (True, paper_data.F10_ALPHA_DLLM, "o", "dLLM")):
            curve = theoretical_curves(alpha, c_paper, gammas, dllm=dllm, sub_block=paper_data.F10_SUB_BLOCK)
            ax.plot(gammas, curve, linestyle="--", marker=marker, ms=3, mfc="none", color=PAPER_COLOR,
                    alpha=0.8 if dllm else 0.5, label=f"{paper_data.PAPER_LABEL}: {what}, α={alpha:.4f}, c={c_paper:.3f}")
    ax.set_xlabel("Speculation length per round γ (tokens)")
    ax.set_ylabel("Theoretical speedup (×)")
    ax.set_title(f"F10: Leviathan et al. Thm 3.8 speedup vs draft length\n(profile {profile}, {accounting_of(rows)} "
                 f"accounting, pooled over questions; dLLM cost ⌈γ/8⌉+1 passes)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, out_dir, stem)


# ---------------------------------------------------------------------------------------------
# F11 — drafter confidence vs acceptance (calibration)
# ---------------------------------------------------------------------------------------------

F11_COLUMNS = ("config_name", "dataset", "confidences", "accepted_len", "draft_len")


def plot_calibration(rounds: pd.DataFrame, out_dir: Path | str, *, config_name: Optional[str] = None,
                     n_bins: int = 20, stem: str = "f11_confidence_calibration") -> list[Path]:
    """F11: acceptance rate vs drafter token confidence in quantile bins, one line per dataset."""
    func = "plot_calibration (F11)"
    require_columns(rounds, F11_COLUMNS, func, "rounds")
    has_conf = rounds[rounds["confidences"].map(lambda c: c is not None and len(c) > 0)]
    if config_name is None:
        config_name = _pick_config(has_conf["config_name"].unique(), PAPER_FAILFAST_CONFIGS, FAILFAST_CONFIG_PATTERN) \
            or (sorted(has_conf["config_name"].unique()) or [None])[0]
    rows = _filter(has_conf, config_name=config_name)
    if rows.empty:
        raise NoDataError(f"{func}: no rounds with drafter confidences for config {config_name!r}")
    fig = _new_figure(5.6, 5.0)
    ax = fig.add_subplot()
    for ds, group in rows.groupby("dataset", sort=True):
        pairs = confidence_acceptance_pairs(group)
        if pairs.empty:
            continue
        bins = pd.qcut(pairs["confidence"], q=min(n_bins, len(pairs)), duplicates="drop")
        binned = pairs.groupby(bins, observed=True).agg(confidence=("confidence", "mean"), rate=("accepted", "mean"))
        ax.plot(binned["confidence"], binned["rate"], marker="o", ms=4, label=f"{ds} ({len(pairs)} tokens)")
    ax.plot([0, 1], [0, 1], linestyle="--", color=PAPER_COLOR, linewidth=1, label="perfect correlation")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Drafter token confidence (probability)")
    ax.set_ylabel("Acceptance rate (fraction of tokens)")
    ax.set_title(f"F11: confidence vs acceptance, {n_bins} quantile bins\n({config_name})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, out_dir, stem)


# ---------------------------------------------------------------------------------------------
# F12 — dLLM drafting strategies (issue 16): pooled modeled speedup per strategy, dataset and profile
# ---------------------------------------------------------------------------------------------

DATASET_MARKERS = ("o", "s", "D", "^", "v")


def plot_strategies(table: pd.DataFrame, out_dir: Path | str, *, stem: str = "f12_strategies") -> list[Path]:
    """F12: one panel per latency profile; a row per strategy, one marker per dataset at its pooled modeled
    speedup with the 95 % CI as a whisker; oracle bounds hollow (no CI). Input: plots.strategies.strategies_frame."""
    func = "plot_strategies (F12)"
    require_columns(table, ("dataset", "strategy", "is_oracle"), func, "strategies table")
    profiles = list(table.attrs.get("profiles", ()))
    if table.empty or not profiles:
        raise NoDataError(f"{func}: no strategy rows")
    strategies = list(dict.fromkeys(table["strategy"]))  # the frame is already in display order
    datasets = list(dict.fromkeys(table["dataset"]))
    fig = _new_figure(5.0 * len(profiles) + 1.5, 0.42 * len(strategies) + 1.6, layout="constrained")
    axes = fig.subplots(1, len(profiles), sharey=True, squeeze=False)[0]
    offset = {d: (i - (len(datasets) - 1) / 2) * 0.22 for i, d in enumerate(datasets)}
    colors = {d: c for d, c in zip(datasets, ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e"))}
    for ax, profile in zip(axes, profiles):
        for r in table.to_dict("records"):
            y = strategies.index(r["strategy"]) + offset[r["dataset"]]
            x = r.get(f"speedup_{profile}_pooled", math.nan)
            if not np.isfinite(x):
                continue
            lo, hi = r.get(f"speedup_{profile}_pooled_ci_low", math.nan), r.get(f"speedup_{profile}_pooled_ci_high", math.nan)
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot([lo, hi], [y, y], color=colors[r["dataset"]], linewidth=1.2)
            marker = DATASET_MARKERS[datasets.index(r["dataset"]) % len(DATASET_MARKERS)]
            ax.plot([x], [y], marker=marker, markersize=6, color=colors[r["dataset"]],
                    markerfacecolor="white" if r["is_oracle"] else colors[r["dataset"]])
        ax.axvline(1.0, color=METHOD_COLORS[VANILLA], linestyle=":", linewidth=1)
        ax.set_title(f"profile {profile}", fontsize=10)
        ax.set_xlabel("Modeled speedup, pooled (×)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(strategies)), strategies, fontsize=8)
    axes[0].invert_yaxis()
    handles = [Line2D([], [], marker=DATASET_MARKERS[i % len(DATASET_MARKERS)], color=colors[d], label=d)
               for i, d in enumerate(datasets)]
    handles.append(Line2D([], [], marker="o", color="black", markerfacecolor="white", linestyle="", label="oracle bound (hollow)"))
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.suptitle(f"F12: dLLM drafting strategies, one drafter, replayed ({table.attrs.get('accounting', 'paper')} "
                 f"accounting; verification = one decode step; whiskers: 95% bootstrap CI)", fontsize=10)
    return save_figure(fig, out_dir, stem)
