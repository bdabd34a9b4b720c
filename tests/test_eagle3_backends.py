"""Engine backends (vLLM chain, SGLang tree): command and config construction, the clear refusal without
the engine or a GPU, and the server/measurement plumbing against a fake engine speaking SGLang's protocol."""
from __future__ import annotations

import json
import socket
import sys
import types

import pytest

from failfast_bench import backends
from failfast_bench.backends import EngineSettings, EngineUnavailable, base, sglang, vllm
from failfast_bench.backends.__main__ import main as backends_main

HEAD = "ruipeterpan/Qwen2.5-7B-Instruct_EAGLE3_UltraChat"


def _settings(**kw) -> EngineSettings:
    return EngineSettings(target="Qwen/Qwen2.5-7B-Instruct", head=HEAD, **kw)


def _value(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_vllm_chain_command_is_the_papers():
    s = _settings()
    cmd = vllm.server_command(s, speculative=True, python="python")
    assert cmd[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert _value(cmd, "--model") == "Qwen/Qwen2.5-7B-Instruct" and _value(cmd, "--tensor-parallel-size") == "2"
    spec = json.loads(_value(cmd, "--speculative-config"))
    assert spec == {"method": "eagle3", "model": HEAD, "num_speculative_tokens": 5, "draft_tensor_parallel_size": 1}
    vanilla = vllm.server_command(s, speculative=False, python="python")
    assert "--speculative-config" not in vanilla and "--enforce-eager" not in vanilla
    assert "--enforce-eager" in vllm.server_command(_settings(enforce_eager=True), speculative=False)


def test_sglang_tree_command_is_the_papers():
    cmd = sglang.server_command(_settings(), speculative=True, python="python")
    assert cmd[:3] == ["python", "-m", "sglang.launch_server"]
    expected = {
        "--speculative-algorithm": "EAGLE3", "--speculative-draft-model-path": HEAD, "--speculative-num-steps": "8",
        "--speculative-eagle-topk": "10", "--speculative-num-draft-tokens": "60", "--tp-size": "2",
        "--mem-fraction-static": "0.8", "--cuda-graph-max-bs": "2",
    }
    assert {flag: _value(cmd, flag) for flag in expected} == expected
    assert "--speculative-algorithm" not in sglang.server_command(_settings(), speculative=False)
    with pytest.raises(ValueError):
        sglang.server_command(EngineSettings(target="t"), speculative=True)


def test_settings_follow_the_run_config():
    from failfast_bench.cli import compose

    cfg = compose(["drafter=eagle3", "target=qwen2.5-7b", f"drafter.model={HEAD}", "drafter.spec_len=3", "drafter.depth=5", "drafter.top_k=4", "drafter.total_tokens=16"])
    s = backends.settings_from_config(cfg, tensor_parallel=1)
    assert (s.target, s.head, s.num_speculative_tokens) == ("Qwen/Qwen2.5-7B-Instruct", HEAD, 3)
    assert (s.num_steps, s.eagle_topk, s.num_draft_tokens, s.tensor_parallel) == (5, 4, 16, 1)


def test_missing_engine_or_gpu_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setattr(base.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EngineUnavailable, match="pip install vllm"):
        vllm.require()
    assert backends_main(["--engine", "sglang"]) == 2
    assert "sglang is not installed" in capsys.readouterr().err
    monkeypatch.setattr(base.importlib.util, "find_spec", lambda name: object())
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EngineUnavailable, match="CUDA GPU"):
        sglang.require()


def test_vllm_spec_metrics():
    text = "\n".join([
        "# HELP vllm:spec_decode_num_drafts_total drafts",
        'vllm:spec_decode_num_drafts_total{model_name="target"} 10.0',
        'vllm:spec_decode_num_accepted_tokens_total{model_name="target"} 25.0',
        'vllm:spec_decode_num_draft_tokens_total{model_name="target"} 50.0',
    ])
    after = vllm.parse_spec_metrics(text)
    assert after == {"drafts": 10.0, "accepted_tokens": 25.0, "draft_tokens": 50.0}
    assert vllm.accept_length({"drafts": 0, "accepted_tokens": 0}, after) == 3.5


FAKE_SGLANG = r"""
import json, sys, math
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def _send(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        self._send({}) if self.path == "/health" else self.send_error(404)
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = req["sampling_params"]["max_new_tokens"]
        self._send({"text": "x" * n, "meta_info": {"completion_tokens": n, "spec_verify_ct": math.ceil(n / 4)}})
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_compare_against_a_fake_engine(tmp_path, monkeypatch):
    port = _free_port()
    fake = types.SimpleNamespace(
        require=lambda tensor_parallel=1: None,
        server_command=lambda s, speculative: [sys.executable, "-c", FAKE_SGLANG, str(s.port)],
        make_sender=sglang.make_sender,
    )
    monkeypatch.setattr(backends, "engine_module", lambda engine: fake)
    result = backends.compare("sglang", _settings(port=port, startup_timeout_s=30), [[1, 2, 3], [4, 5]], 40, tmp_path)
    assert result["output_tokens"] == {"vanilla": 80, "eagle3": 80} and result["identical_outputs"] == 2
    assert result["accept_length"] == 4.0 and result["speedup"] > 0
    assert (tmp_path / "sglang_vanilla.log").exists()


def test_server_that_dies_reports_its_log(tmp_path):
    server = base.Server([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], _free_port(), tmp_path / "x.log")
    with pytest.raises(RuntimeError, match="exited with code 3"):
        server.start(timeout_s=20)
