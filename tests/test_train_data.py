"""Training-data pipeline: prompts never include evaluation questions, generation is resumable shard by
shard, the committable compact copy rebuilds the cache, and training resumes exactly after a kill."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from failfast_bench.train import data as tdata
from failfast_bench.train.data import (
    DataSettings,
    GeneratedBatch,
    PromptSpec,
    ResponseStore,
    evaluation_texts,
    export_compact,
    generate_greedy,
    generate_responses,
    is_heldout,
    iter_examples,
    normalize_text,
    plan_prompts,
    prompt_specs,
)

from tiny_models import VOCAB, greedy_reference, tiny_model

# Hundreds of tiny forwards: one torch thread (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

PROJECT = Path(__file__).resolve().parents[1]
COMPACT_DIR = PROJECT / "data" / "train_responses" / "smollm2-135m"


def test_prompt_specs_are_deterministic_and_skip_excluded():
    questions = ["What is 1+1?", "  what IS 2+2? ", "A train leaves.", "Eval question"]
    specs = prompt_specs(questions, ["math", "chat"], seed=3, exclude=frozenset({normalize_text("eval   question")}))
    assert specs == prompt_specs(questions, ["math", "chat"], seed=3, exclude=frozenset({"eval question"}))
    assert {s.line for s in specs} == {0, 1, 2}
    assert [s.template for s in specs] == ["math"] * 3 + ["chat"] * 3
    with pytest.raises(ValueError, match="unknown template"):
        prompt_specs(questions, ["poetry"], seed=0)


def test_heldout_rule():
    held = [i for i in range(200) if is_heldout(i, 64)]
    assert held == [7, 71, 135, 199]
    assert not any(is_heldout(i, 0) for i in range(100))


def test_no_evaluation_prompt_in_the_training_set(full_gsm8k_train):
    """GSM8K test, HumanEval and MT-Bench questions must never be training prompts (nor the committed responses')."""
    texts, notes = evaluation_texts()
    if not texts:
        pytest.skip(f"no evaluation prompts found to compare against: {notes}")
    questions = tdata.read_question_lines(full_gsm8k_train)
    overlap = [i for i, q in enumerate(questions) if normalize_text(q) in texts]
    settings = DataSettings(train_path=str(full_gsm8k_train), cache_dir="unused", templates=("math", "code", "chat"))
    _, specs, _ = plan_prompts(settings)
    used = {s.line for s in specs}
    assert not used & set(overlap)
    assert not any(normalize_text(questions[i]) in texts for i in used)
    # The committed responses reference train lines only, none of them an evaluation question.
    for path in sorted(COMPACT_DIR.glob("responses_*.npz")):
        with np.load(path) as z:
            lines = set(z["lines"].tolist())
        assert max(lines) < len(questions)
        assert not any(normalize_text(questions[i]) in texts for i in lines), path


def test_generate_greedy_matches_plain_greedy_and_keeps_topk():
    torch.manual_seed(0)
    model = tiny_model(layers=2, seed=2)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
    batch = generate_greedy(model, prompts, max_new_tokens=12, stop_ids=[2], pad_id=0, topk=5)
    for prompt, response, ids, lp in zip(prompts, batch.responses, batch.topk_ids, batch.topk_logprobs):
        assert response == greedy_reference(model, prompt, 12)
        assert ids.shape == (len(response), 5) and lp.dtype == np.float16
        assert ids[:, 0].tolist() == response
        assert np.all(np.diff(lp.astype(np.float32), axis=1) <= 1e-3)


class _ChatTokenizer:
    """Just enough of a tokenizer for render_conversation: characters -> ids in the tiny vocabulary."""

    chat_template = "tiny"
    pad_token_id = 0
    name_or_path = "tiny"

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True, return_dict=False):
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return [1] + [3 + (ord(c) % (VOCAB - 3)) for c in text[-40:]]


def _settings(tmp_path: Path, **kw) -> DataSettings:
    questions = tmp_path / "train.jsonl"
    if not questions.exists():
        questions.write_text("".join(json.dumps({"question": f"Question number {i} about apples?", "answer": "#### 1"}) + "\n" for i in range(10)))
    base = dict(
        train_path=str(questions), cache_dir=str(tmp_path / "cache"), templates=("math", "chat"), seed=1, shard_size=4, batch_size=3,
        max_new_tokens=6, topk=4, heldout_every=5, check_evaluation_overlap=False, compact_dir=str(tmp_path / "compact"),
    )
    base.update(kw)
    return DataSettings(**base)


