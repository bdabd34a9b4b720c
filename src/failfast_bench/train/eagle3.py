"""Training recipe for an EAGLE-3 head ("training-time test", EAGLE-3 paper §3 / SpecForge ``OnlineEagle3Model``).

Data: the target's own greedy responses (the data pipeline's response cache, :mod:`failfast_bench.train.data`),
with the target's top-k log-probabilities at every response position as soft labels, repeated ``own_repeats``
times per pass; plus GSM8K-train reference solutions teacher-forced through the target (features and top-k
from one forward, no generation: :func:`build_reference_data`). The head also needs the target's tap features
at every position of prompt + response: they are computed once per response shard with a bf16 target forward
(stopped after the deepest tap) and cached as resumable ``.npy`` shards (:class:`FeatureCache`). Shards that
arrive while training runs are taken in every ``reload_minutes``.

Training-time test, as in SpecForge: row ``s`` (features of position ``s``, token ``s+1``) predicts token
``s+2`` at step 0. At step ``j`` the same row takes the head's own step ``j−1`` output instead of the
target's features, the (true) token ``s+1+j`` and rotary position ``s+j``, and predicts token ``s+2+j``. Its
attention sees the step-0 keys of rows ``≤ s`` (the committed prefix) plus its own keys of steps ``1..j``
(the draft chain) — exactly what the head sees when it drafts a chain from committed row ``s``, so step ``j``
accuracy is the chance that draft position ``j`` is right given the earlier ones were. Loss per step: soft
cross-entropy against the target's distribution restricted to the draft vocabulary (renormalised), only at
response positions whose target argmax is in the draft vocabulary; steps weighted ``decay**j``; no feature
loss. Held-out metrics: per-step accuracy and the expected tokens per round of a k-token chain (leading
correct steps + 1, averaged over every response position).

Everything resumes: the feature cache shard by shard, training from ``work_dir/checkpoint.pt`` (written
atomically every few minutes). The shipped head is written with :func:`failfast_bench.drafters.eagle3_head.save_head`
(bf16, no embedding) plus a model card.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..drafters.eagle3_head import Eagle3Head, default_tap_layers, new_head_config, save_head
from ..trace import dumps_strict
from .data import Example, ResponseStore, is_heldout

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass
class Eagle3Settings:
    """Knobs of the recipe (defaults: the shipped SmolLM2-135M head)."""

    draft_vocab_size: int = 4096
    taps: Optional[list[int]] = None  # output-of-layer ids; None = (1, L/2-1, L-4)
    ttt_length: int = 7  # SpecForge ttt_length / EAGLE repo length
    loss_decay: float = 0.8
    lr: float = 5e-4
    min_lr_ratio: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup_steps: int = 50
    max_steps: int = 1200
    batch_size: int = 8
    grad_clip: float = 0.5
    max_seq_len: int = 512
    templates: Optional[list[str]] = None  # None = every template in the response cache
    feature_batch_size: int = 16
    eval_every: int = 100
    eval_examples: int = 48
    chain_k: int = 5
    checkpoint_minutes: float = 10.0
    reload_minutes: float = 20.0
    time_budget_minutes: Optional[float] = None
    autocast_bf16: bool = True
    threads: int = 1
    seed: int = 0
    # Extra data: GSM8K-train reference solutions, teacher-forced through the target (features + top-k from
    # one forward; no generation). They teach the feature→token map on more text; the target's own
    # responses stay the main signal and are repeated ``own_repeats`` times per pass.
    reference_examples: int = 3000
    own_repeats: int = 2

    def fingerprint(self) -> str:
        """Settings that change what is trained (resuming under other ones is refused; the data mixture may grow)."""
        mutable = ("eval_every", "eval_examples", "checkpoint_minutes", "reload_minutes", "time_budget_minutes", "threads", "feature_batch_size",
                   "max_steps", "reference_examples", "own_repeats")
        keep = {k: v for k, v in dataclasses.asdict(self).items() if k not in mutable}
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------
# Draft vocabulary
def choose_draft_vocab(examples: Sequence[Example], size: int, vocab_size: int, always: Sequence[int] = ()) -> torch.Tensor:
    """The ``size`` most frequent response tokens (plus ``always``), sorted: draft id i ↔ target id used[i].

    Prompt tokens count a tenth (they break ties among rare response tokens); remaining slots go to the
    lowest unseen ids, which in a BPE vocabulary are the earliest (most frequent) merges.
    """
    counts = np.zeros(vocab_size, dtype=np.float64)
    for ex in examples:
        np.add.at(counts, np.asarray(ex.response_ids, dtype=np.int64), 1.0)
        np.add.at(counts, np.asarray(ex.prompt_ids, dtype=np.int64), 0.1)
    forced = sorted(set(int(t) for t in always))
    order = [int(t) for t in np.argsort(-counts, kind="stable") if int(t) not in forced]
    used = sorted(forced + order[: max(size - len(forced), 0)])
    return torch.tensor(used, dtype=torch.long)


def vocab_maps(used: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    d2t = used - torch.arange(len(used))
    t2d = torch.zeros(vocab_size, dtype=torch.bool)
    t2d[used] = True
    return d2t, t2d


def vocab_coverage(examples: Sequence[Example], used: torch.Tensor) -> float:
    inside = set(used.tolist())
    total = hit = 0
    for ex in examples:
        total += len(ex.response_ids)
        hit += sum(1 for t in ex.response_ids if t in inside)
    return hit / max(total, 1)


# ------------------------------------------------------------------------------------------------
# Target tap features, cached per response shard
class _StopForward(Exception):
    pass


@torch.inference_mode()
def tap_features(target, sequences: Sequence[Sequence[int]], layers: Sequence[int], pad_id: int = 0,
                 with_topk: int = 0, response_lengths: Optional[Sequence[int]] = None):
    """Concatenated outputs of ``layers`` for each sequence (right-padded batch; stops after the deepest tap).

    With ``with_topk`` > 0 the forward runs to the end and each sequence also gets the target's top-k
    log-probabilities at its last ``response_lengths[i]`` positions: a list of (features, ids, logprobs)."""
    device = next(target.parameters()).device
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(list(seq))
        mask[row, : len(seq)] = 1
    blocks = target.model.layers
    captured: dict[int, torch.Tensor] = {}
    deepest = max(layers)

    def hook(index):
        def fn(module, args, output):
            captured[index] = output[0] if isinstance(output, tuple) else output
            if index == deepest:
                raise _StopForward

        return fn

    if with_topk:
        deepest = -1  # run every layer: the logits are needed too
    handles = [blocks[i].register_forward_hook(hook(i)) for i in sorted(set(layers))]
    logits = None
    try:
        if with_topk:
            logits = target(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        else:
            target.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    feats = torch.cat([captured[i] for i in layers], dim=-1)
    if not with_topk:
        return [feats[row, : len(seq)].cpu() for row, seq in enumerate(sequences)]
    out = []
    for row, (seq, n_resp) in enumerate(zip(sequences, response_lengths)):
        # logits at position t predict token t+1: response token r is predicted at len(seq) - n_resp + r - 1
        lp = logits[row, len(seq) - n_resp - 1 : len(seq) - 1].float().log_softmax(-1)
        values, indices = lp.topk(with_topk, dim=-1)
        out.append((feats[row, : len(seq)].cpu(), indices.cpu().numpy().astype(np.int32), values.cpu().numpy().astype(np.float16)))
    return out


class FeatureCache:
    """``features_{shard}.npy`` (bf16 bits as uint16, [tokens, 3H]) + ``offsets_{shard}.npy`` per response shard."""

    def __init__(self, root: Path, layers: Sequence[int]):
        self.root = Path(os.path.expanduser(str(root)))
        self.layers = tuple(int(i) for i in layers)
        self.root.mkdir(parents=True, exist_ok=True)
        meta = self.root / "meta.json"
        want = {"layers": list(self.layers), "dtype": "bfloat16"}
        if meta.exists():
            have = json.loads(meta.read_text())
            if have != want:
                raise ValueError(f"feature cache {self.root} was built for {have}, not {want}; delete it or use another work_dir")
        else:
            meta.write_text(json.dumps(want))

    def paths(self, shard: int) -> tuple[Path, Path]:
        return self.root / f"features_{shard:05d}.npy", self.root / f"offsets_{shard:05d}.npy"

    def has(self, shard: int) -> bool:
        return all(p.exists() for p in self.paths(shard))

    def build(self, shard: int, examples: Sequence[Example], target, batch_size: int = 16) -> None:
        seqs = [ex.prompt_ids + ex.response_ids for ex in examples]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out: list[Optional[torch.Tensor]] = [None] * len(seqs)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            for i, f in zip(rows, tap_features(target, [seqs[i] for i in rows], self.layers)):
                out[i] = f
        self.write(shard, out)

    def write(self, shard: int, features: Sequence[torch.Tensor]) -> None:
        """Store one shard's per-sequence features (in example order), atomically."""
        arrays = [f.to(torch.bfloat16).view(torch.uint16).numpy() for f in features]
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
        feat_path, off_path = self.paths(shard)
        for path, array in ((feat_path, np.concatenate(arrays)), (off_path, offsets)):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, array)
            os.replace(tmp, path)

    def load(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        feat_path, off_path = self.paths(shard)
        return np.load(feat_path, mmap_mode="r"), np.load(off_path)


@dataclass
class Item:
    """One training sequence: prompt + response ids, its features, and the target's top-k at response positions."""

    prompt_len: int
    ids: list[int]
    features: np.ndarray  # uint16 bf16 bits [len(ids), 3H]
    topk_ids: np.ndarray  # [len(response), k]
    topk_logprobs: np.ndarray  # [len(response), k]


class Corpus:
    """Examples of the cached shards (train or held-out), with their features memory-mapped."""

    def __init__(self, store_dir: Path, cache: FeatureCache, split: str, templates: Optional[Sequence[str]], max_seq_len: int):
        self.store = ResponseStore.open(Path(store_dir))
        self.cache = cache
        self.items: list[tuple[int, int]] = []  # (shard, index in shard)
        self._examples: dict[int, list[Example]] = {}
        self._features: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        every = int(self.store.meta.get("heldout_every", 64))
        for shard in self.store.completed():
            if not cache.has(shard):
                continue
            for i, ex in enumerate(self._shard(shard)):
                if templates and ex.template not in templates:
                    continue
                if len(ex.prompt_ids) + len(ex.response_ids) > max_seq_len or len(ex.response_ids) < 2:
                    continue
                if (split == "heldout") == is_heldout(ex.line, every):
                    self.items.append((shard, i))

    def _shard(self, shard: int) -> list[Example]:
        if shard not in self._examples:
            self._examples[shard] = self.store.read_shard(shard, with_logits=True)
        return self._examples[shard]

    def __len__(self) -> int:
        return len(self.items)

    def item(self, k: int) -> Item:
        shard, i = self.items[k]
        ex = self._shard(shard)[i]
        if shard not in self._features:
            self._features[shard] = self.cache.load(shard)
        feats, offsets = self._features[shard]
        return Item(len(ex.prompt_ids), ex.prompt_ids + ex.response_ids, feats[offsets[i] : offsets[i + 1]], ex.topk_ids, ex.topk_logprobs)

    def length(self, k: int) -> int:
        shard, i = self.items[k]
        ex = self._shard(shard)[i]
        return len(ex.prompt_ids) + len(ex.response_ids)


class Mixture:
    """Several corpora as one (each repeated ``repeats`` times): the target's responses and extra sources."""

    def __init__(self, parts: Sequence[Corpus], repeats: Sequence[int]):
        self.parts = [p for p, r in zip(parts, repeats) for _ in range(max(r, 0))]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, k: int) -> tuple[Corpus, int]:
        part = int(np.searchsorted(self.offsets, k, side="right") - 1)
        return self.parts[part], k - int(self.offsets[part])

    def item(self, k: int) -> Item:
        corpus, i = self._locate(k)
        return corpus.item(i)

    def length(self, k: int) -> int:
        corpus, i = self._locate(k)
        return corpus.length(i)

    def examples(self) -> list[Example]:
        seen, out = set(), []
        for corpus in self.parts:
            if id(corpus) not in seen:
                seen.add(id(corpus))
                out.extend(corpus._shard(a)[b] for a, b in corpus.items)
        return out

    def templates(self) -> list[str]:
        return sorted({ex.template for ex in self.examples()})


