"""SGLang backend: EAGLE-3 as a dynamic tree (paper: SGLang 0.5.6.post2, ``--speculative-algorithm EAGLE3
--speculative-num-steps 8 --speculative-eagle-topk 10 --speculative-num-draft-tokens 60``, TP 2,
``--mem-fraction-static 0.8``, ``--cuda-graph-max-bs 2``; requests to the native ``/generate`` endpoint at
temperature 0, as the authors' profiler did)."""
from __future__ import annotations

import sys
import time
from typing import Optional

from .base import Completion, EngineSettings, http_json, require_engine

PIP_HINT = '"sglang[all]==0.5.6.post2"'


def server_command(s: EngineSettings, speculative: bool, python: Optional[str] = None) -> list[str]:
    cmd = [
        python or sys.executable, "-m", "sglang.launch_server",
        "--model-path", s.target,
        "--port", str(s.port),
        "--tp-size", str(s.tensor_parallel),
        "--dtype", s.dtype,
        "--context-length", str(s.max_model_len),
        "--mem-fraction-static", str(s.mem_fraction_static),
        "--cuda-graph-max-bs", str(s.cuda_graph_max_bs),
    ]
    if speculative:
        if not s.head:
            raise ValueError("the SGLang EAGLE3 server needs an EAGLE-3 head (EngineSettings.head)")
        cmd += [
            "--speculative-algorithm", "EAGLE3",
            "--speculative-draft-model-path", s.head,
            "--speculative-num-steps", str(s.num_steps),
            "--speculative-eagle-topk", str(s.eagle_topk),
            "--speculative-num-draft-tokens", str(s.num_draft_tokens),
        ]
    return cmd + list(s.extra_args)


def require(tensor_parallel: int = 1) -> None:
    require_engine("sglang", PIP_HINT, tensor_parallel=tensor_parallel)


def make_sender(base_url: str, timeout: float):
    """Greedy generation from token ids via /generate; ``spec_verify_ct`` gives the verification rounds."""

    def send(prompt_ids: list[int], max_new_tokens: int) -> Completion:
        payload = {"input_ids": prompt_ids, "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0.0}}
        t0 = time.perf_counter()
        out = http_json(base_url + "/generate", payload, timeout)
        seconds = time.perf_counter() - t0
        meta = out.get("meta_info", {})
        steps = meta.get("spec_verify_ct")
        return Completion(tokens=int(meta["completion_tokens"]), seconds=seconds, text=out.get("text", ""),
                          verify_steps=None if steps is None else int(steps))

    return send