def test_generation_resumes_shard_by_shard_and_rebuilds_from_compact(tmp_path):
    model = tiny_model(layers=2, seed=4)
    tok = _ChatTokenizer()
    settings = _settings(tmp_path)
    store = generate_responses(settings, "tiny", model, tok, [2], progress=False)
    assert store.completed() == list(range(5))  # 20 prompts in shards of 4
    reference = {(e.line, e.template): e for e in iter_examples(store.root, split="all")}
    assert len(reference) == 20
    assert all(e.topk_ids.shape == (len(e.response_ids), 4) for e in reference.values())
    # A kill between shards (or mid-write: a stray tmp file) leaves complete shards only; a rerun fills the gap.
    store.shard_path(2).unlink()
    (store.root / ".shard_00002.npz.123.tmp").write_bytes(b"partial")
    assert store.completed() == [0, 1, 3, 4]
    mtime = store.shard_path(0).stat().st_mtime_ns
    generate_responses(_settings(tmp_path, compact_dir=None), "tiny", model, tok, [2], progress=False)
    assert store.completed() == list(range(5)) and store.shard_path(0).stat().st_mtime_ns == mtime
    again = {(e.line, e.template): e for e in iter_examples(store.root, split="all")}
    assert all(again[k].response_ids == reference[k].response_ids for k in reference)
    # Held-out lines are excluded from the training split under every template.
    train = list(iter_examples(store.root, split="train"))
    held = list(iter_examples(store.root, split="heldout"))
    assert {e.line for e in held} == {2, 7} and not {e.line for e in train} & {2, 7}
    # The compact copy has no prompt text and rebuilds the cache (top-k by teacher forcing).
    compact = tmp_path / "compact"
    assert sorted(p.name for p in compact.glob("*.npz")) == ["responses_0000.npz"]
    with np.load(compact / "responses_0000.npz") as z:
        assert "prompt_ids" not in z.files and "topk_logprobs" not in z.files
    rebuilt = _settings(tmp_path, cache_dir=str(tmp_path / "cache2"))
    store2 = generate_responses(rebuilt, "tiny", model, tok, [2], progress=False)
    for e in iter_examples(store2.root, split="all"):
        ref = reference[(e.line, e.template)]
        assert e.response_ids == ref.response_ids and e.prompt_ids == ref.prompt_ids
        assert np.array_equal(e.topk_ids[:, 0], ref.topk_ids[:, 0])
        assert np.allclose(e.topk_logprobs, ref.topk_logprobs, atol=2e-2)


def test_store_refuses_other_settings_and_max_prompts_extends(tmp_path):
    model = tiny_model(layers=2, seed=4)
    store = generate_responses(_settings(tmp_path, max_prompts=4), "tiny", model, _ChatTokenizer(), [2], progress=False)
    assert store.completed() == [0]
    assert generate_responses(_settings(tmp_path, max_prompts=9), "tiny", model, _ChatTokenizer(), [2], progress=False).completed() == [0, 1, 2]
    with pytest.raises(ValueError, match="other settings"):
        generate_responses(_settings(tmp_path, max_prompts=4, max_new_tokens=9), "tiny", model, _ChatTokenizer(), [2], progress=False)


