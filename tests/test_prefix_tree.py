"""Prefix tree of diffusion drafts (drafters/prefix_tree.py): lossless at T = 0, tree layout, pass charges,
batched re-draft equal to one block at a time, replay equal to live, and configuration errors before loading."""
from __future__ import annotations

import pytest
import torch

from failfast_bench import replay
from failfast_bench.config import ConfigError, validate
from failfast_bench.drafters.blockdiff_model import load_block_diffusion_drafter
from failfast_bench.drafters.dllm import DllmDrafter, FailFastDrafter
from failfast_bench.drafters.prefix_tree import PrefixTreeDrafter
from failfast_bench.engine import generate
from failfast_bench.verify import TargetVerifier

from test_dllm import PROMPT_LENGTHS, llama_pair, lossless_rounds, prompt_of, qwen_pair  # noqa: F401 (fixtures)
from test_replay import comparable
from tiny_models import EOS

TREES = {
    "dllm": lambda m, **kw: PrefixTreeDrafter(DllmDrafter(m, spec_len=8, theta=0.9, stop_ids=(EOS,)), **kw),
    "failfast_clean_crop": lambda m, **kw: PrefixTreeDrafter(
        FailFastDrafter(m, tau=0.3, n=6, n_max=24, mode="clean", kv_policy="crop", stop_ids=(EOS,)), **kw),
}


def drafter_for(pair, kind, request, **kw):
    target, directory = request.getfixturevalue(pair)
    return target, TREES[kind](load_block_diffusion_drafter(str(directory), target_model=target), **kw)


def watch(drafter):
    """Count the drafter's branched rounds and the rounds whose accepted path left the trunk for a branch."""
    counts = {"trees": 0, "into_branch": 0}
    propose, observe = drafter.propose, drafter.observe

    def watched_propose(context):
        draft = propose(context)
        counts["trees"] += draft.tree_parents is not None
        return draft

    def watched_observe(draft, verdict):
        trunk = len(drafter._trunk.tokens)
        counts["into_branch"] += any(node >= trunk for node in verdict.accepted_path or [])
        observe(draft, verdict)

    drafter.propose, drafter.observe = watched_propose, watched_observe
    return counts


@pytest.mark.parametrize("pair,kind,passes", [("qwen_pair", "dllm", 1), ("qwen_pair", "dllm", 3), ("llama_pair", "failfast_clean_crop", 1)])
def test_lossless_and_well_formed(pair, kind, passes, request):
    target, drafter = drafter_for(pair, kind, request, k=3, threshold=0.9, branch_len=5, branch_passes=passes)
    counts = watch(drafter)
    for n in PROMPT_LENGTHS:
        for r in lossless_rounds(target, drafter, n, 40):
            assert r.verified_tokens == len(r.draft_tokens) + 1  # every node is verified (and charged)
            assert r.drafter_passes == r.passes_prefill + r.passes_denoise + r.passes_cache_update
            assert len(r.confidences) == len(r.draft_tokens)
    assert counts["trees"] > 0 and counts["into_branch"] > 0, counts  # the branches do win rounds


