"""The plan of a run or sweep, and every problem that can be found, before hours of GPU time are spent.

    python -m failfast_bench.doctor [-m] [overrides ...]        # the same arguments as python -m failfast_bench

Prints, without loading any weights: the jobs (and which are already complete), the target and drafter with
their resolved hub revisions, parameter counts and memory in the run's dtype, the devices and the per-GPU
share of the weights, the questions and where they come from, whether the vanilla reference will be reused,
and a wall-time bound from the hardware profile. Then every problem the per-job checks find (the same
checks a run makes before it loads anything). Exit status: 0 when no problem was found, 1 otherwise.
"""
from __future__ import annotations

import sys
from typing import Any, Optional

# A job's wall time is bounded by decoding every question to max_new_tokens at the target's step time,
# once for the vanilla reference (unless reused) and at most once more for the method (speedup >= 1 is
# not assumed: a bound, not a prediction).


def config_parameter_estimate(config: dict) -> Optional[int]:
    """Parameters of a decoder-only transformer from its config.json alone (for model types transformers
    cannot build without remote code, such as Fast_dLLM_Qwen): embeddings, attention with grouped KV heads and
    q/k/v biases, a gated MLP, norms, and an untied head when the config says so."""
    try:
        hidden, layers, inter = int(config["hidden_size"]), int(config["num_hidden_layers"]), int(config["intermediate_size"])
        vocab, heads = int(config["vocab_size"]), int(config["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    head_dim = int(config.get("head_dim") or hidden // heads)
    kv = int(config.get("num_key_value_heads") or heads)
    attention = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2 + heads * head_dim + 2 * kv * head_dim
    per_layer = attention + 3 * hidden * inter + 2 * hidden
    head = 0 if config.get("tie_word_embeddings", True) else vocab * hidden
    return vocab * hidden + layers * per_layer + hidden + head


def _config_json(src) -> Optional[dict]:
    import json
    from pathlib import Path

    from huggingface_hub import try_to_load_from_cache

    path = Path(src.path) / "config.json" if src.is_local else try_to_load_from_cache(src.path, "config.json", revision=src.revision)
    try:
        return json.loads(Path(path).read_text()) if isinstance(path, (str, Path)) and Path(path).is_file() else None
    except (OSError, ValueError):
        return None


def _model_line(role: str, model: Optional[str], revision: Optional[str], dtype, trust_remote_code: bool, gpus: int) -> tuple[str, Optional[int]]:
    from . import models

    if model is None:
        return f"{role:<9} none", None
    if model == "target":
        return f"{role:<9} the target itself", None
    try:
        src = models.resolve_source(model, None, revision)
    except Exception as exc:  # noqa: BLE001 - reported as a problem by the job checks too
        return f"{role:<9} {model}: {exc}", None
    from . import hub

    # From the cache's refs only: the doctor never waits on a network.
    commit = None if src.is_local else hub.resolve_commit(src.path, revision, local_only=True)
    where = src.path if src.is_local else f"{src.path} @ {commit or (revision or 'main') + ' (not in the local Hugging Face cache: downloaded at run time)'}"
    # Only the config is read, and only from disk: the doctor never waits on a network.
    size = models.model_bytes(src, dtype, trust_remote_code) if not src.gguf_file and (src.is_local or commit) else None
    dtype_name = models.dtype_name(dtype)
    approx = ""
    if size is None and not src.gguf_file and (src.is_local or commit):
        params = config_parameter_estimate(_config_json(src) or {})
        if params:
            import torch

            size, approx = params * torch.empty((), dtype=dtype).element_size(), "~"
    if size is None:
        return f"{role:<9} {where}; size unknown until its config is available", None
    per_gpu = f", {models._size(size / gpus)} per GPU over {gpus}" if gpus > 1 else ""
    return f"{role:<9} {where}; {approx}{models._size(size)} of weights in {dtype_name}{per_gpu}", size


def _device_lines(cfg) -> tuple[list[str], int]:
    import torch

    from . import models

    device = models.pick_device(cfg.run.device) if cfg.run.device != "cuda" or models.visible_gpu_count() else None
    profile_gpus = int(cfg.hardware.get("gpus", 1) or 1)
    if device is None or device.type != "cuda":
        planned = cfg.run.gpus or profile_gpus
        here = "no CUDA device here: " + ("this run would use the CPU" if cfg.run.device != "cuda" else "run.device=cuda cannot start")
        return [f"devices   {here}; on a GPU node: {planned} GPU(s) (run.gpus={cfg.run.gpus}, hardware {cfg.hardware.name} asks Slurm for {profile_gpus})"], planned
    gpus = models.run_gpus(cfg.run.device, cfg.run.gpus, device)
    lines = ["devices   " + ", ".join(f"GPU{i} {torch.cuda.get_device_name(i)} ({models._size(models.free_gpu_memory(i))} free)" for i in gpus)]
    return lines, max(len(gpus), 1)


def _question_line(cfg) -> str:
    from . import data

    questions, source = data.load_questions(cfg.dataset, offline_default=str(cfg.target.model).startswith("asset:"))
    ids = [q.index for q in questions]
    shown = f"{ids[0]}-{ids[-1]}" if ids == list(range(ids[0], ids[0] + len(ids))) and len(ids) > 2 else ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
    rev = f" @ {source.revision}" if source.revision else ""
    line = f"questions {cfg.dataset.name}: {len(ids)} (ids {shown}) from {source.kind} {source.location}{rev}; template {cfg.dataset.template}"
    if source.fallback:
        line += f"\n          NOTE {source.fallback}"
    return line


def _estimate_line(cfg, n_jobs: int, vanilla_policy: str) -> str:
    from .latency import HardwareProfile
    from omegaconf import OmegaConf

    profile = HardwareProfile.from_mapping(OmegaConf.to_container(cfg.hardware, resolve=True))
    try:
        step_ms = profile.step_ms(cfg.target.latency_key)
    except KeyError:
        return f"estimate  no step time for {cfg.target.latency_key} in hardware {profile.name}: measure one with python -m failfast_bench.profile"
    n_q = cfg.dataset.num_questions or 0
    decode = n_q * cfg.run.max_new_tokens * step_ms / 1000.0
    vanilla_runs = 0 if vanilla_policy == "never" else (1 if vanilla_policy == "reuse" else n_jobs)
    total = decode * (n_jobs + vanilla_runs)
    priced_as = profile.target_key(cfg.target.latency_key)
    as_note = "" if priced_as == cfg.target.latency_key else f", priced as {priced_as}: no constant for {cfg.target.latency_key}"
    span = f"{total / 3600:.1f} h" if total >= 3600 else f"{total / 60:.1f} min"
    return (
        f"estimate  at most {span}: {n_jobs} job(s) + {vanilla_runs} vanilla reference pass(es), each <= {n_q} questions x "
        f"{cfg.run.max_new_tokens} tokens x {step_ms:g} ms ({profile.name}{as_note}) = {decode / 60:.1f} min"
    )


def plan(argv: list[str]) -> tuple[str, list[str]]:
    """(the plan as text, the problems found) for the command line of a run or a ``-m`` sweep."""
    from . import models, vanilla
    from .cli import _check_job, _unknown_group_option, compose, sweep_jobs
    from .drafters import resolve_drafter_model
    from .runner import run_dir_for
    from . import trace

    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if not a.startswith("-")]
    problem = _unknown_group_option(overrides)
    if problem:
        return "", [problem]
    jobs = sweep_jobs(overrides) if multirun else [overrides]
    by_problem: dict[str, list[str]] = {}
    for job in jobs:
        found = _check_job(job)
        if found:
            by_problem.setdefault(found, []).append(" ".join(a for a in job if a not in overrides))
    # One line per distinct problem: a bad setting shared by every job of a grid is one problem, not 18.
    problems = [
        found if swept == [""] else (f"all {len(jobs)} jobs: {found}" if len(swept) == len(jobs) > 1 else f"jobs [{'; '.join(swept)}]: {found}")
        for found, swept in by_problem.items()
    ]
    cfg = compose(jobs[0])
    states = [("complete" if trace.is_complete(run_dir_for(compose(j))) else "to run") for j in jobs]
    lines = [f"plan      {len(jobs)} job(s): {states.count('complete')} complete (skipped), {states.count('to run')} to run"]
    if multirun and len(jobs) > 1:
        swept_keys = sorted({a.split("=", 1)[0] for j in jobs for a in j if a not in overrides})
        lines.append(f"          sweep over {', '.join(swept_keys)}; first job shown below")
    device_lines, n_gpus = _device_lines(cfg)
    device_type = "cuda" if n_gpus and "no CUDA" not in device_lines[0] else "cpu"
    run_dtype = models.resolve_dtype_name(cfg.run.dtype, "cuda" if device_type == "cuda" else cfg.run.device)
    drafter_dtype = models.resolve_dtype_name(cfg.drafter.get("dtype", cfg.run.dtype), "cuda" if device_type == "cuda" else cfg.run.device)
    import torch

    spread = n_gpus if device_type == "cuda" or not str(cfg.target.model).startswith("asset:") else 1
    target_line, _ = _model_line("target", cfg.target.model, cfg.target.revision, getattr(torch, run_dtype), cfg.target.trust_remote_code, spread)
    lines.append(target_line)
    try:
        drafter_model = resolve_drafter_model(cfg)
    except Exception as exc:  # noqa: BLE001 - already a problem of the job checks
        drafter_model = None
        lines.append(f"drafter   {cfg.drafter.name}: {exc}")
    else:
        line, _ = _model_line("drafter", drafter_model, cfg.drafter.get("revision"), getattr(torch, drafter_dtype), False, 1)
        lines.append(line.replace("drafter  ", f"drafter   {cfg.drafter.name}:", 1) + (" (on the target's first device)" if drafter_model not in (None, "target") else ""))
    lines.append(f"dtype     target {run_dtype}, drafter {drafter_dtype} (run.dtype={cfg.run.dtype})")
    lines += device_lines
    try:
        lines.append(_question_line(cfg))
    except Exception as exc:  # noqa: BLE001 - already a problem of the job checks
        lines.append(f"questions {cfg.dataset.name}: {exc}")
    policy = vanilla.policy(cfg.run.measure_vanilla, device_type)
    what = {"always": "measured in every job (side by side)", "reuse": "measured once per setup and reused by later jobs", "never": "not measured"}
    gpu_note = " here; reused across jobs on a GPU node" if device_type == "cpu" and str(cfg.run.measure_vanilla) == "auto" else ""
    lines.append(f"vanilla   {what[policy]}{gpu_note} (run.measure_vanilla={cfg.run.measure_vanilla})")
    # The bound prices the run on the profile's hardware: a GPU profile's jobs reuse vanilla under auto.
    priced_on = "cuda" if int(cfg.hardware.get("gpus", 0) or 0) > 0 else "cpu"
    lines.append(_estimate_line(cfg, states.count("to run"), vanilla.policy(cfg.run.measure_vanilla, priced_on)))
    return "\n".join(lines), problems


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    text, problems = plan(argv)
    if text:
        print(text)
    print(f"problems  {len(problems)}" + "".join(f"\n  - {p}" for p in problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
