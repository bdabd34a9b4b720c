"""``python -m failfast_bench.train recipe=<dllm|ar|eagle3> target=<name> [stage=data|train|ship|eval|all] [key=value ...]``

Hydra app over ``conf/train/config.yaml`` (targets from the benchmark's ``conf/target/``). Every stage
resumes where a killed run stopped. See :mod:`failfast_bench.train` for the recipes.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

from ..cli import CONF_DIR, fail
from .prompt_sources import GSM8K_SOURCE, SOURCE_NAMES  # stdlib only: cheap at start-up

log = logging.getLogger("failfast_bench.train")
STAGES = ("data", "train", "ship", "eval", "all")
PROJECT_ROOT = Path(__file__).resolve().parents[3]


def _path(value) -> Path:
    """A config path: ``~`` expanded; relative paths are taken from the working directory, else the project root."""
    path = Path(os.path.expanduser(str(value)))
    if path.is_absolute() or path.exists():
        return path
    rooted = PROJECT_ROOT / path
    return rooted if rooted.exists() or (PROJECT_ROOT / "pyproject.toml").exists() else path


def _data_settings(cfg, heldout: bool = False):
    """Settings of the main response cache, or (``heldout``) of the small held-out evaluation cache."""
    from dataclasses import replace

    settings = _main_data_settings(cfg)
    if not heldout:
        return settings
    compact = None if settings.compact_dir is None else str(Path(settings.compact_dir) / "heldout")
    return replace(
        settings, cache_dir=str(_path(cfg.data.heldout_cache_dir)), compact_dir=compact, subset="heldout",
        templates=tuple(cfg.data.heldout_templates), max_prompts=None, time_budget_minutes=None,
    )


def _source_name(name) -> str:
    if str(name) not in SOURCE_NAMES:
        raise ValueError(f"unknown prompt source {name!r}; valid: {', '.join(SOURCE_NAMES)}")
    return str(name)


def source_store(cfg, source) -> Path:
    """The response store of one prompt source (GSM8K train: data.cache_dir; others beside it)."""
    base = _path(cfg.data.cache_dir)
    return base if _source_name(source) == GSM8K_SOURCE else base.with_name(f"{base.name}_{source}")


def _train_sources(cfg) -> list[str]:
    """train.sources (GSM8K train alone when unset)."""
    return [str(s) for s in (cfg.train.get("sources") or [GSM8K_SOURCE])]


def _train_stores(cfg) -> list[Path]:
    return [source_store(cfg, s) for s in _train_sources(cfg)]


def _main_data_settings(cfg):
    from .data import DataSettings, resolve_train_file

    d = cfg.data
    source = _source_name(d.get("source") or GSM8K_SOURCE)
    templates = tuple(d.templates) if source == GSM8K_SOURCE else tuple((d.get("source_templates") or {}).get(source) or ("chat",))
    compact = None if d.compact_dir is None else _path(d.compact_dir)
    if compact is not None and source != GSM8K_SOURCE:
        compact = compact / source
    return DataSettings(
        train_path=str(resolve_train_file(d.train_path and str(_path(d.train_path)), _path(cfg.cache_root))) if source == GSM8K_SOURCE else "",
        cache_dir=str(source_store(cfg, source)),
        source=source,
        templates=templates,
        seed=int(d.seed),
        shard_size=int(d.shard_size),
        batch_size=int(d.batch_size),
        max_new_tokens=int(d.max_new_tokens),
        topk=int(d.topk),
        heldout_every=int(d.heldout_every),
        max_prompts=None if d.max_prompts is None else int(d.max_prompts),
        dtype=str(cfg.target_dtype),
        check_evaluation_overlap=bool(d.check_evaluation_overlap),
        compact_dir=None if compact is None else str(compact),
        time_budget_minutes=d.time_budget_minutes,
    )


def _load_target(cfg):
    import torch

    from ..models import load_causal_lm, load_tokenizer, pick_device, resolve_source, stop_token_ids

    src = resolve_source(cfg.target.model, cfg.target.gguf_file, cfg.target.revision)
    tokenizer = load_tokenizer(src, cfg.target.trust_remote_code)
    device = pick_device(cfg.device)
    dtype = getattr(torch, str(cfg.target_dtype))
    model = load_causal_lm(src, dtype, device, cfg.target.trust_remote_code)
    stops = stop_token_ids(tokenizer, model.config, list(cfg.target.eos_token_ids))
    return model, tokenizer, stops, device


def stage_data(cfg, target=None):
    from .data import generate_responses

    settings = _data_settings(cfg)  # validates data.source before the target loads
    model, tokenizer, stops, _ = target or _load_target(cfg)
    if settings.source == GSM8K_SOURCE:
        # The held-out evaluation prompts first (small), so evaluation works from the first training step.
        held = generate_responses(_data_settings(cfg, heldout=True), cfg.target.name, model, tokenizer, stops, progress=cfg.progress)
        log.info("held-out cache %s: %s", held.root, held.stats())
    store = generate_responses(settings, cfg.target.name, model, tokenizer, stops, progress=cfg.progress)
    stats = store.stats()
    log.info("response cache %s: %s", store.root, stats)
    return stats


def _heldout_store(cfg) -> Path:
    """The held-out evaluation cache when generated, else the main cache (its held-out lines)."""
    held = _path(cfg.data.heldout_cache_dir)
    return held if (held / "meta.json").exists() else _path(cfg.data.cache_dir)


def _heldout(cfg, count: int, with_logits: bool = False) -> list:
    """Held-out examples of ``eval.source``: GSM8K's held-out cache (math), or another source's held-out indices."""
    from .evaluate import heldout_examples

    source = _source_name(cfg.eval.get("source") or GSM8K_SOURCE)
    if source == GSM8K_SOURCE:
        return heldout_examples(_heldout_store(cfg), count, with_logits=with_logits)
    return heldout_examples(source_store(cfg, source), count, templates=None, with_logits=with_logits)


def _eval_settings(cfg, stops):
    from .evaluate import EvalSettings

    e = cfg.eval
    return EvalSettings(
        examples=int(e.examples), points_per_example=int(e.points_per_example), sim_tokens=int(e.sim_tokens), theta=float(e.theta),
        tau=float(e.tau), n=int(e.n), n_max=int(e.n_max), sub_block_size=int(e.sub_block_size), budget=int(e.budget),
        ar_spec_lens=tuple(int(k) for k in e.ar_spec_lens), stop_ids=tuple(stops), dtype=e.get("dtype") or "",
    )


def build_recipe(cfg, model, tokenizer, stops):
    from .trunk import resolve_layers

    r = cfg.recipe
    layers = resolve_layers(r.init_layers, int(r.num_layers), int(model.config.num_hidden_layers))
    eval_settings = _eval_settings(cfg, stops)
    if r.name in ("dllm", "dllm_cond"):
        from .dllm_recipe import DllmRecipe, DllmSettings

        settings = DllmSettings(
            block_size=int(r.block_size), sub_block_size=int(r.sub_block_size), mask_token_id=r.mask_token_id,
            noisy_copies=int(r.noisy_copies), aligned_fraction=float(r.aligned_fraction), far_weight=float(r.far_weight),
            block_end_weight=float(r.block_end_weight), distill_weight=float(r.distill_weight), max_len=int(r.max_len),
        )
        if r.name == "dllm_cond":
            from ..drafters.eagle3_head import default_tap_layers
            from .conditioned_recipe import ConditionedDllmRecipe

            depth = int(model.config.num_hidden_layers)
            taps = [int(i) for i in r.feature_layers] if r.get("feature_layers") else list(default_tap_layers(depth))
            if any(not 0 <= i < depth - 1 for i in taps):
                # The last layer's output reaches the verifier only after the final norm: never tap it.
                raise ValueError(f"recipe.feature_layers={taps}: taps must be target layers 0..{depth - 2}")
            return ConditionedDllmRecipe(model, cfg.target.name, layers, settings, eval_settings, taps), layers
        return DllmRecipe(model, cfg.target.name, layers, settings, eval_settings), layers
    if r.name == "ar":
        from .ar_recipe import ArRecipe, ArSettings

        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
        settings = ArSettings(distill_weight=float(r.distill_weight), max_len=int(r.max_len))
        return ArRecipe(model, cfg.target.name, layers, settings, eval_settings, pad), layers
    raise ValueError(f"recipe={r.name!r}; valid: dllm, ar, eagle3")


def _loop_settings(cfg):
    from .loop import LoopSettings

    t = cfg.train
    return LoopSettings(
        steps=int(t.steps), batch_size=int(t.batch_size), lr=float(t.lr), min_lr_ratio=float(t.min_lr_ratio), warmup_steps=int(t.warmup_steps),
        weight_decay=float(t.weight_decay), grad_clip=float(t.grad_clip), seed=int(t.seed), autocast_bf16=bool(t.autocast_bf16),
        checkpoint_minutes=float(t.checkpoint_minutes), eval_every=int(t.eval_every), log_every=int(t.log_every),
        time_budget_minutes=t.time_budget_minutes, reload_data_minutes=float(t.reload_data_minutes), min_examples=int(t.min_examples),
        templates=None if t.templates is None else tuple(t.templates),
        store_weights=_store_weights(cfg),
    )


def _store_weights(cfg):
    """train.source_weights ({source: weight}) in the order of train.sources; None = uniform over examples."""
    weights = cfg.train.get("source_weights")
    if not weights:
        return None
    sources = _train_sources(cfg)
    unknown = sorted(set(weights) - set(sources))
    if unknown:
        raise ValueError(f"train.source_weights names {unknown}, which are not in train.sources={sources}")
    values = [float(weights.get(s, 0.0)) for s in sources]
    if any(v < 0 for v in values) or not any(v > 0 for v in values):
        raise ValueError(f"train.source_weights={dict(weights)}: weights must be >= 0 with at least one > 0")
    return tuple(values)


def _eagle3_settings(cfg):
    import dataclasses

    from omegaconf import OmegaConf

    from .eagle3 import Eagle3Settings

    fields = {f.name for f in dataclasses.fields(Eagle3Settings)}
    values = {k: v for k, v in OmegaConf.to_container(cfg.recipe, resolve=True).items() if k != "name"}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"recipe=eagle3 has no key(s) {unknown}; valid: {', '.join(sorted(fields))}")
    if values.get("betas") is not None:
        values["betas"] = tuple(values["betas"])
    values.update(threads=int(cfg.threads), checkpoint_minutes=float(cfg.train.checkpoint_minutes),
                  time_budget_minutes=cfg.train.time_budget_minutes, seed=int(cfg.train.seed))
    return Eagle3Settings(**values)


def stage_train_eagle3(cfg, target=None):
    from .eagle3 import train_eagle3

    model, tokenizer, stops, _ = target or _load_target(cfg)
    run_dir = _path(cfg.train.run_dir)
    summary = train_eagle3(_eagle3_settings(cfg), model, _path(cfg.data.cache_dir), run_dir, run_dir / "export", cfg.target.name, stops,
                           progress=cfg.progress, heldout_store_dir=_path(cfg.data.heldout_cache_dir), tokenizer=tokenizer)
    return {k: v for k, v in summary.items() if k not in ("history", "settings", "data")}


def stage_train(cfg, target=None):
    from omegaconf import OmegaConf

    from .loop import Trainer

    if cfg.recipe.name == "eagle3":
        return stage_train_eagle3(cfg, target)
    model, tokenizer, stops, _ = target or _load_target(cfg)
    recipe, layers = build_recipe(cfg, model, tokenizer, stops)
    store_dirs = _train_stores(cfg)
    describe = {
        "target": cfg.target.name,
        "target_model": str(cfg.target.model),
        "target_dtype": str(cfg.target_dtype),
        "init_layers": layers,
        "recipe_config": OmegaConf.to_container(cfg.recipe, resolve=True),
        # Machine-specific paths stay out of the shipped config.
        "loop_config": {k: v for k, v in OmegaConf.to_container(cfg.train, resolve=True).items() if k not in ("run_dir", "init_from")},
        "eval_config": OmegaConf.to_container(cfg.eval, resolve=True),
    }
    heldout_cache: list = []

    def heldout():
        if not heldout_cache:
            heldout_cache.extend(_heldout(cfg, int(cfg.eval.examples)))
        return heldout_cache

    wandb_run = None
    if cfg.wandb.enabled:
        import wandb

        wandb_run = wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity, mode=cfg.wandb.mode, config=OmegaConf.to_container(cfg, resolve=True), name=f"train-{cfg.target.name}-{cfg.recipe.name}")
    init_from = _path(cfg.train.init_from) if cfg.train.get("init_from") else None
    if init_from is not None and not (init_from / "model.safetensors").exists():
        raise FileNotFoundError(f"train.init_from={cfg.train.init_from}: no model.safetensors there")
    trainer = Trainer(
        recipe, _path(cfg.train.run_dir), store_dirs, _loop_settings(cfg), heldout, describe, progress=cfg.progress, wandb_run=wandb_run, init_from=init_from
    )
    try:
        state = trainer.run()
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    return {k: v for k, v in state.items() if k != "evals"}


def stage_ship(cfg):
    from .card import write_model_card

    run_dir = _path(cfg.train.run_dir)
    export = run_dir / "export"
    if not (export / "config.json").exists():
        raise FileNotFoundError(f"nothing to ship: {export} has no trained drafter (run stage=train first)")
    ship_dir = _path(cfg.ship_dir)
    stats = _train_data_stats(cfg)
    tmp = ship_dir.with_name(f".{ship_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(export, tmp)
    if cfg.recipe.name != "eagle3":  # the EAGLE-3 export already holds its model card
        write_model_card(tmp, run_dir / "log.jsonl", data_stats=stats, ship_name=ship_dir.name)
    if cfg.recipe.name in ("dllm", "dllm_cond") and cfg.recipe.get("draft_vocab_size"):
        _write_draft_vocab(cfg, tmp)
    if cfg.ship_int8:
        from ..drafters.weight_files import pack_file

        before, after = pack_file(tmp / "model.safetensors")
        log.info("int8-packed the shipped weights: %.1f MB -> %.1f MB", before / 1e6, after / 1e6)
        _note_packing(tmp / "README.md", before, after)
    for path in tmp.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; shipped files are package data
    if ship_dir.exists():
        shutil.rmtree(ship_dir)
    os.replace(tmp, ship_dir)
    log.info("shipped %s -> %s", export, ship_dir)
    return {"ship_dir": str(ship_dir)}


def _train_data_stats(cfg):
    """Prompts, response tokens, shards and generation time of the training stores, summed (None: no store)."""
    from .data import ResponseStore

    total: dict = {}
    by_source: dict = {}
    for source in _train_sources(cfg):
        try:
            stats = ResponseStore.open(source_store(cfg, source)).stats()
        except FileNotFoundError:
            continue
        by_source[source] = stats
        for key, value in stats.items():
            total[key] = round(total.get(key, 0) + value, 1)
    return {**total, "by_source": by_source} if total else None


def _write_draft_vocab(cfg, directory: Path) -> None:
    """The block-diffusion drafter's draft vocabulary (used with drafter.draft_vocab=true), chosen from the
    training responses the way the EAGLE-3 recipe chooses its head's."""
    from ..drafters.draft_vocab import draft_vocab_card_section, write_draft_vocab
    from .data import iter_examples
    from .eagle3 import choose_draft_vocab, vocab_coverage

    examples = []
    for store_dir in _train_stores(cfg):
        try:
            examples.extend(iter_examples(store_dir, "train", with_logits=False))
        except FileNotFoundError:
            pass
    if not examples:
        log.warning("no training responses under %s: shipping without draft_vocab.json", [str(p) for p in _train_stores(cfg)])
        return
    size = int(cfg.recipe.draft_vocab_size)
    vocab_size = int(json.loads((directory / "config.json").read_text())["vocab_size"])
    used = choose_draft_vocab(examples, size, vocab_size, always=list(cfg.target.eos_token_ids))
    coverage = vocab_coverage(examples, used)
    write_draft_vocab(directory, used.tolist(), coverage, f"the {size} most frequent target tokens of the training responses "
                      "(prompt tokens break ties, then the lowest ids): train.eagle3.choose_draft_vocab")
    log.info("draft vocabulary: %d tokens, %.2f%% of training response tokens", len(used), 100 * coverage)
    card = directory / "README.md"
    if card.exists():
        card.write_text(card.read_text().rstrip("\n") + "\n\n" + draft_vocab_card_section(len(used), coverage))


