"""The "dLLM drafting strategies" comparison (issue 16): one row per (dataset, strategy), every strategy a run
on the same engine and drafter, plus the oracle stop computed from the FailFast and fixed-length runs' rounds.

The numbers are the runs frame's (report.collect, metrics.py) under each latency profile in ``PROFILES``; the
oracle rows are failfast_bench.oracle's bound on the same rounds, priced like ``modeled_speedup`` (every
verification one decode step, ``Pricing.of(..., verify_curve=False)``) so it can sit in the same column.
This module only labels, selects and orders; tables.write_t3 and figures.plot_strategies draw the frame it
builds (``is_oracle`` marks the bound's rows).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from .. import oracle
from ..latency import load_profile
from ..metrics import statistic_column
from .figures import NoDataError, require_columns

PROFILES = ("a6000_paper", "cpu")
RANK_PROFILE = "a6000_paper"  # several runs of one strategy on one dataset: keep the best under this profile

FAST_DLLM = "Fast-dLLM, fixed length"
FAILFAST = "FailFast (faithful)"
FAILFAST_CLEAN = "FailFast (clean)"
DIFFUSPEC = "DiffuSpec (CPS + ADL)"
ADL_ONLY = "DiffuSpec ADL only"
CPS_ONLY = "DiffuSpec CPS only"
TREE = "Prefix tree, Fast-dLLM trunk"
FAILFAST_TREE = "Prefix tree, FailFast trunk"
ORACLE_PREFIX = "Oracle stop on "


def cost_aware(hardware: str) -> str:
    return f"Cost-aware (stop priced for {hardware})"


def oracle_of(strategy: str) -> str:
    return ORACLE_PREFIX + strategy


# The strategies whose rounds the oracle re-scores: a chain drafted by a length rule the oracle can cut.
ORACLE_BASES = (FAST_DLLM, FAILFAST)
ORDER = (FAST_DLLM, oracle_of(FAST_DLLM), FAILFAST, oracle_of(FAILFAST), FAILFAST_CLEAN, DIFFUSPEC, ADL_ONLY,
         CPS_ONLY, TREE, FAILFAST_TREE, *(cost_aware(p) for p in PROFILES))
DATASET_ORDER = ("gsm8k", "humaneval", "mt_bench")

RUN_COLUMNS = ("run_id", "run_dir", "target", "dataset", "drafter", "family", "config_name", "profile",
               "latency_key", "tokens_per_round", "tokens_per_round_pooled", "drafter_passes_per_round",
               "drafter_passes_per_round_pooled", "modeled_speedup", "modeled_speedup_pooled",
               "modeled_speedup_pooled_ci_low", "modeled_speedup_pooled_ci_high")


def strategy_of(row: dict) -> Optional[str]:
    """The strategy a run implements, from its family (report._family) and config name (drafters.config_name);
    None for runs that are not one of the compared dLLM strategies."""
    family, name = str(row.get("family")), str(row.get("config_name"))
    if family == "failfast":
        return FAILFAST_CLEAN if row.get("mode") == "clean" else FAILFAST
    if family == "dllm":
        return FAST_DLLM
    if family in ("dllm_tree", "failfast_tree"):
        return TREE if family == "dllm_tree" else FAILFAST_TREE
    if family == "diffuspec":
        adl, cps = "_adl_" in name, "_cps" in name
        return DIFFUSPEC if adl and cps else ADL_ONLY if adl else CPS_ONLY
    if family == "dllm_cost":
        return cost_aware(str(row.get("run_hardware") or "?"))
    return None


def _rank(strategy: str) -> tuple[int, str]:
    return (ORDER.index(strategy), "") if strategy in ORDER else (len(ORDER), strategy)


def _dataset_rank(dataset: str) -> tuple[int, str]:
    return (DATASET_ORDER.index(dataset), "") if dataset in DATASET_ORDER else (len(DATASET_ORDER), dataset)


def _per_profile(rows: pd.DataFrame) -> dict:
    """``speedup_<profile>`` (mean), ``..._pooled`` and its CI bounds, one set per profile in PROFILES."""
    out = {}
    for profile in PROFILES:
        row = rows[rows["profile"] == profile]
        for stat in ("mean", "pooled", "pooled_ci_low", "pooled_ci_high"):
            value = float(row[statistic_column("modeled_speedup", stat)].iloc[0]) if len(row) else math.nan
            out[f"speedup_{profile}" + ("" if stat == "mean" else f"_{stat}")] = value
    return out


def _oracle_row(run: dict, strategy: str, min_len: int) -> dict:
    """The oracle bound on one run's rounds under each profile, and the run's share of it (same footing)."""
    by_question, _ = oracle.load_rounds(Path(run["run_dir"]))
    row = {"target": run["target"], "dataset": run["dataset"], "strategy": oracle_of(strategy),
           "config_name": run["config_name"], "run_id": run["run_id"], "draft_kind": "chain", "is_oracle": True}
    for profile in PROFILES:
        price = oracle.Pricing.of(load_profile(profile), run["latency_key"], run["drafter"], verify_curve=False)
        m = oracle.compare(by_question, price, min_len)
        row.update({f"speedup_{profile}": m["oracle_mean"], f"speedup_{profile}_pooled": m["oracle_pooled"],
                    f"of_oracle_{profile}": m["of_bound"]})
        # Profile-independent: the oracle's choices are not, so these come from the ranking profile's cut.
        if profile == RANK_PROFILE:
            row.update(tokens_per_round_pooled=m["oracle_tokens_per_round"],
                       drafter_passes_per_round_pooled=m["oracle_passes"], oracle_draft_len=m["oracle_draft_len"])
    return row


def strategies_frame(runs: pd.DataFrame, with_oracle: bool = True, min_len: int = 1) -> pd.DataFrame:
    """One row per (target, dataset, strategy), ordered by dataset then ``ORDER`` (each oracle row right after
    the run it bounds). Per profile: modeled speedup mean, pooled and pooled 95 % CI; τ and passes per
    round (mean and pooled). Oracle rows carry the bound (no CI: it is a hindsight optimum, not a sample
    statistic) and the base rows carry ``of_oracle_<profile>``: run / oracle on the oracle's own footing."""
    func = "strategies_frame (T3/F12)"
    if runs.empty:
        raise NoDataError(f"{func}: no complete runs")
    require_columns(runs, RUN_COLUMNS, func, "runs")
    labelled = runs.assign(strategy=[strategy_of(r) for r in runs.to_dict("records")])
    labelled = labelled[labelled["strategy"].notna()]
    if "temperature" in labelled.columns:
        labelled = labelled[labelled["temperature"].fillna(0.0) == 0.0]
    if labelled.empty:
        raise NoDataError(f"{func}: no dLLM strategy runs")
    out = []
    for (target, dataset, strategy), group in labelled.groupby(["target", "dataset", "strategy"], sort=False):
        ranked = group[group["profile"] == RANK_PROFILE]
        ranked = ranked if len(ranked) else group
        run = ranked.loc[ranked["modeled_speedup_pooled"].astype(float).fillna(-math.inf).idxmax()].to_dict()
        rows = group[group["run_id"] == run["run_id"]]
        row = {"target": target, "dataset": dataset, "strategy": strategy, "config_name": run["config_name"],
               "run_id": run["run_id"], "draft_kind": run.get("draft_kind", "chain"), "is_oracle": False,
               "tokens_per_round": run["tokens_per_round"], "tokens_per_round_pooled": run["tokens_per_round_pooled"],
               "drafter_passes_per_round": run["drafter_passes_per_round"],
               "drafter_passes_per_round_pooled": run["drafter_passes_per_round_pooled"],
               "accounting": run.get("accounting", "paper"), **_per_profile(rows)}
        out.append(row)
        if with_oracle and strategy in ORACLE_BASES:
            bound = _oracle_row(run, strategy, min_len)
            row.update({k: v for k, v in bound.items() if k.startswith("of_oracle_")})
            out.append({k: v for k, v in bound.items() if not k.startswith("of_oracle_")})
    table = pd.DataFrame(out)
    order = [(_dataset_rank(d), t, _rank(s)) for d, t, s in zip(table["dataset"], table["target"], table["strategy"])]
    table = table.iloc[sorted(range(len(table)), key=order.__getitem__)].reset_index(drop=True)
    table.attrs.update(profiles=PROFILES, rank_profile=RANK_PROFILE,
                       accounting=", ".join(sorted(set(map(str, labelled.get("accounting", pd.Series(["paper"])).dropna())))))
    return table


def best_online(table: pd.DataFrame, dataset: str, profile: str, target: Optional[str] = None) -> Optional[dict]:
    """The online strategy (not an oracle row) with the highest pooled modeled speedup under ``profile``."""
    rows = table[(table["dataset"] == dataset) & ~table["is_oracle"].astype(bool)]
    if target is not None:
        rows = rows[rows["target"] == target]
    column = f"speedup_{profile}_pooled"
    rows = rows[rows[column].notna()]
    return None if rows.empty else rows.loc[rows[column].astype(float).idxmax()].to_dict()


def strategy_names(table: pd.DataFrame) -> Sequence[str]:
    return sorted(table["strategy"].unique(), key=_rank)
