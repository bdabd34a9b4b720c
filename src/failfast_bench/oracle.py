"""Oracle stop: the hindsight-best draft length of every recorded round, from a stored trace, no model.

For each round of a dLLM or FailFast run (``rounds.parquet``) the drafter proposed D tokens and the target
accepted a of them, then committed one token of its own. A draft cut to L' ≤ D tokens (its first L' tokens)
would have had min(L', a) accepted: the target's verdict on a prefix is the verdict on the full draft's
prefix, and the target's own token after it is known (the correction at a, or target_tokens[L'] when
L' ≤ a). So the round commits c(L') = min(L', a) + 1 tokens.

Modeled time of a round with a draft of L' tokens, under a hardware profile (paper §10 plus the measured
verify curve when the profile has one):

    t(L') = passes(L') · pass_ms + verify(L' + 1)      verify(k) = verify_ms(k), or one decode step

**Approximation (pass counts).** A trace stores the round's passes by kind, not per drafted position. The
prefix prefill is paid whatever the length; the remaining passes (denoising and cache updates) are taken
to scale with the drafted positions: passes(L') = prefill + ⌈(P − prefill) · L'/D⌉, at least 1. At L' = D
this is the recorded count exactly. It flatters neither side much: a denoising pass commits several
positions at once, so real pass counts of shorter drafts are a step function at least this large (the
oracle is then slightly optimistic, i.e. still an upper bound in spirit).

**What the oracle chooses.** The run's modeled speedup is (Σ c) · step_ms / (Σ t) over its rounds (pooled;
per question for the mean over questions). The oracle picks L'_r ∈ [min_len, D_r] per round to maximise
that ratio; a ratio of sums is maximised exactly by Dinkelbach's iteration (per round minimise
t(L') − λ · c(L'), set λ = Σ t / Σ c, repeat until it stops changing). ``min_len`` = 1 by default (a
drafter that drafts at all; 0 would allow plain decoding steps). Ties go to the shorter draft.

**Not a replay.** A shorter draft changes the next round's context; the oracle scores the recorded rounds
as if they were independent, which is what "how much of the possible gain on these rounds does the stop
rule capture" means. Committed tokens are counted as accepted + 1 for both the run and the oracle (the
paper accounting's N_out, last-round overshoot included).

    python -m failfast_bench.oracle RUN_DIR [--profile a6000_paper --profile cpu] [--min-len 1]
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from .latency import HardwareProfile, available_profiles, load_profile
from .metrics import tokens_per_round


@dataclass(frozen=True)
class Round:
    """What the oracle reads of one recorded round."""

    draft_len: int  # D: tokens actually proposed
    accepted: int  # a
    passes: int  # P: drafter passes, every kind
    prefill: int = 0  # of which prefix prefills (paid whatever the length)


@dataclass(frozen=True)
class Pricing:
    pass_ms: float
    step_ms: float
    verify_ms: Optional[Callable[[int], float]] = None  # k fed tokens -> ms; None = one decode step

    @classmethod
    def of(cls, profile: HardwareProfile, target: str, drafter: str, verify_curve: bool = True) -> "Pricing":
        """``verify_curve=False`` prices every verification as one decode step even when the profile has a
        verify curve: the pricing of metrics.modeled_speedup, for a bound beside that column."""
        curve = verify_curve and profile.verify_ms.get(profile.target_key(target))
        verify = (lambda k: profile.verify_cost_ms(target, k)) if curve else None
        return cls(pass_ms=profile.pass_ms(drafter), step_ms=profile.step_ms(target), verify_ms=verify)

    def verify(self, k: int) -> float:
        return self.step_ms if self.verify_ms is None else float(self.verify_ms(k))


def passes_for(r: Round, length: int) -> int:
    """Drafter passes charged for a draft cut to ``length`` tokens (module docstring, "Approximation")."""
    if length <= 0:
        return 0
    if r.draft_len <= 0 or length >= r.draft_len:
        return r.passes
    scaled = r.prefill + math.ceil((r.passes - r.prefill) * length / r.draft_len)
    return max(1, scaled)


def round_cost(r: Round, length: int, price: Pricing) -> tuple[float, int]:
    """(modeled ms, committed tokens) of round ``r`` with its draft cut to ``length`` tokens."""
    return passes_for(r, length) * price.pass_ms + price.verify(length + 1), min(length, r.accepted) + 1


def recorded_cost(r: Round, price: Pricing) -> tuple[float, int]:
    return round_cost(r, r.draft_len, price)


def oracle_lengths(rounds: Sequence[Round], price: Pricing, min_len: int = 1, iterations: int = 50) -> list[int]:
    """Per round, the length that maximises the pooled modeled speedup of ``rounds`` (Dinkelbach)."""
    if not rounds:
        return []
    choice = [r.draft_len for r in rounds]
    lam = None
    for _ in range(iterations):
        t = sum(round_cost(r, L, price)[0] for r, L in zip(rounds, choice))
        c = sum(round_cost(r, L, price)[1] for r, L in zip(rounds, choice))
        new_lam = t / c
        if lam is not None and abs(new_lam - lam) <= 1e-12 * max(1.0, lam):
            break
        lam = new_lam
        new_choice = []
        for r in rounds:
            lo = min(max(0, min_len), r.draft_len)
            best = min(range(lo, r.draft_len + 1), key=lambda L: (round_cost(r, L, price)[0] - lam * round_cost(r, L, price)[1], L))
            new_choice.append(best)
        choice = new_choice
    return choice


def speedup(rounds: Sequence[Round], lengths: Sequence[int], price: Pricing) -> float:
    t = c = 0.0
    for r, L in zip(rounds, lengths):
        dt, dc = round_cost(r, L, price)
        t, c = t + dt, c + dc
    return c * price.step_ms / t if t > 0 else float("nan")


# -- stored runs ----------------------------------------------------------------------------------
def load_rounds(run_dir: Path) -> tuple[dict[str, list[Round]], dict]:
    """Rounds per question of a stored run, and its config (``config.yaml``)."""
    import pandas as pd
    import yaml

    run_dir = Path(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    frame = pd.read_parquet(run_dir / "rounds.parquet", columns=["question_id", "round", "draft_tokens", "accepted_len",
                                                                  "drafter_passes", "passes_prefill"])
    frame = frame.sort_values(["question_id", "round"], kind="stable")
    out: dict[str, list[Round]] = {}
    for row in frame.itertuples(index=False):
        out.setdefault(str(row.question_id), []).append(
            Round(draft_len=len(row.draft_tokens), accepted=int(row.accepted_len), passes=int(row.drafter_passes),
                  prefill=int(row.passes_prefill))
        )
    return out, cfg


def compare(by_question: dict[str, list[Round]], price: Pricing, min_len: int = 1) -> dict:
    """The run's modeled speedup against the oracle's on the same rounds: pooled and mean over questions."""
    everything = [r for rs in by_question.values() for r in rs]
    recorded = [r.draft_len for r in everything]
    best = oracle_lengths(everything, price, min_len)
    per_q_run, per_q_oracle = [], []
    for rs in by_question.values():
        per_q_run.append(speedup(rs, [r.draft_len for r in rs], price))
        per_q_oracle.append(speedup(rs, oracle_lengths(rs, price, min_len), price))
    s_run, s_oracle = speedup(everything, recorded, price), speedup(everything, best, price)
    n = max(1, len(everything))
    return {
        "rounds": len(everything),
        "questions": len(by_question),
        "run_pooled": s_run,
        "oracle_pooled": s_oracle,
        "run_mean": sum(per_q_run) / max(1, len(per_q_run)),
        "oracle_mean": sum(per_q_oracle) / max(1, len(per_q_oracle)),
        # Share of the oracle's gain over vanilla the run gets; undefined unless both beat vanilla.
        "captured": (s_run - 1.0) / (s_oracle - 1.0) if s_run >= 1.0 and s_oracle > 1.0 else float("nan"),
        "of_bound": s_run / s_oracle,
        "pricing": "refined" if price.verify_ms is not None else "paper",
        "run_draft_len": sum(recorded) / n,
        "oracle_draft_len": sum(best) / n,
        "run_passes": sum(r.passes for r in everything) / n,
        "oracle_tokens_per_round": tokens_per_round(sum(round_cost(r, L, price)[1] for r, L in zip(everything, best)), n),
        "oracle_passes": sum(passes_for(r, L) for r, L in zip(everything, best)) / n,
        "shorter": sum(L < r.draft_len for r, L in zip(everything, best)) / n,
    }


def report(run_dir: Path, profiles: Sequence[str] = (), min_len: int = 1) -> list[tuple[str, dict]]:
    by_question, cfg = load_rounds(run_dir)
    drafter = cfg["drafter"]["name"]
    target = cfg["target"].get("latency_key") or cfg["target"]["name"]
    chosen = list(profiles) or [cfg.get("hardware", {}).get("name", "a6000_paper")]
    out = []
    for name in chosen:
        hw = cfg.get("hardware") if name == (cfg.get("hardware") or {}).get("name") else None
        profile = HardwareProfile.from_mapping(hw) if hw else load_profile(name)
        out.append((name, compare(by_question, Pricing.of(profile, target, drafter), min_len)))
    return out


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{x:.1%}"  # nan: the run or the oracle does not beat vanilla


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m failfast_bench.oracle",
                                 description="A run's modeled speedup against the hindsight-best stop on the same rounds.")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--profile", action="append", default=[], help=f"hardware profile (repeatable; default: the run's own). Known: {', '.join(available_profiles())}")
    ap.add_argument("--min-len", type=int, default=1, help="shortest draft the oracle may choose (0 allows plain decoding steps)")
    args = ap.parse_args(argv)
    if not (args.run_dir / "rounds.parquet").exists():
        print(f"oracle: no rounds.parquet in {args.run_dir}", file=sys.stderr)
        return 2
    rows = report(args.run_dir, args.profile, args.min_len)
    print(f"run: {args.run_dir}")
    print("oracle = per-round hindsight-best draft length <= the drafted one (rounds scored independently; "
          "passes of a cut draft scale with its length, see failfast_bench/oracle.py)")
    print("pricing: paper = verification costs one decode step; refined = the profile's verify curve. "
          "run/oracle = pooled ratio; captured = (run - 1) / (oracle - 1) when both beat vanilla")
    print(f"{'profile':<12} {'pricing':>7} {'rounds':>6} | {'run pooled':>10} {'oracle':>7} {'run/oracle':>10} {'captured':>8} | {'run mean':>8} {'oracle':>7} | "
          f"{'len run':>7} {'oracle':>6} {'passes run':>10} {'oracle':>6} {'cut':>5}")
    for name, m in rows:
        print(f"{name:<12} {m['pricing']:>7} {m['rounds']:>6} | {m['run_pooled']:>9.3f}x {m['oracle_pooled']:>6.3f}x "
              f"{m['of_bound']:>10.1%} {_pct(m['captured']):>8} | "
              f"{m['run_mean']:>7.3f}x {m['oracle_mean']:>6.3f}x | {m['run_draft_len']:>7.2f} {m['oracle_draft_len']:>6.2f} "
              f"{m['run_passes']:>10.2f} {m['oracle_passes']:>6.2f} {m['shorter']:>5.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