def _note_packing(card: Path, before: int, after: int) -> None:
    if card.exists():
        card.write_text(card.read_text().rstrip("\n") + (
            f"\n\n## Storage\nLarge matrices are stored int8 with one absmax scale per row "
            f"(`failfast_bench.drafters.weight_files`): {before / 1e6:.1f} MB in bf16 -> {after / 1e6:.1f} MB shipped; "
            f"they are restored to float at load.\n"))


def stage_eval(cfg):
    """Held-out metrics of the drafter in ``ship_dir``, loaded exactly as the benchmark loads it."""
    import torch

    from .evaluate import evaluate_block_diffusion, evaluate_causal

    if cfg.recipe.name == "eagle3":
        raise ValueError("stage=eval covers recipe=dllm|ar; an EAGLE-3 head's held-out metrics are in its model card (stage=train)")
    model, tokenizer, stops, device = _load_target(cfg)
    ship_dir = _path(cfg.ship_dir)
    examples = _heldout(cfg, int(cfg.eval.examples), with_logits=True)
    settings = _eval_settings(cfg, stops)
    if cfg.recipe.name in ("dllm", "dllm_cond"):
        from ..drafters.blockdiff_model import load_block_diffusion_drafter
        from .eagle3 import tap_features

        lm = load_block_diffusion_drafter(str(ship_dir), target_model=model, dtype=model.dtype, device=device, target_name=cfg.target.name)
        taps = getattr(lm, "feature_layers", ())
        metrics = evaluate_block_diffusion(lm, examples, settings, taps_of=lambda seq: tap_features(model, [seq], taps)[0] if taps else None)
    else:
        from ..drafters.shared_trunk import load_shared_trunk_lm

        metrics = evaluate_causal(load_shared_trunk_lm(ship_dir, model, dtype=model.dtype, device=device), examples, settings)
    metrics["dtype"] = str(model.dtype).replace("torch.", "")
    print(json.dumps(metrics, indent=2))
    return metrics


def run(cfg) -> dict:
    import torch

    if cfg.stage not in STAGES:
        raise ValueError(f"stage={cfg.stage!r}; valid: {', '.join(STAGES)}")
    torch.set_num_threads(int(cfg.threads))
    if cfg.stage == "data":
        return stage_data(cfg)
    if cfg.stage == "train":
        return stage_train(cfg)
    if cfg.stage == "ship":
        return stage_ship(cfg)
    if cfg.stage == "eval":
        return stage_eval(cfg)
    target = _load_target(cfg)
    out = {"data": stage_data(cfg, target)}
    out["train"] = stage_train(cfg, target)
    out["ship"] = stage_ship(cfg)
    return out


def main() -> None:
    import hydra

    from ..config import register_configs

    register_configs()
    # The training config lives in conf/train/; targets are shared with the benchmark (conf/target/).
    sys.argv.insert(1, f"hydra.searchpath=[file://{CONF_DIR}]")

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR / "train"), config_name="config")
    def app(cfg) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        try:
            result = run(cfg)
        except (ValueError, FileNotFoundError) as exc:
            fail(str(exc))
        log.info("done: %s", json.dumps(result, default=str)[:2000])

    app()


if __name__ == "__main__":
    main()
