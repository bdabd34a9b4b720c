"""Drafter registry: builds the drafter a config names, loading its model and checking its tokenizer."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..config import ConfigError
from .base import Draft, Drafter, VanillaDrafter, Verdict

SHIPPED_ROOT = Path(__file__).resolve().parents[1] / "shipped"
FAMILIES = ("vanilla", "ar", "dllm", "failfast", "eagle3")
# Which shipped drafter directory serves each family.
SHIPPED_KIND = {"ar": "ar", "dllm": "dllm", "failfast": "dllm", "eagle3": "eagle3"}

__all__ = ["Draft", "Drafter", "Verdict", "VanillaDrafter", "build_drafter", "resolve_drafter_model", "config_name"]


def shipped_dir(target_name: str, kind: str) -> Path:
    return SHIPPED_ROOT / target_name / kind


def resolve_drafter_model(cfg) -> Optional[str]:
    """The drafter's model string after defaults: ``drafter.model``, else the target's per-family default.

    ``shipped:<kind>`` becomes the shipped directory for this target (clear error if it was never trained);
    ``target`` means the target itself. Runs before any model loads.
    """
    d = cfg.drafter
    if d.name == "vanilla":
        return None
    model = d.model if d.model is not None else (cfg.target.drafters or {}).get(d.name)
    if model is None:
        raise ConfigError(
            f"drafter={d.name} needs drafter.model (a hub id, a local directory, or 'target'); "
            f"target {cfg.target.name} has no default {d.name} drafter"
        )
    if model.startswith("shipped:"):
        kind = model.split(":", 1)[1]
        path = shipped_dir(cfg.target.name, kind)
        if not (path / "config.json").exists():
            raise ConfigError(
                f"no shipped {kind} drafter for target {cfg.target.name} at {path}; train it with `make drafters` "
                f"(python -m failfast_bench.train recipe={kind}) or set drafter.model=<hub id|dir>"
            )
        model = str(path)
    if getattr(d, "draft_vocab", False) and Path(model).is_dir():
        from .draft_vocab import read_draft_vocab

        read_draft_vocab(model)  # refused here, before any model loads, when the file is missing or empty
    return model


def drafter_revision(d) -> Optional[str]:
    """``drafter.revision`` (configs saved before the key existed have none)."""
    return getattr(d, "revision", None)


def config_name(d) -> str:
    """The paper's configuration name (paper-reference §4.2), extended to EAGLE-3, vanilla and prefix trees."""
    if d.name in ("dllm", "failfast") and getattr(d, "tree", False):
        return _chain_name(d) + f"_tree_k{d.tree_k}_t{d.tree_threshold:g}_b{d.tree_branch_len}_p{d.tree_branch_passes}"
    return _chain_name(d)


def _chain_name(d) -> str:
    if d.name == "vanilla":
        return "vanilla"
    # DiffuSpec's path search changes every drafted token: its own suffix, before the vocabulary's.
    suffix = ("_cps" if getattr(d, "cps", False) else "") + ("_dv" if getattr(d, "draft_vocab", False) else "")
    if d.name == "failfast":
        base = f"dllm_{d.theta:g}_df_{d.tau:g}_{d.n_max}_{d.n}"
        return (base if d.mode == "faithful" else base + "_clean") + suffix
    policy = getattr(d, "policy", None)
    if d.name == "dllm" and policy in ("cost_aware", "adaptive"):
        base = (f"dllm_{d.theta:g}_cost_{d.n_max}_{d.n}" if policy == "cost_aware"
                else f"dllm_{d.theta:g}_adl_{d.adl_k_min}_{d.adl_k_max}_{d.adl_delta}")
        return (base if d.mode == "faithful" else base + "_clean") + suffix
    if d.name == "dllm":
        return f"dllm_{d.theta:g}_sf_{d.spec_len}" + suffix
    if d.name == "ar":
        return f"ar_None_df_{d.tau:g}_{d.n_max}_{d.n}" if d.dynamic else f"ar_None_sf_{d.spec_len}"
    if d.name == "eagle3":
        return f"eagle3_tree_{d.depth}_{d.top_k}_{d.total_tokens}" if d.tree else f"eagle3_chain_{d.spec_len}"
    raise ConfigError(f"unknown drafter {d.name!r}; valid: {', '.join(FAMILIES)}")


def build_drafter(cfg, target_model, target_tokenizer, stop_ids: list[int], device, dtype) -> Drafter:
    """Instantiate the configured drafter next to an already-loaded target.

    ``dtype`` is the target's; the drafter runs in ``drafter.dtype`` (which defaults to it).
    """
    from ..models import check_shared_tokenizer, load_causal_lm, load_tokenizer, pick_dtype, resolve_source

    d = cfg.drafter
    if d.name == "vanilla":
        return VanillaDrafter()
    dtype = pick_dtype(d.dtype, device) if getattr(d, "dtype", None) else dtype
    model_ref = resolve_drafter_model(cfg)
    if d.name == "ar":
        from .ar import ARDrafter

        if model_ref == "target":
            model = target_model
        else:
            src = resolve_source(model_ref, revision=drafter_revision(d))
            check_shared_tokenizer(target_tokenizer, _maybe_tokenizer(src, load_tokenizer), model_ref)
            model = _load_ar(src, target_model, dtype, device, load_causal_lm)
        from ..sampling import sampling_of

        return ARDrafter(model, spec_len=d.spec_len, dynamic=d.dynamic, tau=d.tau, n=d.n, n_max=d.n_max, stop_ids=tuple(stop_ids),
                         sampling=sampling_of(cfg), vocab_limit=int(target_model.config.vocab_size))
    if d.name in ("dllm", "failfast"):
        from . import dllm

        return dllm.build(cfg, model_ref, target_model, target_tokenizer, stop_ids, device, dtype)
    if d.name == "eagle3":
        from . import eagle3

        return eagle3.build(cfg, model_ref, target_model, target_tokenizer, stop_ids, device, dtype)
    raise ConfigError(f"unknown drafter {d.name!r}; valid: {', '.join(FAMILIES)}")


def _maybe_tokenizer(src, load_tokenizer) -> Any:
    """The drafter's own tokenizer when it ships one (project drafters reuse the target's and ship none)."""
    path = Path(src.path)
    if src.is_local and not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")) and not src.gguf_file:
        return None
    return load_tokenizer(src)


def _load_ar(src, target_model, dtype, device, load_causal_lm):
    path = Path(src.path)
    if src.is_local and (path / "config.json").exists():
        import json

        meta = json.loads((path / "config.json").read_text()).get("failfast_bench")
        if meta and meta.get("shares_target_embeddings"):
            from .shared_trunk import load_shared_trunk_lm

            return load_shared_trunk_lm(path, target_model, dtype=dtype, device=device)
    return load_causal_lm(src, dtype, device)
