"""vLLM backend: EAGLE-3 as a chain (``speculative_config`` with ``method: eagle3``; paper: vLLM 0.13.0,
``num_speculative_tokens`` 5, draft TP 1, target TP 2). vLLM runs EAGLE-3 only as a chain."""
from __future__ import annotations

import json
import sys
import time
from typing import Optional

from .base import Completion, EngineSettings, http_json, http_text, require_engine

PIP_HINT = "vllm==0.13.0"


def speculative_config(s: EngineSettings) -> dict:
    if not s.head:
        raise ValueError("speculative_config needs an EAGLE-3 head (EngineSettings.head)")
    return {
        "method": "eagle3",
        "model": s.head,
        "num_speculative_tokens": s.num_speculative_tokens,
        "draft_tensor_parallel_size": s.draft_tensor_parallel,
    }


def server_command(s: EngineSettings, speculative: bool, python: Optional[str] = None) -> list[str]:
    """The OpenAI-compatible server command, with or without the EAGLE-3 chain."""
    cmd = [
        python or sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", s.target,
        "--port", str(s.port),
        "--tensor-parallel-size", str(s.tensor_parallel),
        "--dtype", s.dtype,
        "--max-model-len", str(s.max_model_len),
        "--gpu-memory-utilization", str(s.gpu_memory_utilization),
        "--served-model-name", "target",
    ]
    if s.enforce_eager:
        cmd.append("--enforce-eager")
    if speculative:
        cmd += ["--speculative-config", json.dumps(speculative_config(s), sort_keys=True)]
    return cmd + list(s.extra_args)


def require(tensor_parallel: int = 1) -> None:
    require_engine("vllm", PIP_HINT, tensor_parallel=tensor_parallel)


def make_sender(base_url: str, timeout: float):
    """Greedy completion from token ids (the harness's rendered prompt) via /v1/completions."""

    def send(prompt_ids: list[int], max_new_tokens: int) -> Completion:
        payload = {"model": "target", "prompt": prompt_ids, "max_tokens": max_new_tokens, "temperature": 0.0}
        t0 = time.perf_counter()
        out = http_json(base_url + "/v1/completions", payload, timeout)
        seconds = time.perf_counter() - t0
        return Completion(tokens=int(out["usage"]["completion_tokens"]), seconds=seconds, text=out["choices"][0]["text"])

    return send


def spec_decode_counters(base_url: str) -> dict[str, float]:
    """vLLM's Prometheus counters for speculative decoding (drafts, draft tokens, accepted tokens)."""
    return parse_spec_metrics(http_text(base_url + "/metrics"))


def parse_spec_metrics(text: str) -> dict[str, float]:
    wanted = {
        "vllm:spec_decode_num_drafts_total": "drafts",
        "vllm:spec_decode_num_draft_tokens_total": "draft_tokens",
        "vllm:spec_decode_num_accepted_tokens_total": "accepted_tokens",
    }
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            out[wanted[name]] = out.get(wanted[name], 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def accept_length(before: dict[str, float], after: dict[str, float]) -> Optional[float]:
    """Mean tokens per round (bonus included) between two counter snapshots."""
    drafts = after.get("drafts", 0.0) - before.get("drafts", 0.0)
    if drafts <= 0:
        return None
    return 1.0 + (after.get("accepted_tokens", 0.0) - before.get("accepted_tokens", 0.0)) / drafts
