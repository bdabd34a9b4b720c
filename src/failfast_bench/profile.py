"""Measure a hardware latency profile on this machine and write it as a ``conf/hardware`` YAML.

    python -m failfast_bench.profile [target=smollm2-135m] [run.dtype=float32] [profile.name=cpu] \
        [profile.drafters=ar,dllm,failfast,eagle3] ...

With ``profile.drafters`` naming a subset, only those drafters' pass times are measured and merged; the
profile's target timings are kept.

Measures, with the run's dtype and threads: the target's decode step (one token on a warm KV cache), the
target's verification time for k = 1 … 64 new tokens on a ``context``-token cache (median of ``repeats``),
and the per-pass time of every drafter family that is available for the target (drafting real rounds of a
GSM8K-style prompt and dividing drafter forward time by drafter passes).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import yaml

from .cli import CONF_DIR, check_command_line, compose, fail

VERIFY_KS = (1, 2, 4, 8, 16, 32, 64)
FAMILIES = ("ar", "dllm", "failfast", "eagle3")


def _median_forward_ms(model, context: list[int], k: int, repeats: int) -> float:
    import torch
    from transformers import DynamicCache

    from .models import input_device, model_devices
    from .verify import ForwardTimer, crop_cache

    cache = DynamicCache(config=model.config)
    device, devices = input_device(model), model_devices(model)
    timer = ForwardTimer()  # synchronises every GPU the model spans: on CUDA a bare clock times kernel launches
    with torch.inference_mode():
        model(input_ids=torch.tensor([context], device=device), past_key_values=cache, use_cache=True)
        new = torch.tensor([[(context[i % len(context)]) for i in range(k)]], device=device)
        times = []
        for _ in range(repeats + 1):
            with timer.measure(devices):
                model(input_ids=new, past_key_values=cache, use_cache=True)
            times.append(timer.last)
            crop_cache(cache, len(context))
    return 1000 * statistics.median(times[1:])


def _drafter_pass_ms(cfg, family: str, target, tokenizer, stop_ids, device, dtype, prompt: list[int], rounds: int):
    from omegaconf import OmegaConf

    from . import models
    from .drafters import build_drafter
    from .engine import generate
    from .verify import TargetVerifier

    sub = OmegaConf.merge(cfg, {"drafter": {"name": family}})
    drafter = build_drafter(sub, target, tokenizer, stop_ids, models.input_device(target), dtype)
    taps = getattr(drafter, "target_feature_layers", ())
    generate(TargetVerifier(target, feature_layers=taps), drafter, prompt, 16, stop_ids)  # warm-up
    gen = generate(TargetVerifier(target, feature_layers=taps), drafter, prompt, rounds * 8, stop_ids)
    passes = sum(r.drafter_passes for r in gen.rounds)
    seconds = sum(r.drafter_forward_seconds for r in gen.rounds)
    return 1000 * seconds / passes if passes else None


def measure(cfg, context_len: int = 200, repeats: int = 7, families=FAMILIES) -> dict:
    import torch
    from omegaconf import OmegaConf

    from . import data, models

    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = models.pick_device(cfg.run.device)
    dtype = models.pick_dtype(cfg.run.dtype, device)
    gpus = models.run_gpus(cfg.run.device, OmegaConf.select(cfg, "run.gpus", default=None), device)
    src = models.resolve_source(cfg.target.model, cfg.target.gguf_file, cfg.target.revision)
    tokenizer = models.load_tokenizer(src)
    target = models.load_causal_lm(src, dtype, device, gpus=gpus)
    stop_ids = models.stop_token_ids(tokenizer, target.config, list(cfg.target.eos_token_ids))
    questions, _ = data.load_questions(cfg.dataset)
    prompt = data.render_conversation(tokenizer, questions[0].turns[:1], [], cfg.dataset.template)
    context = (prompt * (context_len // len(prompt) + 1))[:context_len]
    verify = {k: round(_median_forward_ms(target, context, k, repeats), 3) for k in VERIFY_KS}
    passes: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for family in families:
        try:
            ms = _drafter_pass_ms(cfg, family, target, tokenizer, stop_ids, device, dtype, prompt, rounds=6)
        except Exception as exc:  # noqa: BLE001 - a missing drafter is reported, not fatal
            skipped[family] = str(exc).splitlines()[0][:200]
            continue
        if ms is not None:
            passes[family] = round(ms, 3)
    key = cfg.target.latency_key
    return {
        "target_step_ms": {key: verify[1]},
        "verify_ms": {key: verify},
        "drafter_pass_ms": passes,
        "measured": {
            "date": time.strftime("%Y-%m-%d"),
            "dtype": str(dtype).replace("torch.", ""),
            "threads": torch.get_num_threads(),
            "torch": str(torch.__version__),
            "context_tokens": context_len,
            "repeats": repeats,
            "device": models.device_identity(target),  # cpu, or cuda:<GPU model>
            "gpus": len(gpus),
            "drafters_skipped": skipped,
        },
    }


def write_profile(name: str, measured: dict, path: Path | None = None) -> Path:
    """Merge ``measured`` into ``conf/hardware/<name>.yaml`` (other targets' entries are kept)."""
    from .manifest import cpu_name

    path = path or CONF_DIR / "hardware" / f"{name}.yaml"
    existing = yaml.safe_load(path.read_text()) if path.exists() else {}
    existing = existing or {}
    out = {
        "defaults": ["hardware_schema", "_self_"],
        "name": name,
        "description": f"Measured on {cpu_name()} by python -m failfast_bench.profile",
        "drafter_pass_ms": {**(existing.get("drafter_pass_ms") or {}), **measured["drafter_pass_ms"]},
        "target_step_ms": {**(existing.get("target_step_ms") or {}), **measured["target_step_ms"]},
        "verify_ms": {**(existing.get("verify_ms") or {}), **measured["verify_ms"]},
        "fallback_target": existing.get("fallback_target"),
        # GPUs one run uses on this hardware (0 = a CPU profile); Slurm and the doctor's estimate read it.
        "gpus": int(measured["measured"].get("gpus", existing.get("gpus", 0)) or 0),
        "measured": {**(existing.get("measured") or {}), **{k: measured["measured"] for k in measured["target_step_ms"]}},
    }
    if out["fallback_target"] is None:
        out["fallback_target"] = next(iter(measured["target_step_ms"]))
    from .trace import write_text

    header = "# Written by `python -m failfast_bench.profile`; rerun it to refresh. Times in ms.\n"
    write_text(header + yaml.safe_dump(out, sort_keys=False), path)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = "cpu"
    families = FAMILIES
    rest = []
    for a in argv:
        if a.startswith("profile.name="):
            name = a.split("=", 1)[1]
        elif a.startswith("profile.drafters="):
            families = tuple(f for f in a.split("=", 1)[1].split(",") if f)
            unknown = sorted(set(families) - set(FAMILIES))
            if unknown:
                fail(f"unknown profile.drafters {unknown}; valid: {', '.join(FAMILIES)}")
        else:
            rest.append(a)
    problem = check_command_line(rest + ["drafter=vanilla"])
    if problem:
        fail(problem)
    cfg = compose(rest)
    measured = measure(cfg, families=families)
    existing = CONF_DIR / "hardware" / f"{name}.yaml"
    if families != FAMILIES and existing.exists():
        # Adding drafters to a profile: keep its target timings (measured with every drafter, maybe on a quieter machine).
        old = yaml.safe_load(existing.read_text()) or {}
        key = cfg.target.latency_key
        if key in (old.get("verify_ms") or {}):
            measured["target_step_ms"] = {key: old["target_step_ms"][key]}
            measured["verify_ms"] = {key: old["verify_ms"][key]}
            before = dict((old.get("measured") or {}).get(key) or {})
            skipped = {k: v for k, v in (before.get("drafters_skipped") or {}).items() if k not in families}
            measured["measured"] = {**before, "drafters_skipped": {**skipped, **measured["measured"]["drafters_skipped"]},
                                    f"drafters_added_{time.strftime('%Y-%m-%d')}": sorted(measured["drafter_pass_ms"])}
    path = write_profile(name, measured)
    print(yaml.safe_dump(measured, sort_keys=False))
    print(f"[profile] wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