def _synthetic_store(root: Path, n_shards: int = 2, per_shard: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    meta = {"target": "tiny", "fingerprint": "x", "shard_size": per_shard, "max_new_tokens": 40, "topk": 4, "num_prompts": n_shards * per_shard, "heldout_every": 5}
    store = ResponseStore.open(root, meta)
    for shard in range(n_shards):
        specs = [PromptSpec(shard * per_shard + i, "math") for i in range(per_shard)]
        prompts = [rng.integers(3, VOCAB, size=int(rng.integers(4, 20))).tolist() for _ in specs]
        responses = [rng.integers(3, VOCAB, size=int(rng.integers(10, 40))).tolist() for _ in specs]
        ids = [rng.integers(0, VOCAB, size=(len(r), 4)).astype(np.uint16) for r in responses]
        lps = [np.log(rng.dirichlet(np.ones(4), size=len(r)) * 0.8).astype(np.float16) for r in responses]
        store.write_shard(shard, specs, prompts, GeneratedBatch(responses, ids, lps), 0.0)
    return root


@pytest.mark.parametrize("recipe_name", ["dllm", "ar"])
def test_training_resumes_exactly_after_a_kill(tmp_path, recipe_name):
    """3 steps + kill + resume for 3 more == 6 uninterrupted steps (weights, optimizer, counters)."""
    from failfast_bench.train.ar_recipe import ArRecipe, ArSettings
    from failfast_bench.train.dllm_recipe import DllmRecipe, DllmSettings
    from failfast_bench.train.evaluate import EvalSettings, heldout_examples
    from failfast_bench.train.loop import LoopSettings, Trainer

    store = _synthetic_store(tmp_path / "store")
    target = tiny_model(layers=3, seed=5)
    ev = EvalSettings(examples=1, points_per_example=2, sim_tokens=8, sub_block_size=4, n=4, n_max=12, budget=16, ar_spec_lens=(2,))

    def make(run_dir: Path, steps: int, budget=None):
        torch.manual_seed(0)
        if recipe_name == "dllm":
            recipe = DllmRecipe(target, "tiny", [0, 1], DllmSettings(block_size=8, sub_block_size=4), ev)
        else:
            recipe = ArRecipe(target, "tiny", [0, 2], ArSettings(), ev, pad_id=0)
        loop = LoopSettings(steps=steps, batch_size=3, lr=1e-3, warmup_steps=2, eval_every=100, log_every=1, min_examples=1, autocast_bf16=False)
        return Trainer(recipe, run_dir, store, loop, lambda: heldout_examples(store, 2), {"test": True}, progress=False)

    straight = make(tmp_path / "a", 6)
    straight.run()
    first = make(tmp_path / "b", 6)
    first.s.steps = 3  # stands in for a kill after step 3 (the checkpoint is what a kill leaves behind)
    first.run()
    resumed = make(tmp_path / "b", 6)
    resumed.run()
    assert resumed.state["step"] == straight.state["step"] == 6
    for (name, a), (_, b) in zip(straight.recipe.model.state_dict().items(), resumed.recipe.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert resumed.state["examples_seen"] == straight.state["examples_seen"]
    # The export is a loadable drafter in the shipped layout, carrying its training facts.
    config = json.loads((tmp_path / "b" / "export" / "config.json").read_text())
    assert config["failfast_bench"]["training"]["steps"] == 6
    assert config["failfast_bench"]["shares_target_embeddings"] is True
    evals = [json.loads(l) for l in (tmp_path / "b" / "log.jsonl").read_text().splitlines() if '"eval"' in l]
    assert evals and ("failfast_tokens_per_round" in evals[-1] or "ar_sf_2_tokens_per_round" in evals[-1])



def test_top1_is_split_by_the_targets_own_confidence():
    """The breakdown bands points by the target's probability of its greedy token (read from the stored top-k,
    matched by id) and reports each band's share and the drafter's top-1 there."""
    from failfast_bench.train.evaluate import _greedy_probability, _top1_by_target_confidence

    logprobs = np.log(np.array([[0.95, 0.03], [0.6, 0.3], [0.4, 0.35]], dtype=np.float16))
    ex = tdata.Example(line=0, template="math", prompt_ids=[1], response_ids=[5, 6, 8],
                       topk_ids=np.array([[5, 2], [6, 7], [9, 8]]), topk_logprobs=logprobs)
    probs = [_greedy_probability(ex, j) for j in range(3)]
    assert probs == pytest.approx([0.95, 0.6, 0.35], abs=1e-3)  # the third greedy token is matched by id
    out = _top1_by_target_confidence([True, True, False, True], probs + [1.0])
    assert out["target_confidence_mean"] == pytest.approx((0.95 + 0.6 + 0.35 + 1.0) / 4, abs=1e-3)
    assert [(b["band"], b["share"], b["top1"]) for b in out["top1_by_target_confidence"]] == [
        ("[0, 0.5)", 0.25, 0.0), ("[0.5, 0.9)", 0.25, 1.0), ("[0.9, 1]", 0.5, 1.0)]
    assert _top1_by_target_confidence([True], []) == {}  # no log-probabilities: no breakdown
