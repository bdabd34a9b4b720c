"""What every serving-engine backend shares: settings, the availability check, a server process we own,
a tiny HTTP client, and the time-per-output-token measurement the paper used.

The paper measured EAGLE-3 end to end in the engines (paper-reference §9.5): one request at a time,
TPT = total wall time / total output tokens over the questions (prefill included), against the same engine
without speculation. We send the harness's own rendered prompts as token ids, greedy (temperature 0).
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence


class EngineUnavailable(RuntimeError):
    """The engine cannot run here (not installed, or no GPU); the message says what to do."""


@dataclass
class EngineSettings:
    """One engine run: the target, the EAGLE-3 head and the engine's knobs (paper values by default)."""

    target: str  # hub id or local directory of the target
    head: Optional[str] = None  # EAGLE-3 head (hub id or directory); None = vanilla only
    tensor_parallel: int = 2  # paper: TP 2
    port: int = 30000
    dtype: str = "auto"
    max_model_len: int = 8192
    # vLLM chain (paper: num_speculative_tokens 5, draft TP 1)
    num_speculative_tokens: int = 5
    draft_tensor_parallel: int = 1
    gpu_memory_utilization: float = 0.8
    enforce_eager: bool = False  # the paper's vanilla TPT constants used --enforce-eager
    # SGLang tree (paper: steps 8, top-k 10, 60 draft tokens, mem-fraction 0.8, cuda-graph-max-bs 2)
    num_steps: int = 8
    eagle_topk: int = 10
    num_draft_tokens: int = 60
    mem_fraction_static: float = 0.8
    cuda_graph_max_bs: int = 2
    extra_args: list[str] = field(default_factory=list)
    startup_timeout_s: float = 1800.0
    request_timeout_s: float = 600.0


def require_engine(module: str, pip_hint: str, need_gpu: bool = True, tensor_parallel: int = 1) -> None:
    """Refuse early, with one line, when the engine package, a CUDA GPU, or the ``tensor_parallel`` GPUs the
    engine would shard the target over are missing (the engine itself fails minutes later, deep in its log)."""
    if importlib.util.find_spec(module) is None:
        raise EngineUnavailable(f"{module} is not installed here; on a GPU machine: pip install {pip_hint}")
    if need_gpu:
        import torch

        if not torch.cuda.is_available():
            raise EngineUnavailable(f"{module} needs a CUDA GPU and this machine has none; run the engine backend on a GPU host")
        visible = torch.cuda.device_count()
        if tensor_parallel > visible:
            raise EngineUnavailable(
                f"{module} with tensor parallel size {tensor_parallel} (run.gpus) needs {tensor_parallel} GPUs but {visible} "
                f"are visible; set run.gpus={visible} or make more GPUs visible (CUDA_VISIBLE_DEVICES)"
            )


def tensor_parallel_size(requested) -> int:
    """``run.gpus``, or every visible GPU when it is null (at least 1, so a GPU-less host is refused as such)."""
    if requested is not None:
        return int(requested)
    import torch

    return max(1, torch.cuda.device_count() if torch.cuda.is_available() else 0)


# ------------------------------------------------------------------------------------------------
def http_json(url: str, payload: Optional[dict] = None, timeout: float = 600.0) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="GET" if data is None else "POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode() or "{}")


def http_text(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


class Server:
    """An engine server subprocess that this process started and stops (its own process group)."""

    def __init__(self, command: Sequence[str], port: int, log_path: Path, env: Optional[dict] = None):
        self.command = list(command)
        self.port = port
        self.log_path = Path(log_path)
        self.env = env
        self.proc: Optional[subprocess.Popen] = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float) -> "Server":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **(self.env or {})})
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine server exited with code {self.proc.returncode} during start-up; log: {self.log_path}\n{self.log_tail()}")
            try:
                urllib.request.urlopen(self.base_url + "/health", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"engine server not ready after {timeout_s:.0f} s; log: {self.log_path}")

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


# ------------------------------------------------------------------------------------------------
@dataclass
class Completion:
    tokens: int
    seconds: float
    text: str = ""
    verify_steps: Optional[int] = None  # engine-reported verification rounds (SGLang spec_verify_ct)


@dataclass
class TpotResult:
    """Paper TPT: Σ wall time / Σ output tokens (ms), plus per-request details."""

    tpot_ms: float
    total_seconds: float
    total_tokens: int
    requests: list[Completion]

    @property
    def accept_length(self) -> Optional[float]:
        """Mean tokens per verification round (bonus included), when the engine reports rounds."""
        steps = [c.verify_steps for c in self.requests]
        if not steps or any(s is None for s in steps) or sum(steps) == 0:
            return None
        return sum(c.tokens for c in self.requests) / sum(steps)


def measure_tpot(send: Callable[[list[int], int], Completion], prompts: Sequence[list[int]], max_new_tokens: int, warmup: int = 1) -> TpotResult:
    """Send the prompts one at a time (batch size 1, as the paper); the first ``warmup`` are not counted."""
    for prompt in list(prompts)[:warmup]:
        send(prompt, min(max_new_tokens, 16))
    done = [send(prompt, max_new_tokens) for prompt in prompts]
    seconds = sum(c.seconds for c in done)
    tokens = sum(c.tokens for c in done)
    return TpotResult(1000.0 * seconds / max(tokens, 1), seconds, tokens, done)
