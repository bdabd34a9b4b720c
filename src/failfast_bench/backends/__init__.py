"""Measured serving-engine backends for EAGLE-3 (GPU only, optional): vLLM runs it as a chain, SGLang as
a dynamic tree, each compared with the same engine's vanilla decoding, as the paper did (§5, §9.5).

``python -m failfast_bench.backends --engine vllm|sglang [engine flags] [Hydra overrides]`` takes the target,
the head (``drafter.model``), the chain length (``drafter.spec_len``), the tree shape (``drafter.depth``,
``drafter.top_k``, ``drafter.total_tokens``), the dataset and ``run.max_new_tokens`` from the usual config.
Without the engine package or a CUDA GPU it stops with one clear line.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from omegaconf import OmegaConf

from .base import EngineSettings, EngineUnavailable, Server, TpotResult, measure_tpot, tensor_parallel_size

ENGINES = ("vllm", "sglang")

__all__ = ["ENGINES", "EngineSettings", "EngineUnavailable", "compare", "engine_module", "settings_from_config"]


def engine_module(engine: str):
    if engine == "vllm":
        from . import vllm

        return vllm
    if engine == "sglang":
        from . import sglang

        return sglang
    raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")


def settings_from_config(cfg, **engine_overrides) -> EngineSettings:
    """Engine settings from a composed run config: target, head, the EAGLE-3 shape of ``drafter`` and the
    tensor-parallel size (``run.gpus``; null = every visible GPU, the harness's own multi-GPU setting)."""
    from ..drafters import resolve_drafter_model
    from ..models import resolve_source

    if cfg.drafter.name != "eagle3":
        raise ValueError(f"engine backends run EAGLE-3 only; got drafter={cfg.drafter.name}")
    target = resolve_source(cfg.target.model, cfg.target.gguf_file, cfg.target.revision)
    if target.gguf_file:
        raise ValueError("engine backends need a safetensors target (hub id or directory), not a GGUF file")
    d = cfg.drafter
    fields = dict(
        target=target.path,
        head=resolve_drafter_model(cfg),
        num_speculative_tokens=d.spec_len,
        num_steps=d.depth,
        eagle_topk=d.top_k,
        num_draft_tokens=d.total_tokens,
        tensor_parallel=tensor_parallel_size(OmegaConf.select(cfg, "run.gpus", default=None)),
    )
    fields.update({k: v for k, v in engine_overrides.items() if v is not None})
    return EngineSettings(**fields)


def compare(engine: str, settings: EngineSettings, prompts: Sequence[list[int]], max_new_tokens: int, log_dir: Path) -> dict:
    """Vanilla, then EAGLE-3, in the same engine (one server each, started and stopped here)."""
    module = engine_module(engine)
    module.require(settings.tensor_parallel)
    runs: dict[str, TpotResult] = {}
    extra: dict[str, object] = {}
    commands = {}
    for mode in ("vanilla", "eagle3"):
        command = module.server_command(settings, speculative=mode == "eagle3")
        commands[mode] = command
        with Server(command, settings.port, Path(log_dir) / f"{engine}_{mode}.log").start(settings.startup_timeout_s) as server:
            send = module.make_sender(server.base_url, settings.request_timeout_s)
            before = module.spec_decode_counters(server.base_url) if engine == "vllm" and mode == "eagle3" else None
            runs[mode] = measure_tpot(send, prompts, max_new_tokens)
            if before is not None:
                extra["accept_length"] = module.accept_length(before, module.spec_decode_counters(server.base_url))
    if engine == "sglang":
        extra["accept_length"] = runs["eagle3"].accept_length
    same = sum(a.text == b.text for a, b in zip(runs["vanilla"].requests, runs["eagle3"].requests))
    return {
        "engine": engine,
        "method": "eagle3_chain" if engine == "vllm" else "eagle3_tree",
        "settings": dataclasses.asdict(settings),
        "commands": commands,
        "questions": len(prompts),
        "max_new_tokens": max_new_tokens,
        "tpot_ms": {mode: round(r.tpot_ms, 4) for mode, r in runs.items()},
        "output_tokens": {mode: r.total_tokens for mode, r in runs.items()},
        "speedup": round(runs["vanilla"].tpot_ms / runs["eagle3"].tpot_ms, 4),
        "identical_outputs": same,
        **extra,
    }
