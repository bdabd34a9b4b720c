"""EAGLE-3 training recipe: the training-time-test unroll computes exactly what chain drafting computes, tap
features match the verifier's, and a tiny end-to-end run trains, exports, resumes and drafts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from failfast_bench.drafters.eagle3 import Eagle3Drafter
from failfast_bench.drafters.eagle3_head import HeadKVCache, load_head, tap_layers
from failfast_bench.engine import generate
from failfast_bench.train import eagle3 as recipe
from failfast_bench.train.data import GeneratedBatch, PromptSpec, ResponseStore
from failfast_bench.verify import TargetVerifier

from tiny_models import EOS, greedy_reference, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


TAPS = (0, 1, 2)


@pytest.fixture(scope="module")
def target():
    return tiny_model("llama", seed=1, layers=4)


def test_tap_features_match_hidden_states(target):
    seqs = [[1, 5, 9, 14, 3, 7], [1, 40, 41]]
    feats = recipe.tap_features(target, seqs, TAPS)
    for seq, f in zip(seqs, feats):
        with torch.no_grad():
            hs = target(input_ids=torch.tensor([seq]), output_hidden_states=True).hidden_states
        ref = torch.cat([hs[i + 1][0] for i in TAPS], dim=-1)
        assert f.shape == ref.shape and torch.allclose(f, ref, rtol=1e-4, atol=1e-4)


def test_ttt_unroll_equals_chain_drafting(target):
    torch.manual_seed(0)
    used = torch.tensor(sorted(torch.randperm(96)[:40].tolist()))
    head = recipe.init_head(target, used, TAPS, seed=0)
    with torch.no_grad():
        head.lm_head.weight.normal_(0, 0.3)
        for p in head.midlayer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    head.eval()
    prompt = [1, 5, 9, 14, 3, 22, 8]
    seq = prompt + [int(t) for t in torch.randint(3, 96, (9,))]
    feats = recipe.tap_features(target, [seq], TAPS)[0]
    k = 4
    item = recipe.Item(len(prompt), seq, feats.to(torch.bfloat16).view(torch.uint16).numpy(),
                       np.zeros((len(seq) - len(prompt), 2), dtype=np.int64), np.zeros((len(seq) - len(prompt), 2), dtype=np.float32))
    batch = recipe.make_batch([item], torch.full((96,), -1, dtype=torch.long), k)
    batch.features = feats[None, : len(seq) - 1]  # exact features (the cache stores bf16)
    with torch.no_grad():
        outputs = recipe.ttt_forward(head, batch, k)
        r0 = batch.window
        for r in range(max(r0, 3), len(seq) - 1 - k):
            cache = HeadKVCache()
            out = head.step(head.fuse(feats[None, : r + 1]), torch.tensor([seq[1 : r + 2]]), torch.arange(r + 1)[None], cache)[0, -1]
            for j in range(k):
                assert torch.allclose(head.logits(out), head.logits(outputs[j][0, r - r0]), atol=1e-4), (r, j)
                out = head.step(out[None, None], torch.tensor([[seq[r + 2 + j]]]), torch.tensor([[r + 1 + j]]), cache)[0, -1]


def _fake_store(tmp_path, target, n_prompts=48, name="responses", lines=None):
    """A response cache in the data pipeline's format, holding the tiny target's own greedy responses."""
    g = torch.Generator().manual_seed(5)
    specs, prompts, responses = [], [], []
    for line in (lines if lines is not None else range(n_prompts)):
        prompt = [1] + torch.randint(3, 96, (6,), generator=g).tolist()
        specs.append(PromptSpec(line, "math"))
        prompts.append(prompt)
        responses.append(greedy_reference(target, prompt, 20))
    topk_ids, topk_lp = [], []
    with torch.no_grad():
        for p, r in zip(prompts, responses):
            logits = target(input_ids=torch.tensor([p + r])).logits[0, len(p) - 1 : len(p) + len(r) - 1]
            v, i = torch.log_softmax(logits, -1).topk(8, dim=-1)
            topk_ids.append(i.numpy().astype(np.uint16))
            topk_lp.append(v.numpy().astype(np.float16))
    meta = {"target": "tiny", "fingerprint": "x", "num_prompts": len(specs), "shard_size": 24, "max_new_tokens": 20, "topk": 8,
            "heldout_every": 8, "templates": ["math"]}
    store = ResponseStore.open(tmp_path / name, meta)
    for shard in range(-(-len(specs) // 24)):
        sl = slice(24 * shard, 24 * shard + 24)
        store.write_shard(shard, specs[sl], prompts[sl], GeneratedBatch(responses[sl], topk_ids[sl], topk_lp[sl]), 1.0)
    return store.root


def test_tiny_training_run_exports_resumes_and_drafts(tmp_path, target):
    store = _fake_store(tmp_path, target)
    settings = recipe.Eagle3Settings(draft_vocab_size=64, taps=list(TAPS), ttt_length=3, chain_k=3, lr=3e-3, warmup_steps=5,
                                     max_steps=40, batch_size=8, eval_every=20, eval_examples=10, autocast_bf16=False,
                                     reference_examples=0, own_repeats=1)
    out = tmp_path / "shipped"
    summary = recipe.train_eagle3(settings, target, store, tmp_path / "work", out, "tiny", stop_ids=[EOS], progress=False)
    first, last = summary["history"][0], summary["final_eval"]
    assert summary["steps"] == 40 and summary["heldout_sequences"] == 6
    assert last["step0_loss"] < first["step0_loss"] or last["top1_agreement"] > first["top1_agreement"]
    assert (out / "config.json").exists() and (out / "model.safetensors").exists() and "EAGLE-3 head" in (out / "README.md").read_text()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == list(TAPS) and cfg["torch_dtype"] == "bfloat16"
    # resume: same settings, more steps -> continues from the checkpoint
    settings.max_steps = 45
    again = recipe.train_eagle3(settings, target, store, tmp_path / "work", out, "tiny", stop_ids=[EOS], progress=False)
    assert again["steps"] == 45 and len(again["history"]) >= len(summary["history"])
    # the exported head drafts losslessly in the engine
    head = load_head(str(out), target)
    drafter = Eagle3Drafter(head, tap_layers(head.config, 4), spec_len=3, stop_ids=(EOS,))
    prompt = [1, 7, 8, 9, 10, 11, 12]
    gen = generate(TargetVerifier(target, feature_layers=drafter.target_feature_layers), drafter, prompt, 24, stop_ids=[EOS])
    ref = greedy_reference(target, prompt, 24)
    assert gen.output_tokens[: len(ref)] == ref
    with pytest.raises(RuntimeError, match="other settings"):
        settings.ttt_length = 4
        recipe.train_eagle3(settings, target, store, tmp_path / "work", None, "tiny", progress=False)


def test_separate_heldout_store_is_used_for_evaluation(tmp_path, target):
    store = _fake_store(tmp_path, target, n_prompts=24)
    held = _fake_store(tmp_path, target, name="heldout", lines=[7, 15, 23, 31, 39, 47, 55, 63, 71])
    settings = recipe.Eagle3Settings(draft_vocab_size=64, taps=list(TAPS), ttt_length=2, chain_k=2, max_steps=3, batch_size=8,
                                     eval_every=3, eval_examples=20, autocast_bf16=False, reference_examples=0)
    summary = recipe.train_eagle3(settings, target, store, tmp_path / "w", None, "tiny", progress=False, heldout_store_dir=held)
    assert summary["heldout_sequences"] == 9


class CharTokenizer:
    """Just enough of a tokenizer for the reference-solution builder (a chat template and __call__)."""

    chat_template = "fake"
    eos_token_id = EOS

    def encode_text(self, text):
        return [ord(c) % 90 + 3 for c in text]

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True, return_dict=False):
        return [1] + self.encode_text(messages[-1]["content"][-12:]) + [4]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": self.encode_text(text)}


def test_reference_solutions_become_extra_training_data(tmp_path, target):
    rows = [{"question": f"Q{i}: how many apples {i}?", "answer": f"She has {i}+1 = <<{i}+1={i + 1}>>{i + 1} apples.\n#### {i + 1}"} for i in range(20)]
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert recipe.clean_reference_answer(rows[3]["answer"]) == "She has 3+1 = 4 apples.\nThe answer is \\boxed{4}."
    work = tmp_path / "work"
    n = recipe.build_reference_data(target, CharTokenizer(), train_file, work, TAPS, 12, [EOS], heldout_every=8, shard_size=8, batch_size=4)
    assert n == 2
    examples = [ex for shard in (0, 1) for ex in ResponseStore.open(work / recipe.REFERENCE_DIR).read_shard(shard)]
    assert len(examples) == 12 and all(ex.line % 8 != 7 for ex in examples)
    ex = examples[0]
    with torch.no_grad():
        logits = target(input_ids=torch.tensor([ex.prompt_ids + ex.response_ids])).logits[0]
    want = logits[len(ex.prompt_ids) - 1 : -1].log_softmax(-1).topk(16).indices
    assert torch.equal(torch.from_numpy(ex.topk_ids[:, 0]), want[:, 0])
    store = _fake_store(tmp_path, target, n_prompts=24)
    settings = recipe.Eagle3Settings(draft_vocab_size=64, taps=list(TAPS), ttt_length=2, chain_k=2, max_steps=2, batch_size=8,
                                     eval_every=2, eval_examples=4, autocast_bf16=False, reference_examples=12, own_repeats=2)
    summary = recipe.train_eagle3(settings, target, store, work, None, "tiny", progress=False, tokenizer=CharTokenizer())
    assert summary["train_sequences"] == 2 * 21 + 12  # 24 own prompts minus 3 held out, repeated twice, + 12 solutions