# ------------------------------------------------------------------------------------------------
# Reference solutions as extra data
REFERENCE_DIR = "reference"


def clean_reference_answer(answer: str) -> str:
    """GSM8K solution text without calculator annotations, ending like the math template asks (boxed)."""
    import re

    body, _, final = answer.partition("####")
    body = re.sub(r"<<[^>]*>>", "", body).strip()
    final = final.strip()
    return f"{body}\nThe answer is \\boxed{{{final}}}." if final else body


def build_reference_data(target, tokenizer, train_file: Path, work_dir: Path, taps: Sequence[int], n_examples: int,
                         stop_ids: Sequence[int], heldout_every: int = 64, shard_size: int = 64, batch_size: int = 16,
                         topk: int = 16, seed: int = 0, time_budget_s: Optional[float] = None) -> int:
    """Teacher-force GSM8K-train reference solutions (math template) through the target, writing response shards
    (the data pipeline's format) and their tap features; resumable shard by shard. Returns shards written."""
    from ..data import render_conversation
    from .data import GeneratedBatch, PromptSpec, evaluation_texts, normalize_text, read_question_lines

    rows = [json.loads(line) for line in open(os.path.expanduser(str(train_file)), encoding="utf-8") if line.strip()]
    questions = read_question_lines(Path(train_file))
    exclude, _ = evaluation_texts()
    lines = [i for i, q in enumerate(questions) if not is_heldout(i, heldout_every) and normalize_text(q) not in exclude and rows[i].get("answer")]
    random.Random(seed).shuffle(lines)
    lines = lines[:n_examples]
    meta = {"target": getattr(target.config, "_name_or_path", ""), "fingerprint": hashlib.sha256(json.dumps(lines).encode()).hexdigest(),
            "num_prompts": len(lines), "shard_size": shard_size, "max_new_tokens": 0, "topk": topk, "heldout_every": heldout_every,
            "templates": ["math"], "subset": "reference_solutions", "train_file": str(train_file)}
    store = ResponseStore.open(Path(work_dir) / REFERENCE_DIR, meta)
    cache = FeatureCache(Path(work_dir) / "features_reference", taps)
    eos = int(stop_ids[0]) if stop_ids else int(tokenizer.eos_token_id)
    started, written = time.time(), 0
    for shard in range(store.num_shards()):
        if store.shard_path(shard).exists() and cache.has(shard):
            continue
        if time_budget_s is not None and time.time() - started > time_budget_s:
            break
        t0 = time.time()
        chunk = lines[shard * shard_size : (shard + 1) * shard_size]
        specs = [PromptSpec(i, "math") for i in chunk]
        prompts = [render_conversation(tokenizer, [questions[i]], [], "math") for i in chunk]
        responses = [tokenizer(clean_reference_answer(rows[i]["answer"]), add_special_tokens=False)["input_ids"] + [eos] for i in chunk]
        feats, top_ids, top_lp = [None] * len(chunk), [None] * len(chunk), [None] * len(chunk)
        order = sorted(range(len(chunk)), key=lambda i: len(prompts[i]) + len(responses[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out = tap_features(target, [prompts[i] + responses[i] for i in idx], taps, with_topk=topk, response_lengths=[len(responses[i]) for i in idx])
            for i, (f, ti, tl) in zip(idx, out):
                feats[i], top_ids[i], top_lp[i] = f, ti, tl
        store.write_shard(shard, specs, prompts, GeneratedBatch(responses, top_ids, top_lp), time.time() - t0)
        cache.write(shard, feats)
        written += 1
        log.info("reference shard %d/%d: %d solutions in %.0f s", shard + 1, store.num_shards(), len(chunk), time.time() - t0)
    return written


# ------------------------------------------------------------------------------------------------
# Batches
@dataclass
class Batch:
    features: torch.Tensor  # [B, T, 3H] rows 0..T-1 (T = longest sequence − 1)
    ids: torch.Tensor  # [B, T + extra] token ids of the whole sequence (0-padded)
    target_ids: torch.Tensor  # [B, T + extra, k] draft ids of the target's top-k at each sequence position (-1 = none)
    target_probs: torch.Tensor  # [B, T + extra, k] renormalised over the draft vocabulary
    target_ok: torch.Tensor  # [B, T + extra] response position whose target argmax is in the draft vocabulary
    is_response: torch.Tensor  # [B, T + extra]
    window: int  # first row whose predictions can be response tokens (rows before are prompt context only)


def make_batch(items: Sequence[Item], t2d_index: torch.Tensor, ttt_length: int) -> Batch:
    """Pad a list of items; ``t2d_index[target id]`` = draft id or -1."""
    rows = max(len(it.ids) for it in items) - 1
    width = rows + ttt_length + 2
    hidden3 = items[0].features.shape[1]
    k = items[0].topk_ids.shape[1]
    b = len(items)
    feats = torch.zeros(b, rows, hidden3, dtype=torch.bfloat16)
    ids = torch.zeros(b, width, dtype=torch.long)
    tid = torch.full((b, width, k), -1, dtype=torch.long)
    tp = torch.zeros(b, width, k)
    ok = torch.zeros(b, width, dtype=torch.bool)
    resp = torch.zeros(b, width, dtype=torch.bool)
    for row, it in enumerate(items):
        n = len(it.ids)
        feats[row, : n - 1] = torch.from_numpy(np.array(it.features[: n - 1])).view(torch.bfloat16)
        ids[row, :n] = torch.tensor(it.ids)
        p = it.prompt_len
        top_ids = torch.from_numpy(it.topk_ids.astype(np.int64))
        draft = t2d_index[top_ids]
        logp = torch.from_numpy(it.topk_logprobs.astype(np.float32))
        logp = logp.masked_fill(draft < 0, float("-inf"))
        probs = torch.softmax(logp, dim=-1).nan_to_num(0.0)
        tid[row, p:n] = draft
        tp[row, p:n] = probs
        ok[row, p:n] = draft[:, 0] >= 0
        resp[row, p:n] = True
    window = max(0, min(it.prompt_len for it in items) - 2 - (ttt_length - 1))
    return Batch(feats, ids, tid, tp, ok, resp, window)


def _batches(corpus: Corpus, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of similar length (sorted within chunks of 32 batches): less padding, still random."""
    order = list(range(len(corpus)))
    random.Random(seed * 7919 + epoch).shuffle(order)
    chunk = batch_size * 32
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=corpus.length)
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    random.Random(seed * 104729 + epoch).shuffle(batches)
    return batches


# ------------------------------------------------------------------------------------------------
# Training-time test
def _expand_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def ttt_forward(head: Eagle3Head, batch: Batch, ttt_length: int):
    """Unroll the head ``ttt_length`` steps; returns the per-step pre-norm outputs [B, S, H] of rows ``window..T-1``
    (logits are computed by the caller, only at the rows it needs)."""
    b, rows, _ = batch.features.shape
    r0 = batch.window
    attn = head.midlayer.self_attn
    groups = attn.num_heads // attn.num_kv_heads
    scale = 1.0 / math.sqrt(attn.head_dim)
    positions = torch.arange(rows).expand(b, rows)
    store: dict[str, list[torch.Tensor]] = {"k": [], "v": []}

    def attend_step0(q, k, v):
        store["k0"], store["v0"] = k, v
        causal = torch.ones(rows, rows, dtype=torch.bool).tril()
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal, enable_gqa=True)

    hidden = head.fuse(batch.features.to(head.fc.weight.dtype))
    out = head.layer(hidden, batch.ids[:, 1 : 1 + rows], positions, attend_step0)[:, r0:]
    outputs = [out]
    s = rows - r0
    k0 = _expand_kv(store["k0"], groups)
    v0 = _expand_kv(store["v0"], groups)
    # row r0+i may see step-0 keys 0..r0+i
    prefix_mask = torch.ones(s, rows, dtype=torch.bool).tril(diagonal=r0)
    for j in range(1, ttt_length):

        def attend_ttt(q, k, v):
            store["k"].append(_expand_kv(k, groups))
            store["v"].append(_expand_kv(v, groups))
            scores0 = torch.matmul(q, k0.transpose(2, 3)) * scale
            scores0 = scores0.masked_fill(~prefix_mask, float("-inf"))
            diag = [(q * ki).sum(-1, keepdim=True) * scale for ki in store["k"]]
            weights = torch.softmax(torch.cat([scores0] + diag, dim=-1).float(), dim=-1).to(q.dtype)
            context = torch.matmul(weights[..., :rows], v0)
            for i, vi in enumerate(store["v"]):
                context = context + weights[..., rows + i : rows + i + 1] * vi
            return context

        ids_j = batch.ids[:, 1 + j + r0 : 1 + j + rows]
        out = head.layer(out, ids_j, positions[:, r0:] + j, attend_ttt)
        outputs.append(out)
    return outputs


def step_losses(outputs: Sequence[torch.Tensor], batch: Batch, settings: Eagle3Settings, head: Eagle3Head):
    """Weighted soft cross-entropy over the unrolled steps, and per-step (loss, correct, counted).

    Logits are computed only at the rows that carry a loss (response positions whose target argmax is in
    the draft vocabulary): the draft LM head and its softmax are a third of the work."""
    r0 = batch.window
    s = outputs[0].shape[1]
    total = 0.0
    stats = []
    for j, out in enumerate(outputs):
        sl = slice(r0 + 2 + j, r0 + 2 + j + s)  # row r predicts sequence position r + 2 + j
        ok = batch.target_ok[:, sl]
        tid, tp = batch.target_ids[:, sl][ok], batch.target_probs[:, sl][ok]
        lg = head.logits(out[ok])
        logq = torch.log_softmax(lg.float(), dim=-1)
        per_pos = -(tp * torch.gather(logq, -1, tid.clamp(min=0))).sum(-1)
        n = int(ok.sum())
        loss_j = per_pos.sum() / max(n, 1)
        total = total + (settings.loss_decay**j) * loss_j
        correct = int((lg.argmax(-1) == tid[:, 0]).sum())
        stats.append((float(loss_j.detach()), correct, n))
    return total, stats


def ttt_loss(head: Eagle3Head, batch: Batch, settings: Eagle3Settings):
    return step_losses(ttt_forward(head, batch, settings.ttt_length), batch, settings, head)


@torch.no_grad()
def evaluate(head: Eagle3Head, batches: Sequence[Batch], settings: Eagle3Settings) -> dict:
    """Held-out per-step accuracy (vs the greedy response token) and the expected tokens/round of a k-chain."""
    k = min(settings.chain_k, settings.ttt_length)
    correct = np.zeros(settings.ttt_length)
    counted = np.zeros(settings.ttt_length)
    run_lengths = []
    loss_sum, loss_n = 0.0, 0
    for batch in batches:
        with _autocast(settings):
            outputs = ttt_forward(head, batch, settings.ttt_length)
            _, stats = step_losses(outputs, batch, settings, head)
        loss_sum += stats[0][0]
        loss_n += 1
        r0 = batch.window
        s = outputs[0].shape[1]
        hits = []
        for j, out in enumerate(outputs):
            sl = slice(r0 + 2 + j, r0 + 2 + j + s)
            valid = batch.is_response[:, sl]
            with _autocast(settings):
                predicted = head.to_target_ids(head.logits(out[valid]).argmax(-1))
            hit = torch.zeros_like(valid)
            hit[valid] = predicted == batch.ids[:, sl][valid]
            correct[j] += int(hit.sum())
            counted[j] += int(valid.sum())
            hits.append(hit)
        # chains start at rows whose first prediction is a response token and that have k tokens ahead
        start_valid = batch.is_response[:, r0 + 2 : r0 + 2 + s] & batch.is_response[:, r0 + 1 + k : r0 + 1 + k + s]
        lead = torch.zeros_like(hits[0], dtype=torch.long)
        alive = torch.ones_like(hits[0])
        for j in range(k):
            alive = alive & hits[j]
            lead = lead + alive.long()
        run_lengths.extend(lead[start_valid].tolist())
    acc = (correct / np.maximum(counted, 1)).round(4).tolist()
    return {
        "top1_agreement": acc[0],
        "step_accuracy": acc,
        "chain_k": k,
        "expected_tokens_per_round": round(1.0 + float(np.mean(run_lengths)) if run_lengths else 1.0, 4),
        "positions": int(counted[0]),
        "step0_loss": round(loss_sum / max(loss_n, 1), 4),
    }


def _autocast(settings: Eagle3Settings):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.autocast_bf16)


# ------------------------------------------------------------------------------------------------
# The job
def init_head(target, used: torch.Tensor, taps: Sequence[int], seed: int) -> Eagle3Head:
    """A fresh head shaped like the target; lm_head/norm start from the target's own output layer (draft rows)."""
    torch.manual_seed(seed)
    head = Eagle3Head(new_head_config(target.config, len(used), taps))
    d2t, t2d = vocab_maps(used, target.config.vocab_size)
    head.d2t.copy_(d2t)
    head.t2d.copy_(t2d)
    with torch.no_grad():
        head.lm_head.weight.copy_(target.get_output_embeddings().weight[used].float())
        head.norm.weight.copy_(target.model.norm.weight.float())
    head.attach_embeddings(target.get_input_embeddings())
    return head


def _eval_batches(items: Sequence[Item], t2d_index: torch.Tensor, s: Eagle3Settings) -> list[Batch]:
    return [make_batch(items[i : i + s.batch_size], t2d_index, s.ttt_length) for i in range(0, len(items), s.batch_size)]


def _lr(step: int, s: Eagle3Settings) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = min(1.0, (step - s.warmup_steps) / max(1, s.max_steps - s.warmup_steps))
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def build_features(store_dir: Path, cache: FeatureCache, target, batch_size: int, time_budget_s: Optional[float] = None, progress: bool = True) -> int:
    """Compute tap features for every completed response shard that has none yet; returns shards built."""
    store = ResponseStore.open(Path(store_dir))
    todo = [i for i in store.completed() if not cache.has(i)]
    t0 = time.time()
    built = 0
    for shard in todo:
        if time_budget_s is not None and time.time() - t0 > time_budget_s:
            break
        t1 = time.time()
        examples = store.read_shard(shard, with_logits=False)
        cache.build(shard, examples, target, batch_size)
        built += 1
        if progress:
            log.info("features shard %d: %d sequences in %.0f s", shard, len(examples), time.time() - t1)
    return built


def train_eagle3(
    settings: Eagle3Settings,
    target,
    store_dir: Path,
    work_dir: Path,
    out_dir: Optional[Path] = None,
    target_name: str = "",
    stop_ids: Sequence[int] = (),
    progress: bool = True,
    heldout_store_dir: Optional[Path] = None,
    tokenizer=None,
) -> dict:
    """Build missing features, then train (resuming from ``work_dir``), evaluate, and export to ``out_dir``.

    ``target`` is the loaded target model (features are computed in its dtype: load it in bf16 on CPU).
    Held-out metrics use ``heldout_store_dir`` (a cache of held-out lines only) when it exists, else the
    held-out lines of ``store_dir``. With ``settings.reference_examples`` > 0 and a ``tokenizer``, missing
    reference-solution shards are built first (:func:`build_reference_data`). Returns the model card's summary.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, settings.threads))
    try:
        return _train(settings, target, Path(store_dir), work_dir, out_dir, target_name, stop_ids, progress, heldout_store_dir, tokenizer)
    finally:
        torch.set_num_threads(before)


def _train(settings, target, store_dir, work_dir, out_dir, target_name, stop_ids, progress, heldout_store_dir=None, tokenizer=None) -> dict:
    work_dir = Path(os.path.expanduser(str(work_dir)))
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    budget = None if settings.time_budget_minutes is None else 60.0 * settings.time_budget_minutes
    n_layers = target.config.num_hidden_layers
    taps = tuple(settings.taps) if settings.taps else default_tap_layers(n_layers)
    target.requires_grad_(False)
    cache = FeatureCache(work_dir / "features", taps)
    feature_seconds = time.time()
    build_features(store_dir, cache, target, settings.feature_batch_size, budget, progress)
    meta = ResponseStore.open(store_dir).meta
    train_file = meta.get("train_file")
    if settings.reference_examples > 0 and tokenizer is not None and train_file:
        build_reference_data(target, tokenizer, Path(train_file), work_dir, taps, settings.reference_examples, stop_ids,
                             int(meta.get("heldout_every", 64)), batch_size=settings.feature_batch_size, seed=settings.seed,
                             time_budget_s=None if budget is None else max(0.0, budget - (time.time() - started)))
    feature_seconds = time.time() - feature_seconds

    if heldout_store_dir is not None and (Path(heldout_store_dir) / "meta.json").exists():
        held_store, held_cache = Path(heldout_store_dir), FeatureCache(work_dir / "features_heldout", taps)
    else:
        held_store, held_cache = store_dir, cache

    def held_corpus() -> Corpus:
        if held_cache is not cache:
            build_features(held_store, held_cache, target, settings.feature_batch_size, None, progress)
        return Corpus(held_store, held_cache, "heldout", settings.templates, settings.max_seq_len)

    def train_corpus() -> Mixture:
        parts, repeats = [Corpus(store_dir, cache, "train", settings.templates, settings.max_seq_len)], [settings.own_repeats]
        if settings.reference_examples > 0 and (work_dir / REFERENCE_DIR / "meta.json").exists():
            ref_cache = FeatureCache(work_dir / "features_reference", taps)
            parts.append(Corpus(work_dir / REFERENCE_DIR, ref_cache, "train", None, settings.max_seq_len))
            repeats.append(1)
        return Mixture(parts, repeats)

    train = train_corpus()
    held = held_corpus()
    if len(train) == 0:
        raise RuntimeError(f"no training examples with features under {store_dir} (generate responses first)")
    ckpt_path = work_dir / CHECKPOINT
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path.exists() else None
    if state is not None and state["fingerprint"] != settings.fingerprint():
        raise RuntimeError(f"{ckpt_path} was trained with other settings; delete it (or use another work_dir) to start over")
    if state is None:
        all_train = train.examples()
        used = choose_draft_vocab(all_train, settings.draft_vocab_size, target.config.vocab_size, stop_ids)
        coverage = vocab_coverage(all_train, used)
        distinct = len({t for ex in all_train for t in ex.response_ids})
    else:
        used, coverage, distinct = state["used"], state["coverage"], state.get("distinct_response_tokens")
    head = init_head(target, used, taps, settings.seed)
    head.train()
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)
    step, epoch, cursor = 0, 0, 0
    history: list[dict] = []
    tokens_seen = 0
    train_seconds = 0.0
    if state is not None:
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        step, epoch, cursor = state["step"], state["epoch"], state["cursor"]
        history, tokens_seen, train_seconds = state["history"], state["tokens_seen"], state["train_seconds"]
        log.info("resumed at step %d (epoch %d)", step, epoch)
    t2d_index = torch.full((target.config.vocab_size,), -1, dtype=torch.long)
    t2d_index[used] = torch.arange(len(used))
    eval_items = [held.item(i) for i in range(min(settings.eval_examples, len(held)))]
    eval_batches = _eval_batches(eval_items, t2d_index, settings)

    def snapshot() -> dict:
        return {"fingerprint": settings.fingerprint(), "settings": dataclasses.asdict(settings), "head": head.state_dict(),
                "optimizer": opt.state_dict(), "step": step, "epoch": epoch, "cursor": cursor, "used": used,
                "coverage": coverage, "history": history, "tokens_seen": tokens_seen, "train_seconds": train_seconds,
                "taps": list(taps), "train_sequences": len(train), "heldout_sequences": len(held),
                "distinct_response_tokens": distinct, "train_templates": train.templates(),
                "train_sources": [len(p) for p in train.parts]}

    def checkpoint():
        _atomic_torch_save(snapshot(), ckpt_path)

    last_ckpt = time.time()
    window_stats: list = []
    stopped_by = "max_steps"
    plan = _batches(train, settings.batch_size, settings.seed, epoch)
    last_reload = time.time()
    while step < settings.max_steps:
        # Responses may still be arriving (the data job runs alongside): every reload_minutes, take new shards
        # in by starting a new pass (the rest of the current pass is dropped: batches are random anyway).
        reload_due = time.time() - last_reload > 60 * settings.reload_minutes
        if cursor >= len(plan) or reload_due:
            last_reload = time.time()
            grew = build_features(store_dir, cache, target, settings.feature_batch_size, None, progress) > 0
            fresh = train_corpus() if grew or settings.reference_examples else train
            if cursor < len(plan) and len(fresh) == len(train):
                continue  # nothing new: finish the current pass
            epoch, cursor = epoch + 1, 0
            if fresh is not train:
                train = fresh
                held = held_corpus()
                if len(eval_items) < settings.eval_examples and len(held) > len(eval_items):
                    eval_items = [held.item(i) for i in range(min(settings.eval_examples, len(held)))]
                    eval_batches = _eval_batches(eval_items, t2d_index, settings)
                log.info("epoch %d: %d train / %d held-out sequences", epoch, len(train), len(held))
            plan = _batches(train, settings.batch_size, settings.seed, epoch)
            continue
        t_step = time.time()
        items = [train.item(i) for i in plan[cursor]]
        batch = make_batch(items, t2d_index, settings.ttt_length)
        for group in opt.param_groups:
            group["lr"] = _lr(step, settings)
        with _autocast(settings):
            loss, stats = ttt_loss(head, batch, settings)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        opt.step()
        step += 1
        cursor += 1
        tokens_seen += int(batch.is_response.sum())
        train_seconds += time.time() - t_step
        window_stats.append(stats)
        if progress and step % 25 == 0:
            acc = [sum(s[j][1] for s in window_stats) / max(1, sum(s[j][2] for s in window_stats)) for j in range(settings.ttt_length)]
            log.info("step %d epoch %d loss %.3f acc %s lr %.2e %.2f s/step", step, epoch, float(loss.detach()), " ".join(f"{a:.2f}" for a in acc), _lr(step, settings), train_seconds / max(step, 1))
            window_stats = []
        if step % settings.eval_every == 0 or step == settings.max_steps:
            head.eval()
            metrics = evaluate(head, eval_batches, settings)
            head.train()
            metrics.update(step=step, epoch=epoch, tokens_seen=tokens_seen, train_seconds=round(train_seconds))
            history.append(metrics)
            log.info("eval %s", metrics)
            checkpoint()
            last_ckpt = time.time()
        elif time.time() - last_ckpt > 60 * settings.checkpoint_minutes:
            checkpoint()
            last_ckpt = time.time()
        if budget is not None and time.time() - started > budget:
            stopped_by = "time_budget"
            break
    checkpoint()
    head.eval()
    final = evaluate(head, eval_batches, settings)
    summary = summarize(snapshot(), final, target_name, store_dir, stopped_by)
    summary["feature_seconds_this_run"] = round(feature_seconds)
    if out_dir is not None:
        export(head, Path(out_dir), summary)
    return summary


def summarize(state: dict, final_eval: dict, target_name: str, store_dir: Path, stopped_by: str) -> dict:
    """The model card's facts from a training snapshot (a checkpoint or the live state)."""
    store = ResponseStore.open(Path(store_dir))
    return {
        "target": target_name,
        "stopped_by": stopped_by,
        "steps": state["step"],
        "epochs_completed": state["epoch"],
        "tokens_seen": state["tokens_seen"],
        "train_seconds": round(state["train_seconds"]),
        "train_sequences": state["train_sequences"],
        "heldout_sequences": state["heldout_sequences"],
        "draft_vocab_size": len(state["used"]),
        "draft_vocab_coverage": round(float(state["coverage"]), 5),
        "distinct_response_tokens": state.get("distinct_response_tokens"),
        "train_templates": state.get("train_templates"),
        "taps": list(state["taps"]),
        "final_eval": final_eval,
        "history": state["history"],
        "settings": state["settings"],
        "data": dict(store.meta, **store.stats()),
    }


def export_from_checkpoint(target, work_dir: Path, store_dir: Path, out_dir: Path, target_name: str = "") -> dict:
    """Ship the head of ``work_dir/checkpoint.pt`` as it is now (e.g. while training continues elsewhere).

    The reported metrics are those of the checkpoint's last evaluation."""
    state = torch.load(Path(os.path.expanduser(str(work_dir))) / CHECKPOINT, map_location="cpu", weights_only=False)
    if not state["history"]:
        raise RuntimeError("the checkpoint has not been evaluated yet; wait for the first evaluation")
    head = init_head(target, state["used"], state["taps"], 0)
    head.load_state_dict(state["head"])
    summary = summarize(state, state["history"][-1], target_name, store_dir, "checkpoint_export")
    export(head, Path(out_dir), summary)
    return summary


def export(head: Eagle3Head, out_dir: Path, summary: dict) -> None:
    """Write the shipped head (bf16 weights, no embedding), ``train_summary.json`` and a model card."""
    meta = {
        "recipe": "failfast_bench.train.eagle3",
        "shares_target_embeddings": True,
        "heldout_top1_agreement": summary["final_eval"]["top1_agreement"],
        "heldout_expected_tokens_per_round_chain": summary["final_eval"]["expected_tokens_per_round"],
    }
    save_head(head, out_dir, dtype=torch.bfloat16, extra=meta)
    (out_dir / "train_summary.json").write_text(dumps_strict(summary, indent=2) + "\n")
    (out_dir / "README.md").write_text(model_card(summary, out_dir))


def model_card(s: dict, out_dir: Path) -> str:
    ev = s["final_eval"]
    size = sum(p.stat().st_size for p in Path(out_dir).iterdir() if p.is_file() and p.suffix == ".safetensors")
    st = s["settings"]
    data = s["data"]
    return f"""# EAGLE-3 head for {s['target'] or 'the target'}

An EAGLE-3 draft head (one Llama decoder layer reading the target's hidden states from layers {s['taps']}
(0-based outputs, i.e. the inputs of layers {[t + 1 for t in s['taps']]}), fused 3H→H, plus the token embedding;
its own norm and LM head over a {s['draft_vocab_size']}-token draft vocabulary with `d2t`/`t2d` maps). The layout
is the SpecForge / EAGLE-repo one (`LlamaForCausalLMEagle3`, `midlayer.*`, `fc`, `norm`, `lm_head`, `d2t`,
`t2d`); the frozen token embedding is not stored: it is the target's own. Weights: bf16, {size / 1e6:.1f} MB.

Use: `python -m failfast_bench drafter=eagle3` (chain, k = {st['chain_k']}) or `drafter=eagle3 drafter.tree=true`.

## Training (recipe `failfast_bench.train.eagle3`, training-time test)
- Data: the target's own greedy responses (≤ {data.get('max_new_tokens')} new tokens) to GSM8K *train* questions,
  prompt templates used: {s.get('train_templates')} (the response cache plans {data.get('templates')}; it held
  {data.get('shards')} of {data.get('of_shards')} shards, {data.get('response_tokens'):,} response tokens, when this card was written);
  evaluation prompts excluded; train lines with line % {data.get('heldout_every')} == 7 held out. Soft labels: the
  target's top-{data.get('topk')} log-probabilities renormalised over the draft vocabulary.
  Sequences used: {s['train_sequences']} train, {s['heldout_sequences']} held out.
- Draft vocabulary: {s['draft_vocab_size']} tokens, the most frequent response tokens first ({s.get('distinct_response_tokens')}
  distinct ones were seen), then prompt tokens, then the lowest unseen ids (earliest BPE merges); they cover
  {100 * s['draft_vocab_coverage']:.2f}% of training response tokens.
- Unroll length {st['ttt_length']} (step weights {st['loss_decay']}^j), AdamW lr {st['lr']} (betas {st['betas']},
  warm-up {st['warmup_steps']}, cosine to {st['min_lr_ratio']}×), batch {st['batch_size']} sequences, grad clip {st['grad_clip']},
  bf16 autocast on CPU, {st['threads']} thread(s).
- Steps: {s['steps']} ({s['epochs_completed']} passes over the data available at the time; responses kept arriving
  during training); response tokens seen: {s['tokens_seen']:,};
  training wall time: {s['train_seconds'] / 3600:.2f} h on a shared 2-core CPU (tap features cached once beforehand).

## Held-out metrics (teacher-forced unroll on {ev['positions']} held-out response positions)
- Top-1 agreement with the target (draft position 1): **{ev['top1_agreement']:.3f}**
- Accuracy per draft position (given the earlier ones right): {ev['step_accuracy']}
- Expected tokens per round of a {ev['chain_k']}-token chain, bonus included: **{ev['expected_tokens_per_round']:.2f}**

## Config
{json.dumps(st, indent=2)}
"""


# ------------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> None:
    """Standalone entry (the Hydra train app calls :func:`train_eagle3` directly)."""
    from .. import models

    parser = argparse.ArgumentParser(description="Train an EAGLE-3 head on the target's cached greedy responses.")
    parser.add_argument("--target-name", default="smollm2-135m")
    parser.add_argument("--target", default="asset:smollm2-135m")
    parser.add_argument("--store", default="~/.cache/failfast-bench/train_data/smollm2-135m/responses")
    parser.add_argument("--heldout-store", default="~/.cache/failfast-bench/train_data/smollm2-135m/heldout",
                        help="cache of held-out lines only (used for evaluation when it exists)")
    parser.add_argument("--work-dir", default="~/.cache/failfast-bench/train_runs/smollm2-135m/eagle3")
    parser.add_argument("--out", default=None, help="shipped head directory (default: none)")
    for f in dataclasses.fields(Eagle3Settings):
        if f.type in ("int", "float", "bool", "Optional[float]", "str"):
            kind = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes"), "Optional[float]": float, "str": str}[f.type]
            parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None)
    parser.add_argument("--templates", default=None, help="comma list, e.g. math,code")
    parser.add_argument("--export-only", action="store_true", help="ship the current checkpoint to --out and exit")
    parser.add_argument("--no-reference-build", action="store_true",
                        help="use the reference solutions already built, do not build missing ones (another process does)")
    parser.add_argument("--build-reference", type=int, default=0, metavar="N",
                        help="teacher-force N GSM8K-train reference solutions into work_dir/reference and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    settings = Eagle3Settings()
    for f in dataclasses.fields(Eagle3Settings):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(settings, f.name, value)
    if args.templates:
        settings.templates = args.templates.split(",")
    torch.set_num_threads(max(1, settings.threads))
    src = models.resolve_source(args.target)
    target = models.load_causal_lm(src, torch.bfloat16, torch.device("cpu"))
    tokenizer = models.load_tokenizer(src)
    stop_ids = models.stop_token_ids(tokenizer, target.config, [])
    if args.build_reference:
        store_meta = ResponseStore.open(Path(os.path.expanduser(args.store))).meta
        taps = tuple(settings.taps) if settings.taps else default_tap_layers(target.config.num_hidden_layers)
        n = build_reference_data(target, tokenizer, Path(store_meta["train_file"]), Path(os.path.expanduser(args.work_dir)), taps,
                                 args.build_reference, stop_ids, int(store_meta.get("heldout_every", 64)), batch_size=settings.feature_batch_size, seed=settings.seed,
                                 time_budget_s=None if settings.time_budget_minutes is None else 60 * settings.time_budget_minutes)
        print(f"reference shards written: {n}")
        return
    if args.export_only:
        if not args.out:
            parser.error("--export-only needs --out")
        summary = export_from_checkpoint(target, Path(args.work_dir), Path(os.path.expanduser(args.store)), Path(args.out), args.target_name)
        print(json.dumps(summary["final_eval"], indent=2))
        return
    summary = train_eagle3(settings, target, Path(os.path.expanduser(args.store)), Path(args.work_dir), Path(args.out) if args.out else None,
                           args.target_name, stop_ids, heldout_store_dir=Path(os.path.expanduser(args.heldout_store)),
                           tokenizer=None if args.no_reference_build else tokenizer)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("history", "settings", "data")}, indent=2, default=str))


if __name__ == "__main__":
    main()
