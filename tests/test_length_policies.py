"""Length policies (drafters/length_policies/): the composition seam and the cost-aware rule.

FailFast and fixed-length behaviour is pinned by tests/test_dllm.py (unchanged); here: the interface, the
cost-aware formula on hand numbers, its decisions on scripted confidences under different prices, and
losslessness at T = 0 on a real tiny block-diffusion model.
"""
from __future__ import annotations

import math

import pytest
import torch

from failfast_bench.drafters.base import STOP_CAP, STOP_LOW_CONFIDENCE
from failfast_bench.drafters.dllm import BlockDiffusionDrafter, DllmDrafter, FailFastDrafter
from failfast_bench.drafters.length_policies import CostAware, FailFastPolicy, FixedLength, LengthPolicy
from failfast_bench.latency import HardwareProfile, load_profile
from test_dllm import STOP, ScriptedModel, ctx, token_at


pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(CostAware):
    """CostAware that logs (L, decision) at every check."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.checks = []

    def decide(self, st):
        out = super().decide(st)
        self.checks.append((st.window_end - st.ell, out))
        return out


def cost_drafter(model=None, **kw):
    kw.setdefault("n", 10)
    kw.setdefault("n_max", 60)
    policy = Recorder(**kw)
    return BlockDiffusionDrafter(model or ScriptedModel(), theta=0.05, policy=policy, stop_ids=(STOP,)), policy


def test_drafters_compose_policies():
    d = DllmDrafter(ScriptedModel(), spec_len=3)
    assert isinstance(d.policy, FixedLength) and d.spec_len == 3 and d.describe()["spec_len"] == 3
    f = FailFastDrafter(ScriptedModel(), tau=0.3, n=4, n_max=12, mode="clean")
    assert isinstance(f.policy, FailFastPolicy) and f.policy.mode == "clean" and (f.tau, f.n, f.n_max) == (0.3, 4, 12)
    assert all(isinstance(p, LengthPolicy) for p in (d.policy, f.policy))
    with pytest.raises(ValueError, match="n <= n_max"):
        CostAware(pass_ms=1, step_ms=1, n=5, n_max=4)


def test_extension_formula_by_hand():
    p = CostAware(pass_ms=6.0, step_ms=50.0, n=2, n_max=10)
    # window confidences 0.9, 0.8 survive with 0.72; ahead: 0.5 committed, then carried forward.
    gain, cost = p.extension([0.9, 0.8], [0.5, None], masked_ahead=1, rate=2.0, new_blocks=0, window=2)
    assert gain == pytest.approx(50.0 * (0.72 * 0.5 + 0.72 * 0.25))
    assert cost == pytest.approx(6.0)  # ceil(1 / 2) passes, no block opened, no verify curve
    # A block opened costs one cache update; a verify curve adds verify(L+1+N) - verify(L+1).
    p.verify_ms = lambda k: 10.0 * k
    gain, cost = p.extension([0.9, 0.8], [None, None], masked_ahead=2, rate=1.0, new_blocks=1, window=2)
    assert gain == pytest.approx(50.0 * (0.72 * 0.8 + 0.72 * 0.64))
    assert cost == pytest.approx(3 * 6.0 + 10.0 * 2)


def test_high_confidence_extends_to_the_cap():
    d, policy = cost_drafter(pass_ms=6.1, step_ms=52.6)  # the paper's A6000 prices for Qwen2.5-32B
    d.start(ctx(40))
    draft = d.propose(ctx(100))  # every position at 0.95
    assert draft.stop_reason == STOP_CAP and len(draft.tokens) == 60
    assert [L for L, _ in policy.checks] == [10, 20, 30, 40, 50, 60]
    assert draft.tokens == [token_at(p) for p in range(100, 160)]
    assert draft.recorded_confidences == draft.confidences


def test_low_confidence_ahead_stops():
    d, policy = cost_drafter(pass_ms=6.1, step_ms=52.6)
    d.start(ctx(40))
    d.model.conf = {p: 0.1 for p in range(110, 200)}  # the window [100, 110) is sure, what follows is not
    draft = d.propose(ctx(100))
    assert draft.stop_reason == STOP_LOW_CONFIDENCE and len(draft.tokens) == 10
    assert policy.checks == [(10, STOP_LOW_CONFIDENCE)]


def test_decision_depends_on_the_profile():
    lengths = {}
    for name, prices in {"cheap": dict(pass_ms=1.0, step_ms=50.0), "dear": dict(pass_ms=40.0, step_ms=66.6),
                         "dear_verify": dict(pass_ms=1.0, step_ms=50.0, verify_ms=lambda k: 50.0 + 8.0 * k)}.items():
        model = ScriptedModel()
        model.conf = {p: 0.85 for p in range(100, 200)}
        d, _ = cost_drafter(model, **prices)
        d.start(ctx(40))
        lengths[name] = len(d.propose(ctx(100)).tokens)
    assert lengths["cheap"] > lengths["dear"] >= 10
    assert lengths["cheap"] > lengths["dear_verify"] >= 10


def test_from_profile_reads_the_hardware_profile():
    a6000 = CostAware.from_profile(load_profile("a6000_paper"), "qwen2.5-7b")
    assert (a6000.pass_ms, a6000.step_ms, a6000.verify_ms) == (6.1, 13.5, None)
    cpu_profile = load_profile("cpu")
    cpu = CostAware.from_profile(cpu_profile, "smollm2-135m", "dllm")
    assert cpu.pass_ms == cpu_profile.drafter_pass_ms["dllm"] and cpu.verify_ms(8) == cpu_profile.verify_cost_ms("smollm2-135m", 8)
    assert cpu.describe()["profile"] == "cpu" and cpu.describe()["verify_curve"]


def test_sampling_reads_no_confidence_past_the_window():
    p = CostAware(pass_ms=1.0, step_ms=50.0)
    p.check_sampling(True)
    assert not p.lookahead
    p.check_sampling(False)
    assert p.lookahead


# -- configuration --------------------------------------------------------------------------------------
def test_config_surface_and_hash(tmp_path):
    from failfast_bench.cli import compose
    from failfast_bench.config import ConfigError, validate
    from failfast_bench.drafters import config_name
    from failfast_bench.runner import config_hash

    cfg = compose(["drafter=dllm_cost", f"run.output_dir={tmp_path}"])
    validate(cfg)
    assert cfg.drafter.name == "dllm" and cfg.drafter.policy == "cost_aware"
    assert config_name(cfg.drafter) == "dllm_0.05_cost_60_10"
    # The hardware profile decides cost-aware draft lengths, so it is part of the run's identity.
    other = compose(["drafter=dllm_cost", "hardware=cpu", f"run.output_dir={tmp_path}"])
    assert config_hash(cfg) != config_hash(other)
    plain = compose(["drafter=dllm", f"run.output_dir={tmp_path}"])
    assert config_hash(plain) == config_hash(compose(["drafter=dllm", "hardware=cpu", f"run.output_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="drafter.policy"):
        validate(compose(["drafter=failfast", "+drafter.policy=cost_aware", f"run.output_dir={tmp_path}"]))


# -- losslessness ---------------------------------------------------------------------------------------
def test_cost_aware_is_lossless_at_t0(tmp_path):
    from failfast_bench.drafters.blockdiff_model import load_block_diffusion_drafter
    from failfast_bench.engine import generate
    from failfast_bench.verify import TargetVerifier
    from helpers_blockdiff import write_fast_dllm_checkpoint
    from tiny_models import EOS, greedy_reference, tiny_model

    target = tiny_model("qwen2", seed=1, vocab=96)
    directory, _ = write_fast_dllm_checkpoint(tmp_path / "fd", vocab_size=104, hidden=48, mask_token_id=100, init_from=target)
    for prices in (dict(pass_ms=6.1, step_ms=52.6), dict(pass_ms=40.9, step_ms=66.6, verify_ms=lambda k: 60.0 + 3.0 * k)):
        model = load_block_diffusion_drafter(str(directory), target_model=target)
        drafter = BlockDiffusionDrafter(model, theta=0.05, policy=CostAware(n=4, n_max=24, **prices), stop_ids=(EOS,))
        for n in (5, 32, 70):
            prompt = [1] + [(7 * i + 3) % 90 + 3 for i in range(n - 1)]
            gen = generate(TargetVerifier(target), drafter, prompt, 32, stop_ids=[EOS])
            ref = greedy_reference(target, prompt, 32)
            assert gen.output_tokens[: len(ref)] == ref, (prices, n)
            assert all(r.stop_reason in (STOP_CAP, STOP_LOW_CONFIDENCE, "stop_token", "budget") for r in gen.rounds)
            assert all(len(r.draft_tokens) <= 24 for r in gen.rounds)