def test_tree_layout_and_charges(qwen_pair):
    target, directory = qwen_pair
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    chain = DllmDrafter(load_block_diffusion_drafter(str(directory), target_model=target), spec_len=8, theta=0.9, stop_ids=(EOS,))
    tree = PrefixTreeDrafter(DllmDrafter(model, spec_len=8, theta=0.9, stop_ids=(EOS,)), k=2, threshold=0.9, branch_len=5)
    seen = boundary_at_block_end = 0
    for n in (5, 40, 63):  # the last boundary may sit near a block end: branches stop there
        context = prompt_of(n)
        for d in (chain, tree):
            d.start(context)
        trunk, draft = chain.propose(context), tree.propose(context)
        assert draft.tokens[: len(trunk.tokens)] == trunk.tokens  # the trunk is the chain drafter's draft
        if draft.tree_parents is None:
            continue
        seen += 1
        i = draft.extra["tree_boundary"]
        assert i == next(j for j, c in enumerate(trunk.confidences) if c < 0.9)
        n_trunk = len(trunk.tokens)
        assert draft.tree_parents[:n_trunk] == list(range(-1, n_trunk - 1))
        roots = [j for j in range(n_trunk, len(draft.tokens)) if draft.tree_parents[j] == i - 1]
        assert len(roots) == draft.extra["tree_branches"] <= 2
        siblings = [draft.tokens[j] for j in roots] + [trunk.tokens[i]]
        assert len(set(siblings)) == len(siblings)  # alternatives differ from each other and from the trunk's token
        block_end = (n + i) // 32 * 32 + 32
        for start, end in zip(roots, roots[1:] + [len(draft.tokens)]):
            assert draft.tree_parents[start + 1 : end] == list(range(start, end - 1))  # each branch is a chain
            assert end - start - 1 <= 5 and n + i + (end - start) <= block_end
        # One batched pass over the branches, charged one denoising pass per branch (none when the boundary
        # is its block's last position: nothing is left to re-draft there).
        room = block_end - (n + i) - 1 > 0
        assert draft.extra["tree_batched_passes"] == int(room)
        assert draft.passes["denoise"] == trunk.passes["denoise"] + len(roots) * room
        boundary_at_block_end += not room
        assert draft.passes["prefill"] == trunk.passes["prefill"] and draft.passes["cache_update"] == trunk.passes["cache_update"]
    assert seen


def test_threshold_zero_is_the_chain(qwen_pair):
    target, directory = qwen_pair
    prompt = prompt_of(40)
    chain = DllmDrafter(load_block_diffusion_drafter(str(directory), target_model=target), spec_len=8, theta=0.9, stop_ids=(EOS,))
    tree = PrefixTreeDrafter(DllmDrafter(load_block_diffusion_drafter(str(directory), target_model=target), spec_len=8, theta=0.9,
                                         stop_ids=(EOS,)), threshold=0.0)
    a = generate(TargetVerifier(target), chain, prompt, 40, stop_ids=[EOS])
    b = generate(TargetVerifier(target), tree, prompt, 40, stop_ids=[EOS])
    assert [comparable(r) for r in a.rounds] == [comparable(r) for r in b.rounds]


def test_batched_denoise_equals_one_block_at_a_time(qwen_pair):
    target, directory = qwen_pair
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    prefix = prompt_of(64)
    model.write_blocks(prefix)  # the cache holds two blocks; the batch sees only the first
    mask = model.mask_token_id
    blocks = [prefix[32:40] + [t] + [mask] * 23 for t in (5, 6, 7)]
    rows = list(range(9, 14))
    batched = model.denoise_batch(blocks, rows, 32)
    assert model.cache_len == 64  # untouched
    model.crop(32)
    for b, block in enumerate(blocks):
        assert torch.allclose(batched[b], model.denoise(block, rows), atol=1e-4)
    assert torch.allclose(model.denoise_batch(blocks[:1], rows, 0)[0], _fresh_denoise(directory, target, blocks[0], rows), atol=1e-4)


def _fresh_denoise(directory, target, block, rows):
    return load_block_diffusion_drafter(str(directory), target_model=target).denoise(block, rows)


def test_replay_equals_live(qwen_pair):
    target, directory = qwen_pair
    prompt = prompt_of(40)
    factory = lambda: TREES["dllm"](load_block_diffusion_drafter(str(directory), target_model=target), threshold=0.9)  # noqa: E731
    live = generate(TargetVerifier(target), factory(), prompt, 40, [EOS])
    cont = replay.greedy_continuation(TargetVerifier(target), prompt, 40 + 97, [EOS])
    replayed = generate(replay.ReplayVerifier(lambda p: cont.tokens), factory(), prompt, 40, [EOS])
    assert [comparable(r) for r in replayed.rounds] == [comparable(r) for r in live.rounds]
    assert replayed.output_tokens == live.output_tokens


