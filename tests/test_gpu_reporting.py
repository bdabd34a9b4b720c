"""What a GPU run reports and caches: only hardware profiles measured for its target are priced (a fallback is
labelled), the replay/reference cache key names the GPU model, and Fast-dLLM load notices stay off the console."""
from __future__ import annotations

import hashlib
import json
import logging
import types
import warnings

import pytest
import torch
from omegaconf import OmegaConf

from failfast_bench import lossless, models
from failfast_bench.latency import load_profile
from failfast_bench.runner import _profiles, format_summary

from helpers_blockdiff import write_fast_dllm_checkpoint
from tiny_models import tiny_chat_tokenizer, tiny_model


# -- which profiles price a run ----------------------------------------------------------------------
def test_profiles_measured_for_another_target_do_not_price_a_run():
    paper = load_profile("a6000_paper")
    assert [p.name for p in _profiles(paper, "qwen2.5-7b")] == ["a6000_paper"]  # cpu/cpu_bf16 hold SmolLM2 only
    assert {"cpu", "cpu_bf16"} <= {p.name for p in _profiles(paper, "smollm2-135m")}


def _metrics(priced_as: str) -> dict:
    return {"priced_as_target": priced_as, "acceptance_rate": 0.5, "tokens_per_round": 2.0, "drafter_passes_per_round": 3.0,
            "modeled_speedup": 1.5, "modeled_speedup_refined": 1.4, "measured_speedup": float("nan"), "lossless_mismatches": 0,
            "n_questions": 1, "tokens_per_second": 1.0, "vanilla_tokens_per_second": 1.0, "harness_overhead_share": 0.1}


def _summary(target: str, by_profile: dict, primary: str) -> dict:
    return {"target": target, "latency_key": target, "dataset": "gsm8k", "config_name": "x", "run_dir": "r",
            "primary_profile": primary, "metrics": by_profile[primary], "metrics_by_profile": by_profile}


def test_summary_hides_other_targets_latencies_and_labels_a_fallback():
    # A summary written before the fix: the CPU rows carry SmolLM2's latencies for a Qwen run.
    stale = _summary("qwen2.5-7b", {"a6000_paper": _metrics("qwen2.5-7b"), "cpu": _metrics("smollm2-135m"),
                                    "cpu_bf16": _metrics("smollm2-135m")}, "a6000_paper")
    rows = [line.split()[0] for line in format_summary(stale).splitlines() if line.split() and line.split()[0].rstrip("*") in stale["metrics_by_profile"]]
    assert rows == ["a6000_paper"]
    fallback = format_summary(_summary("qwen2.5-coder-1.5b", {"a6000_paper": _metrics("qwen2.5-32b")}, "a6000_paper"))
    assert "a6000_paper*" in fallback
    assert "* a6000_paper has no qwen2.5-coder-1.5b latencies: priced as its fallback target qwen2.5-32b" in fallback


# -- the cache key names the GPU ---------------------------------------------------------------------
def _on(device: torch.device):
    """A stand-in model whose weights report ``device`` (no CUDA tensor is made)."""
    weight = types.SimpleNamespace(device=device)
    return types.SimpleNamespace(get_input_embeddings=lambda: types.SimpleNamespace(weight=weight), parameters=lambda: iter([weight]))


def test_replay_and_reference_key_includes_the_gpu_model(monkeypatch):
    cfg = OmegaConf.create({"target": {"model": "Qwen/Qwen2.5-7B-Instruct", "gguf_file": None, "revision": None},
                            "run": {"dtype": "bfloat16", "device": "auto"}})
    gpu = {"name": "NVIDIA RTX A6000"}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu["name"])
    a6000 = lossless.target_identity(cfg, _on(torch.device("cuda", 0)))
    gpu["name"] = "NVIDIA H100 80GB HBM3"
    assert lossless.target_identity(cfg, _on(torch.device("cuda", 0))) != a6000
    assert models.device_identity(_on(torch.device("cuda", 0))) == "cuda:NVIDIA H100 80GB HBM3"
    # CPU keys are what they were, so existing reference and continuation caches stay valid.
    cpu_cfg = OmegaConf.merge(cfg, {"run": {"dtype": "float32"}})
    legacy = {"model": "Qwen/Qwen2.5-7B-Instruct", "gguf": None, "revision": None, "dtype": "float32", "device": "cpu"}
    assert lossless.target_identity(cpu_cfg, tiny_model()) == hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()[:16]


# -- Fast-dLLM load notices --------------------------------------------------------------------------
class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_fast_dllm_tokenizer_loads_without_model_type_notices(tmp_path):
    directory, _ = write_fast_dllm_checkpoint(tmp_path / "fast_dllm", vocab_size=96, hidden=32)
    tiny_chat_tokenizer().save_pretrained(directory)
    # transformers' own handler writes to the stderr of whichever test imported it first: listen on its logger.
    records = _Records()
    library_logger = logging.getLogger("transformers")
    library_logger.addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tokenizer = models.load_tokenizer(models.resolve_source(str(directory)))
    finally:
        library_logger.removeHandler(records)
    assert tokenizer.get_vocab()["user"] == 5
    shown = records.messages + [str(w.message) for w in caught]
    assert not [m for m in shown if "Fast_dLLM" in m or "rope_scaling" in m], shown


def test_only_the_custom_model_type_notice_is_dropped():
    drop = models._DropCustomModelTypeNotices()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("transformers.configuration_utils", logging.WARNING, __file__, 1, message, None, None)

    assert not drop.filter(record("You are using a model of type `Fast_dLLM_Qwen` to instantiate a model of type ``."))
    assert drop.filter(record("You are using a model of type `llama` to instantiate a model of type `qwen2`."))
