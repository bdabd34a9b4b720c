"""Trajectory store: a replayed sweep answered from stored drafter passes gives the same trace, field by field."""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from failfast_bench import replay, trajectory_store
from failfast_bench.config import ConfigError
from failfast_bench.drafters.blockdiff_model import load_block_diffusion_drafter
from failfast_bench.drafters.dllm import BlockDiffusionDrafter, DllmDrafter, FailFastDrafter
from failfast_bench.drafters.length_policies import AdaptiveLength, CostAware
from failfast_bench.drafters.stored_passes import StoredPasses, attach
from failfast_bench.engine import generate
from failfast_bench.trajectory_store import TrajectoryStore
from failfast_bench.verify import TargetVerifier

from conftest import requires_smollm2
from helpers_blockdiff import write_fast_dllm_checkpoint
from test_replay import TIMING, comparable
from tiny_models import EOS, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_NEW = 40
PROMPTS = {"short": [1, 7, 12, 30, 5], "aligned": [1] + [(5 * i + 4) % 90 + 3 for i in range(31)],
           "mid_block": [1] + [(7 * i + 3) % 90 + 3 for i in range(69)]}


def sweep():
    """τ x N_max FailFast (faithful and clean), fixed-length spec_len (faithful and clean), the adaptive (DiffuSpec ADL)
    and cost-aware length policies, and KV variants."""
    configs = {}
    for mode in ("faithful", "clean"):
        for tau in (0.2, 0.6):
            for n_max in (8, 24):
                configs[f"ff_{mode}_{tau}_{n_max}"] = lambda m, mode=mode, tau=tau, n_max=n_max: FailFastDrafter(
                    m, theta=0.3, tau=tau, n=4, n_max=n_max, mode=mode, stop_ids=(EOS,))
        for spec_len in (3, 10):
            configs[f"dllm_{mode}_{spec_len}"] = lambda m, mode=mode, spec_len=spec_len: DllmDrafter(
                m, spec_len=spec_len, theta=0.5, mode=mode, stop_ids=(EOS,))
    configs["adaptive"] = lambda m: BlockDiffusionDrafter(m, theta=0.3, policy=AdaptiveLength(k_min=4, k_max=20, delta=4,
                                                                                                stop_ids=(EOS,)), stop_ids=(EOS,))
    configs["cost_aware"] = lambda m: BlockDiffusionDrafter(m, theta=0.3, policy=CostAware(pass_ms=1.0, step_ms=4.0, n=4, n_max=24),
                                                            stop_ids=(EOS,))
    configs["ff_crop"] = lambda m: FailFastDrafter(m, theta=0.3, tau=0.2, n=4, n_max=24, kv_policy="crop", stop_ids=(EOS,))
    configs["ff_kv_off"] = lambda m: FailFastDrafter(m, theta=0.3, tau=0.2, n=4, n_max=24, reuse_kv=False, stop_ids=(EOS,))
    return configs


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A tiny Qwen2 target and a Fast-dLLM-layout drafter initialised from it (it drafts plausible tokens)."""
    target = tiny_model("qwen2", seed=1, vocab=96)
    directory, _ = write_fast_dllm_checkpoint(tmp_path_factory.mktemp("fd"), vocab_size=104, hidden=48, mask_token_id=100,
                                              init_from=target)
    continuations = {
        name: replay.greedy_continuation(TargetVerifier(target), prompt, MAX_NEW + 100, [EOS]).tokens
        for name, prompt in PROMPTS.items()
    }
    return target, directory, continuations


def replayed_rounds(drafter, continuations) -> dict:
    """Per prompt, every round's trace record and the drafter's full Draft (its extras hold the KV facts)."""
    drafts = []
    propose = drafter.propose
    drafter.propose = lambda context: drafts.append(propose(context)) or drafts[-1]
    out = {}
    for name, prompt in PROMPTS.items():
        verifier = replay.ReplayVerifier(lambda p, name=name: continuations[name])
        gen = generate(verifier, drafter, prompt, MAX_NEW, [EOS])
        out[name] = [comparable(r) for r in gen.rounds]
    out["drafts"] = [dataclasses.asdict(d) for d in drafts]
    return out


class NoModel:
    """A pass source that refuses to compute: proves a sweep ran from the store alone."""

    cache_len = 0
    top_k = 0

    def start(self, prompt_ids):
        pass

    def reset(self):
        pass

    def __getattr__(self, name):
        raise AssertionError(f"the model was asked for {name!r}")


def test_stored_sweep_equals_replay_field_by_field(pair, tmp_path):
    target, directory, continuations = pair
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    store = TrajectoryStore("tiny", root=tmp_path)
    reference, first_hits = {}, {}
    for name, make in sweep().items():
        reference[name] = replayed_rounds(make(model), continuations)
        drafter = make(model)
        stored = attach(drafter, store)
        assert replayed_rounds(drafter, continuations) == reference[name], name
        stored.flush()
        first_hits[name] = stored.hits
    rounds = [r for by_prompt in reference.values() for name, rs in by_prompt.items() if name != "drafts" for r in rs]
    drafts = [d for by_prompt in reference.values() for d in by_prompt["drafts"]]
    reasons = {r["stop_reason"] for r in rounds}
    assert {"low_confidence", "cap", "fixed_length"} <= reasons, reasons
    assert any(d["extra"]["stale_kv"] for d in drafts) and any(d["extra"]["kv_reused"] for d in drafts)
    assert any(r["passes_cache_update"] for r in rounds) and any(r["prefix_len"] % 32 == 0 for r in rounds)
    assert 0 < sum(r["accepted_len"] for r in rounds) < sum(r["draft_len"] for r in rounds)
    assert sum(first_hits.values()) > 0  # configs share passes within one sweep

    for name, make in sweep().items():  # a second sweep: no model at all
        drafter = make(model)
        stored = attach(drafter, store)
        stored.model_passes = NoModel()
        assert replayed_rounds(drafter, continuations) == reference[name], name
        assert stored.misses == 0 and stored.hits > 0


def test_stored_picks_keep_the_top_k_candidates(pair, tmp_path):
    target, directory, _ = pair
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    store = TrajectoryStore("tiny", root=tmp_path)
    drafter = FailFastDrafter(model, theta=0.3, tau=0.2, n=4, n_max=24, stop_ids=(EOS,))
    attach(drafter, store)
    prompt = PROMPTS["mid_block"]
    drafter.start(prompt)
    draft = drafter.propose(prompt)
    drafter.passes.flush()
    entries = store.load(prompt)
    denoised = [e for e in entries.values() if e.kind == trajectory_store.KIND_DENOISE]
    assert denoised and all(e.top_ids.shape == (len(e.rows), trajectory_store.TOP_K) for e in denoised)
    for e in denoised:
        assert list(e.top_ids[:, 0]) == e.tokens and len(e.rows) == len(e.tokens) and np.allclose(e.top_probs[:, 0], e.confidences)
        assert (np.diff(e.top_probs, axis=1) <= 0).all()
    assert draft.passes["denoise"] == len(denoised)


def entry(token: int) -> trajectory_store.Entry:
    top = np.full((1, trajectory_store.TOP_K), token)
    return trajectory_store.Entry(trajectory_store.KIND_DENOISE, 32, [3], [token], [0.5], top, np.full(top.shape, 0.5, np.float32))


def test_a_killed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    store = TrajectoryStore("tiny", root=tmp_path)
    prompt = PROMPTS["short"]
    store.save(prompt, {b"a" * 16: entry(7)})
    before = store.path(prompt).read_bytes()

    def killed(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", killed)
    with pytest.raises(KeyboardInterrupt):
        store.save(prompt, {b"b" * 16: entry(8)})
    assert store.path(prompt).read_bytes() == before
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [store.path(prompt).name]  # no temporary left
    monkeypatch.undo()
    store.save(prompt, {b"b" * 16: entry(8)})
    assert {k: e.tokens for k, e in store.load(prompt).items()} == {b"a" * 16: [7], b"b" * 16: [8]}  # merged


def test_an_unreadable_file_is_recomputed_not_trusted(pair, tmp_path):
    target, directory, continuations = pair
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    store = TrajectoryStore("tiny", root=tmp_path)
    make = sweep()["dllm_faithful_10"]
    reference = replayed_rounds(make(model), continuations)
    for prompt in PROMPTS.values():
        store.path(prompt).parent.mkdir(parents=True, exist_ok=True)
        store.path(prompt).write_bytes(b"not a zip")
    drafter = make(model)
    stored = attach(drafter, store)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert replayed_rounds(drafter, continuations) == reference
        stored.flush()
    assert any("unreadable trajectory file" in str(w.message) for w in caught)
    assert all(store.load(p) for p in PROMPTS.values())  # rewritten whole


def test_symbolic_cache_follows_writes_and_crops(tmp_path):
    class Recorder:
        """Records the model calls a miss makes, with a length-only cache."""

        top_k = 0

        def __init__(self):
            self.cache_len, self.calls = 0, []

        def start(self, prompt_ids):
            self.cache_len = 0

        def reset(self):
            self.crop(0)

        def crop(self, keep):
            self.calls.append(("crop", keep))
            self.cache_len = keep

        def write(self, tokens, every):
            self.calls.append(("write", len(tokens)))
            self.cache_len += len(tokens)
            return trajectory_store_picks(1)

        def denoise(self, block, rows):
            self.calls.append(("denoise", tuple(rows)))
            return trajectory_store_picks(len(rows))

    model = Recorder()
    stored = StoredPasses(model, TrajectoryStore("t", root=tmp_path))
    stored.start([1, 2, 3])
    block = [9] * 32
    stored.write(list(range(96)), True)  # one three-block prefill
    stored.denoise(block, [0])
    stored.crop(64)  # keeps two blocks of that prefill
    stored.denoise(block, [0])
    stored.reset()
    stored.write(list(range(64)), False)  # the same tokens written as their own call: another state
    stored.denoise(block, [0])
    assert stored.misses == 5 and stored.cache_len == 64
    # Back to the cropped prefill: the model must rebuild it by re-running the three-block write, then cropping.
    model.calls.clear()
    stored.reset()
    stored.write(list(range(96)), True)  # a hit
    stored.crop(64)
    stored.denoise(block, [1])  # a miss in that state
    assert model.calls == [("crop", 0), ("write", 96), ("crop", 64), ("denoise", (1,))]
    stored.denoise(block, [0])  # stored earlier in exactly this state
    assert stored.hits == 2 and stored.misses == 6


def trajectory_store_picks(rows: int):
    from failfast_bench.drafters.passes import Picks

    return Picks([5] * rows, [0.5] * rows)


def test_the_switch_keeps_run_hashes_and_refuses_what_it_cannot_store():
    from failfast_bench.cli import compose
    from failfast_bench.runner import config_hash

    base = ["run.replay=true", "drafter=failfast"]
    assert config_hash(compose(base)) == config_hash(compose([*base, "run.trajectories=true"]))
    trajectory_store.check_storable(compose([*base, "run.trajectories=true"]))
    with pytest.raises(ConfigError, match="needs run.replay=true"):
        trajectory_store.check_storable(compose(["drafter=failfast", "run.trajectories=true"]))
    with pytest.raises(ConfigError, match="drafter=ar has none"):
        trajectory_store.check_storable(compose(["run.replay=true", "drafter=ar", "run.trajectories=true"]))
    with pytest.raises(ConfigError, match="drafter.cps=true"):
        trajectory_store.check_storable(compose(["run.replay=true", "drafter=diffuspec", "run.trajectories=true"]))
    trajectory_store.check_storable(compose(["run.replay=true", "drafter=diffuspec", "drafter.cps=false", "run.trajectories=true"]))


@pytest.mark.integration
@requires_smollm2
@pytest.mark.parametrize("drafter", [["drafter=failfast", "drafter.tau=0.4", "drafter.n_max=35"],
                                     ["drafter=failfast", "drafter.mode=clean"], ["drafter=dllm", "drafter.spec_len=8"],
                                     ["drafter=failfast", "drafter.model=shipped:dllm_cond"]])
def test_stored_run_equals_replayed_run_on_smollm2(tmp_path, drafter):
    import pandas as pd

    from failfast_bench import trace
    from failfast_bench.cli import compose
    from failfast_bench.runner import Runner

    common = ["run.progress=false", "dataset.num_questions=1", "run.max_new_tokens=48", "run.replay=true", "run.threads=1", *drafter]
    frames = []
    for store in ("false", "true"):
        cfg = compose([*common, f"run.output_dir={tmp_path / store}", f"run.trajectories={store}"])
        Runner(cfg).run()
        rounds = trace.load_run(Runner(cfg).run_dir)[0]
        frames.append(rounds.drop(columns=[c for c in rounds.columns if c in TIMING]))
    pd.testing.assert_frame_equal(*frames)
