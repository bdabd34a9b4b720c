"""GPU timing, checked on the CPU: timed forwards synchronise every CUDA device the model spans (a mocked
torch.cuda.synchronize records the calls), and a run warms the device up once before its first timed question."""
from __future__ import annotations

import pytest
import torch

from failfast_bench import engine, models, profile
from failfast_bench.cli import compose
from failfast_bench.drafters.base import Draft
from failfast_bench.runner import Runner, preflight
from failfast_bench.verify import TargetVerifier

from tiny_models import save_tiny_target, tiny_model, tiny_run_overrides

CUDA0, CUDA1 = torch.device("cuda", 0), torch.device("cuda", 1)


@pytest.fixture
def synced(monkeypatch):
    """The devices torch.cuda.synchronize was called with."""
    calls: list = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(torch.device(device)))
    return calls


def test_profile_forward_timing_synchronises_the_gpu(monkeypatch, synced):
    """verify_ms / target_step_ms: each timed forward is bracketed by a device synchronisation."""
    monkeypatch.setattr(models, "model_devices", lambda model: [CUDA0])  # the weights say cuda, inputs stay on the CPU
    repeats = 3
    ms = profile._median_forward_ms(tiny_model("llama"), list(range(3, 40)), k=4, repeats=repeats)
    assert ms > 0
    assert synced == [CUDA0] * 2 * (repeats + 1)


def test_verification_synchronises_every_gpu_of_a_split_target(synced):
    verifier = TargetVerifier(tiny_model("llama"))
    verifier.devices = [CUDA0, CUDA1]  # as for a target spread over two GPUs
    verifier.start([5, 6, 7])
    synced.clear()
    verifier.verify(Draft(tokens=[8, 9]))
    assert synced == [CUDA0, CUDA1, CUDA0, CUDA1]


@pytest.mark.filterwarnings("ignore:.*is not the canonical gsm8k file")
def test_run_warms_up_once_before_the_first_timed_question(tmp_path, monkeypatch):
    monkeypatch.setenv("FAILFAST_BENCH_CACHE", str(tmp_path / "cache"))  # reference outputs of a throwaway model
    target_dir = tmp_path / "target"
    save_tiny_target(target_dir, arch="llama")
    cfg = compose(tiny_run_overrides(tmp_path, target_dir, "drafter=ar", "drafter.model=target", "drafter.spec_len=3"))
    preflight(cfg)
    calls = []
    real_generate = engine.generate

    def recording_generate(verifier, drafter, prompt, max_new_tokens, stop_ids, question_id="", **kw):
        calls.append((question_id, drafter.name, max_new_tokens))
        return real_generate(verifier, drafter, prompt, max_new_tokens, stop_ids, question_id=question_id, **kw)

    monkeypatch.setattr(engine, "generate", recording_generate)
    Runner(cfg).run()
    first_question = calls[1][0]
    # Untimed: one token of target and drafter work, then question 0's vanilla reference is the first timed call.
    assert calls[0] == ("warm-up", "ar", 1)
    assert calls[1] == (first_question, "vanilla", 6) and calls[2] == (first_question, "ar", 6)
    assert [c[0] for c in calls].count("warm-up") == 1 and len(calls) == 5
