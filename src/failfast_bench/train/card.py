"""Model card (README.md) for a shipped drafter, written from its config.json and the training log."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .prompt_sources import GSM8K_SOURCE

KIND_TITLES = {"block_diffusion": "block-diffusion drafter (FailFast / Fast-dLLM baseline)", "causal": "autoregressive drafter (AR baseline)"}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def lineage(training: dict) -> dict:
    """The chain of warm-started runs behind an export's ``training`` metadata, for its model card.

    Returns ``steps_total`` (this recipe's optimizer steps over every run of the chain), ``runs`` and ``base``
    (the other recipe's drafter the chain started from, with its own steps and seconds, or None). Exports record
    the earlier chain in ``warm_start`` (``steps_total``, ``runs``, ``base``); for older exports that recorded only
    the previous run's steps, the previous export's config is read from ``warm_start.from`` while it exists.
    """
    warm = training.get("warm_start") or {}
    own = int(training.get("steps") or 0)
    if not warm:
        return {"steps_total": own, "runs": 1, "base": None}
    if warm.get("recipe"):  # another recipe's drafter: where the chain starts, not part of it
        return {"steps_total": own, "runs": 1, "base": {k: warm.get(k) for k in ("recipe", "steps", "train_seconds", "examples_seen")}}
    if "steps_total" in warm:
        return {"steps_total": own + int(warm["steps_total"]), "runs": int(warm.get("runs", 1)) + 1, "base": warm.get("base")}
    earlier_config = Path(str(warm.get("from", ""))) / "config.json"
    if warm.get("from") and earlier_config.exists():
        earlier = lineage(json.loads(earlier_config.read_text()).get("failfast_bench", {}).get("training", {}))
    else:  # the earlier export is gone: its own steps are all that is known
        earlier = {"steps_total": int(warm.get("steps") or 0), "runs": 1, "base": None, "incomplete": True}
    return {**earlier, "steps_total": own + earlier["steps_total"], "runs": earlier["runs"] + 1}


def write_model_card(directory: Path, log_path: Optional[Path] = None, data_stats: Optional[dict] = None, ship_name: Optional[str] = None) -> Path:
    """``ship_name``: the directory name under ``shipped/<target>/`` (default: ``directory``'s own name)."""
    directory = Path(directory)
    ship_name = ship_name or directory.name
    config = json.loads((directory / "config.json").read_text())
    meta = config.get("failfast_bench", {})
    training = meta.get("training", {})
    heldout = training.get("heldout", {})
    recipe = training.get("recipe", "?")
    target = meta.get("target", "?")
    weights = directory / "model.safetensors"
    size_mb = weights.stat().st_size / 1e6 if weights.exists() else float("nan")
    hours = training.get("train_seconds", 0) / 3600
    lines = [
        f"# {target} {KIND_TITLES.get(meta.get('kind'), meta.get('kind', 'drafter'))}",
        "",
        f"Trained by `python -m failfast_bench.train recipe={recipe} target={target}` (see `make drafters`). "
        f"Loaded by the benchmark as `drafter.model=shipped:{ship_name}` (`drafter={'failfast|dllm' if recipe.startswith('dllm') else 'ar'}`).",
        "",
        "## What it is",
        "",
        f"- {config.get('num_hidden_layers')} decoder layers initialised from target layers {training.get('init_layers')}, "
        f"plus the final norm{' and a learned mask embedding' if meta.get('kind') == 'block_diffusion' else ''}; "
        f"hidden size {config.get('hidden_size')}, model type `{config.get('model_type')}`.",
        "- Token embeddings and LM head are the target's (shared, frozen, not stored here): this file holds only what "
        f"differs from the target, in bf16 ({size_mb:.1f} MB).",
    ]
    if meta.get("kind") == "block_diffusion":
        lines.append(
            f"- Block diffusion: block size {meta.get('block_size')}, mask id {meta.get('mask_token_id')} (past the target's vocabulary; "
            "its embedding is `mask_embedding`), block-causal attention, token shift (row i-1 predicts position i)."
        )
    if meta.get("feature_layers"):
        lines.append(
            f"- Target-conditioned: a context row p adds a projection of the target's outputs of layers {meta['feature_layers']} at "
            "position p-1 (RMSNorm over the concatenated taps, then a linear map to the hidden size: `feature_norm`, `feature_fuse`); "
            "draft and mask rows get none. The verifier computes those taps anyway (`drafters/conditioned_model.py`)."
        )
    lines += [
        "",
        "## Data",
        "",
        "- Prompts: GSM8K **train** questions in the target's chat template under the paper's `math` template "
        "(plus `code`/`chat` renderings when generated); GSM8K test, HumanEval and MT-Bench are never used "
        "(overlaps are dropped, and a test checks it). Train lines with `line % 64 == 7` are held out.",
        *([f"- Further prompt sources (`train/prompt_sources.py`; same held-out rule on their indices; prompts sharing a 13-word "
           f"sequence with an evaluation prompt dropped): {', '.join(s for s in data_stats['by_source'] if s != GSM8K_SOURCE)}; "
           f"batches drew them with weights {training.get('loop_config', {}).get('source_weights') or 'proportional to their sizes'}."]
          if data_stats and len(data_stats.get("by_source", {})) > 1 else []),
        "- Targets: the target's own greedy responses (≤ 256 new tokens, bf16, batched) and its top-16 log-probabilities at "
        "every response position (soft targets).",
    ]
    if data_stats:
        lines.append(
            f"- Response cache at shipping time: {data_stats.get('prompts')} prompts, {data_stats.get('response_tokens')} response tokens "
            f"({data_stats.get('shards')} of {data_stats.get('of_shards')} planned shards; {data_stats.get('generation_seconds')} s of generation)."
        )
        for source, stats in (data_stats.get("by_source") or {}).items():
            lines.append(f"  - {source}: {stats.get('prompts')} prompts, {stats.get('response_tokens')} response tokens ({stats.get('shards')} of {stats.get('of_shards')} shards)")
    lines += [
        "",
        "## Training",
        "",
        f"- Steps: {training.get('steps')} (batch {training.get('loop_config', {}).get('batch_size')}), examples seen "
        f"{training.get('examples_seen')} (pool {training.get('pool_size')} examples), input tokens processed {training.get('input_tokens_seen')}, "
        f"loss positions {training.get('loss_targets_seen')}.",
        f"- Wall time: {training.get('train_seconds')} s ({hours:.2f} h) of training steps on the machine that trained it "
        "(2 shared CPU cores, bf16 autocast), evaluation not included.",
    ]
    warm = training.get("warm_start")
    chain = lineage(training)
    if warm and not warm.get("recipe"):
        lines.append(
            f"- Training history: {'at least ' if chain.get('incomplete') else ''}{chain['steps_total']} steps of this recipe in "
            f"{chain['runs']} runs, each warm-started from the previous one's export with a fresh optimizer and learning-rate "
            f"schedule (this run: {training.get('steps')} steps). The examples, tokens and seconds above are totals over those "
            "runs (they carry over a warm start); the steps are this run's."
        )
    base = chain.get("base")
    if base:
        lines.append(
            f"- Warm start: the chain began from the `{base.get('recipe')}` recipe's drafter ({base.get('steps')} steps, "
            f"{base.get('train_seconds')} s, {base.get('examples_seen')} examples), not counted above; total cost = both."
        )
    lines += [
        f"- Recipe config: `{json.dumps(training.get('recipe_config'), sort_keys=True)}`",
        f"- Loop config: `{json.dumps({k: v for k, v in (training.get('loop_config') or {}).items() if k != 'run_dir'}, sort_keys=True)}`",
        "",
        "## Held-out quality (agreement with the target)",
        "",
        f"Measured at step {heldout.get('step')} on {training.get('eval_config', {}).get('examples')} held-out GSM8K-train questions "
        "(`math` template) against the target's bf16 greedy responses:",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key, value in heldout.items():
        if key in ("step", "train_seconds", "eval_seconds", "position_accuracy"):
            continue
        lines.append(f"| {key} | {_fmt(value)} |")
    if "position_accuracy" in heldout:
        lines.append(f"| accuracy by offset from the frontier (one pass, all masked) | {heldout['position_accuracy']} |")
    lines += [
        "",
        "Definitions: `top1` = the drafter's next-token guess equals the target's greedy token; "
        "`one_pass_accepted` = leading correct positions above θ = 0.05 in one denoising pass; "
        "`failfast_tokens_per_round` = tokens per verification round (incl. the bonus/correction token) of the real "
        "FailFast drafter (θ = 0.05, τ = 0.45, N = 10, N_max = 60) simulated on held-out responses; "
        "`ar_sf_K_tokens_per_round` = the same for a fixed-length AR draft of K tokens.",
    ]
    if log_path is not None and Path(log_path).exists():
        evals = [json.loads(line) for line in Path(log_path).read_text().splitlines() if '"kind": "eval"' in line]
        if evals:
            keys = [k for k in ("top1", "one_pass_accepted", "failfast_tokens_per_round", "ar_sf_8_tokens_per_round") if k in evals[-1]]
            lines += ["", "## Learning curve (held-out)", "", "| step | train s | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
            for e in evals:
                lines.append(f"| {e['step']} | {e.get('train_seconds')} | " + " | ".join(_fmt(e.get(k)) for k in keys) + " |")
    lines.append("")
    path = directory / "README.md"
    path.write_text("\n".join(lines))
    return path
