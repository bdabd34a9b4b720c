"""The one speculative loop: vanilla, AR drafters and tree drafts reproduce greedy decoding exactly."""
from __future__ import annotations

import pytest
import torch

from failfast_bench.drafters.ar import ARDrafter
from failfast_bench.drafters.base import STOP_CAP, STOP_LOW_CONFIDENCE, Draft, Drafter, VanillaDrafter
from failfast_bench.engine import first_divergence, generate
from failfast_bench.verify import TargetVerifier

from tiny_models import EOS, greedy_reference, tiny_model

PROMPTS = [[1, 5, 9, 14, 3], [1, 40, 41, 42, 43, 44, 45, 46, 47, 7], [1, 11]]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def target(request):
    return tiny_model(request.param, seed=1)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_vanilla_matches_plain_greedy(target, prompt):
    gen = generate(TargetVerifier(target), VanillaDrafter(), prompt, 40, stop_ids=[EOS])
    assert gen.output_tokens == greedy_reference(target, prompt, 40)
    assert all(r.draft_len == 0 and r.committed == 1 for r in gen.rounds)
    assert len(gen.rounds) == len(gen.output_tokens)


def test_ar_drafter_is_the_target_accepts_everything(target):
    prompt = PROMPTS[1]
    gen = generate(TargetVerifier(target), ARDrafter(target, spec_len=5), prompt, 48, stop_ids=[EOS])
    assert gen.output_tokens[:48] == greedy_reference(target, prompt, 48)[: len(gen.output_tokens[:48])]
    drafted = sum(r.draft_len for r in gen.rounds)
    accepted = sum(r.accepted_len for r in gen.rounds)
    assert drafted > 0 and accepted == drafted
    assert all(r.bonus for r in gen.rounds)


@pytest.mark.parametrize("spec_len", [1, 3, 8])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_ar_drafter_other_model_is_lossless(target, spec_len, prompt):
    drafter_model = tiny_model(type(target).__name__.startswith("Llama") and "llama" or "qwen2", seed=7)
    gen = generate(TargetVerifier(target), ARDrafter(drafter_model, spec_len=spec_len), prompt, 40, stop_ids=[EOS])
    ref = greedy_reference(target, prompt, 40)
    assert first_divergence(gen.output_tokens, ref) is None
    assert gen.output_tokens[: len(ref)] == ref
    for r in gen.rounds:
        assert r.passes_decode == r.draft_len == spec_len or r.stop_reason == "stop_token"
        assert r.target_tokens[: r.accepted_len] == r.draft_tokens[: r.accepted_len]


def test_dynamic_ar_stops_on_low_confidence_or_cap(target):
    drafter_model = tiny_model("llama" if "Llama" in type(target).__name__ else "qwen2", seed=3)
    ref = greedy_reference(target, PROMPTS[0], 60)
    for tau, expected in [(0.0, STOP_CAP), (1.0, STOP_LOW_CONFIDENCE)]:
        d = ARDrafter(drafter_model, dynamic=True, tau=tau, n=4, n_max=12)
        gen = generate(TargetVerifier(target), d, PROMPTS[0], 60, stop_ids=[EOS])
        assert gen.output_tokens[: len(ref)] == ref
        reasons = {r.stop_reason for r in gen.rounds}
        assert expected in reasons
        if expected == STOP_LOW_CONFIDENCE:
            assert all(r.draft_len == 4 for r in gen.rounds if r.stop_reason == STOP_LOW_CONFIDENCE)
        else:
            assert all(r.draft_len == 12 for r in gen.rounds if r.stop_reason == STOP_CAP)


class ScriptedTreeDrafter(Drafter):
    """Proposes a tree whose first branch is wrong and second branch is the target's greedy path."""

    name = "scripted_tree"

    def __init__(self, reference: list[int], depth: int = 3):
        self.reference = reference
        self.depth = depth

    def propose(self, context):
        pos = len(context) - self.prompt_len
        truth = self.reference[pos : pos + self.depth]
        wrong = [(t + 1) % 90 + 3 for t in truth]
        # branch A (wrong first token) then branch B (the truth), children listed after parents.
        tokens, parents = [], []
        prev = -1
        for t in wrong:
            tokens.append(t)
            parents.append(prev)
            prev = len(tokens) - 1
        prev = -1
        for t in truth:
            tokens.append(t)
            parents.append(prev)
            prev = len(tokens) - 1
        return Draft(tokens=tokens, confidences=[1.0] * len(tokens), passes={"decode": self.depth}, tree_parents=parents)

    def start(self, prompt_ids):
        self.prompt_len = len(prompt_ids)


def test_tree_verification_keeps_the_matching_branch(target):
    prompt = PROMPTS[0]
    ref = greedy_reference(target, prompt, 40)
    drafter = ScriptedTreeDrafter(ref + [0] * 10)
    gen = generate(TargetVerifier(target), drafter, prompt, 40, stop_ids=[EOS])
    assert gen.output_tokens[: len(ref)] == ref
    full = [r for r in gen.rounds if len(r.draft_tokens) == 6]
    assert full and all(r.accepted_len == 3 for r in full[:-1])


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3, 4], [1, 2, 3]) is None  # overshoot past max_new_tokens
    assert first_divergence([1, 9, 3], [1, 2, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2