def test_refusals_in_the_drafter(qwen_pair):
    target, directory = qwen_pair
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    with pytest.raises(ValueError, match="tree_k"):
        PrefixTreeDrafter(DllmDrafter(model), k=0)
    with pytest.raises(ValueError, match="reuse"):
        PrefixTreeDrafter(FailFastDrafter(model, reuse_drafts=True))


# -- configuration --------------------------------------------------------------------------------------
def test_config_name_validation_and_hashes(tmp_path):
    from omegaconf import OmegaConf

    from failfast_bench.cli import compose
    from failfast_bench.drafters import config_name
    from failfast_bench.runner import config_hash

    out = f"run.output_dir={tmp_path}"
    cfg = compose(["drafter=dllm_tree", out])
    validate(cfg)
    assert config_name(cfg.drafter) == "dllm_0.9_sf_8_tree_k3_t0.5_b8_p1"
    ff = compose(["drafter=failfast", "drafter.tree=true", "drafter.tree_k=2", out])
    assert config_name(ff.drafter) == "dllm_0.05_df_0.45_60_10_tree_k2_t0.5_b8_p1"
    assert config_hash(cfg) != config_hash(compose(["drafter=dllm", out]))
    assert config_hash(ff) != config_hash(compose(["drafter=failfast", "drafter.tree=true", out]))
    # Configs from before the tree keys existed keep their hashes (committed runs keep their directories).
    for name in ("failfast", "dllm", "eagle3"):
        now = compose([f"drafter={name}", out])
        legacy = OmegaConf.to_container(now, resolve=True)
        for key in ("tree_k", "tree_threshold", "tree_branch_len", "tree_branch_passes"):
            del legacy["drafter"][key]
        assert config_hash(OmegaConf.create(legacy)) == config_hash(now)
    for override, message in [
        ("drafter.tree_k=0", "tree_k=0 must be >= 1"),
        ("drafter.tree_threshold=1.5", r"tree_threshold=1.5 is outside \[0, 1\]"),
        ("drafter.tree_branch_len=-1", "tree_branch_len=-1"),
        ("drafter.tree_branch_passes=0", "tree_branch_passes=0"),
        ("run.temperature=0.7", "needs run.temperature=0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate(compose(["drafter=dllm_tree", override, out]))
    with pytest.raises(ConfigError, match="reuse_drafts"):
        validate(compose(["drafter=failfast", "drafter.tree=true", "drafter.reuse_drafts=true", out]))


@pytest.mark.filterwarnings("ignore:.*is not the canonical gsm8k file")
@pytest.mark.parametrize("replayed", [False, True])
def test_whole_pipeline_on_a_tiny_target(tmp_path, monkeypatch, replayed):
    import json

    from failfast_bench.cli import compose
    from failfast_bench.runner import Runner, preflight
    from helpers_blockdiff import write_project_drafter
    from tiny_models import save_tiny_target, tiny_run_overrides

    monkeypatch.setenv("FAILFAST_BENCH_CACHE", str(tmp_path / "cache"))  # reference outputs of a throwaway model
    target = save_tiny_target(tmp_path / "target", arch="llama", seed=2)
    drafter_dir = write_project_drafter(tmp_path / "drafter", target, seed=3)
    cfg = compose(tiny_run_overrides(tmp_path, tmp_path / "target", "drafter=dllm_tree", f"drafter.model={drafter_dir}",
                                     "drafter.tree_threshold=0.9", "run.max_new_tokens=24", f"run.replay={str(replayed).lower()}"))
    preflight(cfg)
    runner = Runner(cfg)
    summary = runner.run()
    assert runner.run_dir.name.startswith("dllm_0.9_sf_8_tree_k3_t0.9_b8_p1__")
    assert summary["replay"] is replayed and summary["metrics"]["lossless_mismatches"] == 0
    drafter = json.loads((runner.run_dir / "manifest.json").read_text())["drafter"]
    assert (drafter["name"], drafter["shape"], drafter["tree_k"]) == ("dllm_tree", "prefix_tree", 3)
