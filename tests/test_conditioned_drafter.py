"""The target-conditioned block-diffusion drafter (drafters/conditioned_model.py) on tiny random models:
lossless under FailFast and fixed-length drafting, features aligned with the target's, the cache rule."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from helpers_blockdiff import write_project_drafter  # noqa: E402
from tiny_models import EOS, greedy_reference, tiny_model  # noqa: E402

from failfast_bench.drafters.blockdiff_model import load_block_diffusion_drafter  # noqa: E402
from failfast_bench.drafters.conditioned_model import ConditionedBlockLM, feature_rows  # noqa: E402
from failfast_bench.drafters.dllm import DllmDrafter, FailFastDrafter  # noqa: E402
from failfast_bench.drafters.prefix_tree import PrefixTreeDrafter  # noqa: E402
from failfast_bench.engine import generate  # noqa: E402
from failfast_bench.train.eagle3 import tap_features  # noqa: E402
from failfast_bench.verify import TargetVerifier  # noqa: E402

TAPS = (0, 1, 2)  # never the last layer: transformers returns that one after the final norm


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    target = tiny_model("llama", seed=2, layers=4)
    directory = write_project_drafter(tmp_path_factory.mktemp("cond"), target, seed=3, feature_layers=TAPS)
    return target, directory


def prompt_of(n: int) -> list[int]:
    return [1] + [(7 * i + 3) % 90 + 3 for i in range(n - 1)]


DRAFTERS = {
    "failfast": lambda m: FailFastDrafter(m, tau=0.0, n=10, n_max=60, stop_ids=(EOS,)),
    "failfast_clean": lambda m: FailFastDrafter(m, tau=0.3, mode="clean", stop_ids=(EOS,)),
    "failfast_exact": lambda m: FailFastDrafter(m, tau=0.0, kv_policy="exact", stop_ids=(EOS,)),
    "dllm": lambda m: DllmDrafter(m, spec_len=5, theta=0.9, stop_ids=(EOS,)),
    "failfast_tree": lambda m: PrefixTreeDrafter(FailFastDrafter(m, tau=0.3, stop_ids=(EOS,)), k=2, threshold=0.6),
}


def test_loads_as_conditioned_and_reads_the_target_taps(pair):
    target, directory = pair
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    assert isinstance(model, ConditionedBlockLM) and model.feature_layers == TAPS
    drafter = DRAFTERS["failfast"](model)
    assert drafter.target_feature_layers == TAPS and drafter.kv_policy == "crop"
    assert model.describe()["conditioned_on"] == list(TAPS)


@pytest.mark.parametrize("kind", sorted(DRAFTERS))
def test_lossless_and_features_follow_the_target(pair, kind):
    target, directory = pair
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    drafter = DRAFTERS[kind](model)
    for n in (5, 32, 70):
        prompt = prompt_of(n)
        seen = []
        gen = generate(TargetVerifier(target, feature_layers=drafter.target_feature_layers), drafter, prompt, 48, stop_ids=[EOS],
                       on_round=lambda r: seen.append(model.known_features))
        ref = greedy_reference(target, prompt, 48)
        assert gen.output_tokens[: len(ref)] == ref, (kind, n)
        # After every round the drafter knows the taps of every committed position but the last one.
        for r, known in zip(gen.rounds, seen):
            assert known == r.prefix_len + r.committed - 1
        full = prompt + gen.output_tokens
        expected = tap_features(target, [full[: model.known_features]], TAPS)[0]
        torch.testing.assert_close(model.features.float(), expected.float(), atol=1e-4, rtol=1e-4)


def test_features_change_the_drafts(pair):
    """The fusion is live: with the features withheld the same context drafts differently."""
    target, directory = pair
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    context = prompt_of(45)
    taps = tap_features(target, [context], TAPS)[0][:-1]
    block = context[32:] + [model.mask_token_id] * (64 - len(context))
    model.reset()
    model.set_features(taps)
    model.write_blocks(context[:32])
    with_features = model.denoise(block, list(range(13, 32)))
    model.reset()
    model.set_features(None)
    model.write_blocks(context[:32])
    without = model.denoise(block, list(range(13, 32)))
    assert not torch.allclose(with_features, without)


def test_feature_rows_rule():
    is_mask = torch.tensor([False, False, False, True, False])
    # rows at positions 3..7 with taps of positions 0..4 known: p - 1 for p <= 5, masks never
    assert feature_rows(3, 5, 5, is_mask).tolist() == [2, 3, 4, -1, -1]
    assert feature_rows(0, 2, 5, torch.tensor([False, False])).tolist() == [-1, 0]


def test_blocks_drafted_without_features_are_rewritten(pair):
    """A cache-update block holding draft rows is dropped and re-written once its features are known."""
    target, directory = pair
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    drafter = FailFastDrafter(model, tau=0.0, n=40, n_max=60, stop_ids=(EOS,))  # long drafts cross blocks
    prompt = prompt_of(28)
    rounds = generate(TargetVerifier(target, feature_layers=TAPS), drafter, prompt, 64, stop_ids=[EOS]).rounds
    crossed = [i for i, r in enumerate(rounds[:-1]) if r.passes_cache_update and rounds[i + 1].prefix_len // 32 > r.prefix_len // 32]
    assert crossed, "no round completed a block; the test needs one"
    assert all(rounds[i + 1].passes_prefill == 1 for i in crossed)


def test_missing_fusion_tensors_are_refused(tmp_path):
    import json

    from failfast_bench.config import ConfigError

    target = tiny_model("llama", seed=2, layers=4)
    directory = write_project_drafter(tmp_path / "plain", target, seed=3)
    raw = json.loads((directory / "config.json").read_text())
    raw["failfast_bench"]["feature_layers"] = list(TAPS)
    (directory / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="lacks feature_norm"):
        load_block_diffusion_drafter(str(directory), target_model=target)


def test_replay_hands_the_same_taps(pair):
    """Replay (taps from one forward over prompt + continuation) drafts what the live run drafted."""
    from failfast_bench.replay import ReplayVerifier

    target, directory = pair
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    drafter = DRAFTERS["failfast"](model)
    prompt = prompt_of(40)
    live = generate(TargetVerifier(target, feature_layers=TAPS), drafter, prompt, 48, stop_ids=[EOS])
    continuation = greedy_reference(target, prompt, 120, stop_ids=())
    taps = TargetVerifier(target, feature_layers=TAPS)
    replayed = generate(ReplayVerifier(lambda p: continuation, features_of=taps.sequence_features, feature_layers=TAPS), drafter, prompt, 48,
                        stop_ids=[EOS])
    assert replayed.output_tokens == live.output_tokens
    assert [r.draft_tokens for r in replayed.rounds] == [r.draft_tokens for r in live.rounds]
    for a, b in zip(replayed.rounds, live.rounds):
        assert a.confidences == pytest.approx(b.confidences, abs=1e-4)


def _no_model(model):
    """A pass source that refuses to compute (proof that a replay ran from the store alone) but still holds the
    model: the drafter reads the target features the verifier hands it from there."""
    from test_trajectory_store import NoModel

    source = NoModel()
    source.model = model
    return source


def test_trajectory_store_serves_the_conditioned_drafter(pair, tmp_path):
    """Replayed with stored passes, every config's trace equals the plain replay field by field; a second sweep
    runs from the store alone; features that differ by one ulp-scale nudge are a miss, never a stale hit."""
    import dataclasses

    from failfast_bench.drafters.stored_passes import attach
    from failfast_bench.replay import ReplayVerifier
    from failfast_bench.trajectory_store import TrajectoryStore
    from test_replay import comparable

    target, directory = pair
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    taps = TargetVerifier(target, feature_layers=TAPS)
    prompts = [prompt_of(n) for n in (5, 32, 45)]
    continuations = {tuple(p): greedy_reference(target, p, 160, stop_ids=()) for p in prompts}
    configs = {
        "ff": lambda m: FailFastDrafter(m, tau=0.0, n=10, n_max=60, stop_ids=(EOS,)),
        "ff_tau": lambda m: FailFastDrafter(m, tau=0.3, n=6, n_max=30, stop_ids=(EOS,)),
        "ff_clean": lambda m: FailFastDrafter(m, tau=0.3, mode="clean", stop_ids=(EOS,)),
        "ff_exact": lambda m: FailFastDrafter(m, tau=0.0, kv_policy="exact", stop_ids=(EOS,)),
        "dllm": lambda m: DllmDrafter(m, spec_len=5, theta=0.9, stop_ids=(EOS,)),
    }

    def run(drafter, features_of=taps.sequence_features):
        drafts, propose = [], drafter.propose
        drafter.propose = lambda context: drafts.append(propose(context)) or drafts[-1]
        out = []
        for prompt in prompts:
            verifier = ReplayVerifier(lambda p: continuations[tuple(p)], features_of=features_of, feature_layers=TAPS)
            out.append([comparable(r) for r in generate(verifier, drafter, prompt, 64, stop_ids=[EOS]).rounds])
        return out, [dataclasses.asdict(d) for d in drafts]

    store = TrajectoryStore("cond", root=tmp_path)
    reference = {}
    for name, make in configs.items():
        reference[name] = run(make(model))
        drafter = make(model)
        stored = attach(drafter, store)
        assert run(drafter) == reference[name], name
        stored.flush()
    rounds = [r for rs, _ in reference.values() for per_prompt in rs for r in per_prompt]
    assert any(r["passes_cache_update"] for r in rounds) and sum(r["passes_prefill"] for r in rounds) > len(prompts)
    for name, make in configs.items():
        drafter = make(model)
        stored = attach(drafter, store)
        stored.model_passes = _no_model(model)
        assert run(drafter) == reference[name], name
        assert stored.misses == 0 and stored.hits > 0
    drafter = configs["ff"](model)
    stored = attach(drafter, store)
    stored.model_passes = _no_model(model)
    with pytest.raises(AssertionError, match="the model was asked"):
        run(drafter, features_of=lambda ids: taps.sequence_features(ids) * (1 + 1e-6))
