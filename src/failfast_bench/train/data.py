"""Training data for the project's drafters: the target's own greedy responses to training prompts.

Prompts. Questions of GSM8K *train* (never test) - or, in a store of its own, another collection of
:mod:`.prompt_sources` (chat requests, code completions; ``PromptSpec.line`` is then the index in it) - each rendered in the target's chat template exactly as
evaluation prompts are (:func:`failfast_bench.data.render_conversation`), under one or more of the
paper's templates: ``math`` (the natural match for the GSM8K evaluation), ``code`` (the same question
as a "write a Python script" task, so the drafter sees code-shaped answers) and ``chat`` (the bare
question). The list of prompts is a deterministic shuffle, so a partly generated data set is a random
sample. Questions whose train line index falls in the held-out set are never trained on, under any
template. Any question whose text equals an evaluation prompt (GSM8K test, HumanEval, MT-Bench) is
dropped (:func:`evaluation_texts`).

Responses. Generated greedily by the target in left-padded batches, shard by shard. A shard is one
``.npz`` file written atomically (tmp file + rename), so the job can be killed at any moment and a
rerun continues with the first missing shard. Each shard also keeps the target's top-k log-probabilities
at every response position (the distillation targets) - they come for free from the decoding loop.

Committable copy. :func:`export_compact` writes the responses alone (token ids + the train line index and
template of each prompt; no GSM8K text) as compressed files a repository can hold;
:func:`import_compact` rebuilds the cache from them, recomputing the top-k log-probabilities with one
teacher-forced forward per batch (much cheaper than generating).

:func:`iter_examples` is the one entry point the recipes (and the EAGLE-3 head recipe) read from.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from .prompt_sources import GSM8K_SOURCE, load_source

log = logging.getLogger(__name__)

TEMPLATE_IDS = {"math": 0, "code": 1, "chat": 2, "mt_bench": 3}
TEMPLATE_NAMES = {v: k for k, v in TEMPLATE_IDS.items()}
SHARD_FORMAT = 1
COMPACT_FORMAT = 1


# ---------------------------------------------------------------------------------------------
# Prompts


@dataclass(frozen=True)
class PromptSpec:
    """One training prompt: a GSM8K-train line rendered under one template."""

    line: int
    template: str


def resolve_train_file(raw: Optional[str], cache_root: Path) -> Path:
    """The GSM8K-train file: ``raw`` when given, else ``$FAILFAST_BENCH_DATA/gsm8k/train.jsonl``, else the
    Hugging Face ``openai/gsm8k`` train split (hub or its cache) written once to ``cache_root`` as JSON lines.
    """
    from types import SimpleNamespace

    from .. import data as bench_data

    if raw:
        return Path(os.path.expanduser(str(raw)))
    split = SimpleNamespace(name="gsm8k", split="train", use_hf=True)
    env = os.environ.get(bench_data.DATA_ENV)
    if env and Path(os.path.expanduser(env)).is_dir():
        found = bench_data._find_in_dir(Path(os.path.expanduser(env)), "gsm8k", "train")
        if found is not None:
            return found
    materialized = Path(os.path.expanduser(str(cache_root))) / "train_data" / "gsm8k_train.jsonl"
    if materialized.is_file():
        return materialized
    from_hub = bench_data._from_hf(split)
    if from_hub is None:
        raise FileNotFoundError(
            f"GSM8K train split not found: set data.train_path=<train.jsonl>, or ${bench_data.DATA_ENV} to a directory "
            "holding gsm8k/train.jsonl (https://github.com/openai/grade-school-math, grade_school_math/data/train.jsonl), "
            "or run where the Hugging Face hub (openai/gsm8k) is reachable"
        )
    rows, _ = from_hub
    materialized.parent.mkdir(parents=True, exist_ok=True)
    tmp = materialized.with_suffix(".partial")
    tmp.write_text("".join(json.dumps({"question": r["question"], "answer": r["answer"]}, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(materialized)
    return materialized


def read_question_lines(path: Path) -> list[str]:
    """The ``question`` field of every line of a GSM8K-style ``.jsonl`` file (line order kept)."""
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise FileNotFoundError(f"training questions file {path} does not exist (set data.train_path, or $FAILFAST_BENCH_DATA to a directory holding gsm8k/train.jsonl)")
    questions = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh):
            if not line.strip():
                continue
            row = json.loads(line)
            if "question" not in row:
                raise ValueError(f"{path} line {number} has no 'question' field")
            questions.append(str(row["question"]))
    return questions


def normalize_text(text: str) -> str:
    """Whitespace- and case-insensitive form used to compare prompts across sources."""
    return re.sub(r"\s+", " ", text).strip().lower()


def is_heldout(line: int, every: int) -> bool:
    """Held-out questions (for agreement measurements): every ``every``-th train line, offset 7."""
    return every > 0 and line % every == 7 % every


def prompt_specs(
    questions: Sequence[str],
    templates: Sequence[str],
    seed: int,
    exclude: frozenset[str] = frozenset(),
) -> list[PromptSpec]:
    """All training prompts in generation order: template by template, lines shuffled within each.

    Lines whose normalised text is in ``exclude`` (evaluation prompts) are skipped.
    """
    unknown = [t for t in templates if t not in TEMPLATE_IDS]
    if unknown:
        raise ValueError(f"unknown template(s) {unknown}; valid: {', '.join(TEMPLATE_IDS)}")
    lines = [i for i, q in enumerate(questions) if normalize_text(q) not in exclude]
    specs: list[PromptSpec] = []
    for k, template in enumerate(templates):
        order = list(lines)
        random.Random(seed * 1000 + k).shuffle(order)
        specs.extend(PromptSpec(i, template) for i in order)
    return specs


def specs_fingerprint(specs: Sequence[PromptSpec], questions: Sequence[str]) -> str:
    """Identifies the prompt list (order, templates and question texts) a cache was generated for."""
    h = hashlib.sha256()
    for s in specs:
        h.update(f"{s.line}:{s.template}:".encode())
        h.update(questions[s.line].encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def evaluation_texts() -> tuple[frozenset[str], list[str]]:
    """Normalised texts of every evaluation question that can be found, and notes on what was missing.

    GSM8K test (full split via the data sources of :mod:`failfast_bench.data`, else the packaged
    sample), HumanEval (prompt) and MT-Bench (every turn).
    """
    from omegaconf import OmegaConf

    from .. import data as bench_data

    texts: set[str] = set()
    notes: list[str] = []
    for name, split in (("gsm8k", "test"), ("humaneval", "test"), ("mt_bench", "test")):
        cfg = OmegaConf.create(
            {"name": name, "split": split, "path": None, "num_questions": None, "question_ids": None, "template": "chat",
             "turns": "both" if name == "mt_bench" else "first", "selection": "standard", "use_hf": False}
        )
        try:
            questions, source = bench_data.load_questions(cfg)
        except Exception as exc:  # noqa: BLE001 - reported, the caller decides
            notes.append(f"{name}: {exc}")
            continue
        for q in questions:
            texts.update(normalize_text(t) for t in q.turns)
        notes.append(f"{name}: {len(questions)} questions from {source.kind} {source.location}")
    return frozenset(texts), notes


# ---------------------------------------------------------------------------------------------
# Greedy batched generation with top-k capture


@dataclass
class GeneratedBatch:
    responses: list[list[int]]
    topk_ids: list[np.ndarray]  # [len(response), k] uint16/int32 per response
    topk_logprobs: list[np.ndarray]  # [len(response), k] float16


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int):
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        attn[row, width - len(p):] = 1
    return ids, attn


def generate_greedy(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    topk: int,
) -> GeneratedBatch:
    """Greedy responses of ``model`` to a batch of prompts, with the top-k log-probs at every step.

    A response ends with (and includes) its first stop id, or after ``max_new_tokens`` tokens.
    """
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    ids, attn = _left_pad(prompts, pad_id)
    ids, attn = ids.to(device), attn.to(device)
    positions = (attn.cumsum(1) - 1).clamp(min=0)
    n = len(prompts)
    stops = torch.tensor(sorted(set(int(s) for s in stop_ids)), device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    tokens, top_ids, top_lp = [], [], []
    cache = DynamicCache()
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=attn, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1)
        for _ in range(max_new_tokens):
            logprobs = out.logits[:, -1].float().log_softmax(-1)
            values, indices = logprobs.topk(topk, dim=-1)
            nxt = indices[:, 0]
            tokens.append(torch.where(done, torch.full_like(nxt, pad_id), nxt))
            top_ids.append(indices)
            top_lp.append(values)
            done = done | torch.isin(nxt, stops)
            if bool(done.all()):
                break
            attn = torch.cat([attn, torch.ones((n, 1), dtype=attn.dtype, device=device)], dim=1)
            positions = positions[:, -1:] + 1
            out = model(input_ids=tokens[-1][:, None], attention_mask=attn, position_ids=positions, past_key_values=cache, use_cache=True)
    steps = torch.stack(tokens, 1).cpu()
    ids_all = torch.stack(top_ids, 1).cpu()
    lp_all = torch.stack(top_lp, 1).cpu()
    stop_set = set(int(s) for s in stop_ids)
    batch = GeneratedBatch([], [], [])
    for row in range(n):
        seq = steps[row].tolist()
        length = len(seq)
        for j, t in enumerate(seq):
            if t in stop_set:
                length = j + 1
                break
        batch.responses.append(seq[:length])
        batch.topk_ids.append(ids_all[row, :length].numpy().astype(_id_dtype(model)))
        batch.topk_logprobs.append(lp_all[row, :length].numpy().astype(np.float16))
    return batch


def _id_dtype(model) -> Any:
    vocab = int(model.get_input_embeddings().weight.shape[0])
    return np.uint16 if vocab <= 65536 else np.int32


def teacher_forced_topk(model, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], topk: int, pad_id: int):
    """Top-k log-probs of the target at every response position, by one forward over prompt+response."""
    import torch

    seqs = [list(p) + list(r) for p, r in zip(prompts, responses)]
    ids, attn = _left_pad(seqs, pad_id)
    device = next(model.parameters()).device
    positions = (attn.cumsum(1) - 1).clamp(min=0)
    out_ids, out_lp = [], []
    with torch.inference_mode():
        logits = model(input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=positions.to(device)).logits
        width = ids.shape[1]
        for row, r in enumerate(responses):
            # logits at position t predict token t+1: the response's tokens are predicted by the rows
            # just before them.
            rows = logits[row, width - len(r) - 1: width - 1].float().log_softmax(-1)
            values, indices = rows.topk(topk, dim=-1)
            out_ids.append(indices.cpu().numpy().astype(_id_dtype(model)))
            out_lp.append(values.cpu().numpy().astype(np.float16))
    return out_ids, out_lp


# ---------------------------------------------------------------------------------------------
# Shard store


def _atomic_write(path: Path, write) -> None:
    """Write via a temporary file in the same directory and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_npz(path: Path, compressed: bool, **arrays) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compressed else np.savez)(fh, **arrays)

    _atomic_write(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(Path(path), lambda tmp: tmp.write_text(text))


@dataclass
class Example:
    """One training example: a prompt, the target's greedy response, and optionally its top-k log-probs."""

    line: int
    template: str
    prompt_ids: list[int]
    response_ids: list[int]
    topk_ids: Optional[np.ndarray] = None  # [len(response), k]
    topk_logprobs: Optional[np.ndarray] = None  # [len(response), k], float16 log-probabilities


@dataclass
class ResponseStore:
    """A directory of generated shards plus ``meta.json`` describing how they were made."""

    root: Path
    meta: dict = field(default_factory=dict)

    @property
    def meta_path(self) -> Path:
        return self.root / "meta.json"

    def shard_path(self, index: int) -> Path:
        return self.root / f"shard_{index:05d}.npz"

    @classmethod
    def open(cls, root: Path, meta: Optional[dict] = None) -> "ResponseStore":
        """Open (or create with ``meta``) a store; refuses to mix data generated under another setup."""
        root = Path(os.path.expanduser(str(root)))
        store = cls(root)
        if store.meta_path.exists():
            store.meta = json.loads(store.meta_path.read_text())
            if meta is not None:
                keys = ("target", "fingerprint", "shard_size", "max_new_tokens", "topk")
                diff = {k: (store.meta.get(k), meta.get(k)) for k in keys if store.meta.get(k) != meta.get(k)}
                if diff:
                    raise ValueError(
                        f"response cache {root} was generated with other settings {diff}; delete it or point data.cache_dir elsewhere"
                    )
        elif meta is not None:
            store.meta = dict(meta)
            atomic_write_text(store.meta_path, json.dumps(store.meta, indent=2, sort_keys=True) + "\n")
        else:
            raise FileNotFoundError(f"no response cache at {root} (generate it first: python -m failfast_bench.train stage=data)")
        return store

    def completed(self) -> list[int]:
        return sorted(int(p.stem.split("_")[1]) for p in self.root.glob("shard_*.npz"))

    def num_shards(self) -> int:
        return -(-int(self.meta["num_prompts"]) // int(self.meta["shard_size"]))

    def write_shard(self, index: int, specs: Sequence[PromptSpec], prompts: Sequence[Sequence[int]], batch: GeneratedBatch, seconds: float) -> None:
        lengths = np.array([len(r) for r in batch.responses], dtype=np.int32)
        plens = np.array([len(p) for p in prompts], dtype=np.int32)
        id_dtype = batch.topk_ids[0].dtype if batch.topk_ids else np.int32
        _save_npz(
            self.shard_path(index),
            compressed=False,
            format=np.array(SHARD_FORMAT),
            lines=np.array([s.line for s in specs], dtype=np.int32),
            templates=np.array([TEMPLATE_IDS[s.template] for s in specs], dtype=np.uint8),
            prompt_lengths=plens,
            prompt_ids=np.concatenate([np.asarray(p, dtype=id_dtype) for p in prompts]),
            response_lengths=lengths,
            response_ids=np.concatenate([np.asarray(r, dtype=id_dtype) for r in batch.responses]),
            topk_ids=np.concatenate(batch.topk_ids),
            topk_logprobs=np.concatenate(batch.topk_logprobs),
            seconds=np.array(seconds, dtype=np.float64),
        )

    def read_shard(self, index: int, with_logits: bool = True) -> list[Example]:
        with np.load(self.shard_path(index)) as z:
            plen, rlen = z["prompt_lengths"], z["response_lengths"]
            pids, rids = z["prompt_ids"].astype(np.int64), z["response_ids"].astype(np.int64)
            tids = z["topk_ids"] if with_logits else None
            tlp = z["topk_logprobs"] if with_logits else None
            examples = []
            p0 = r0 = 0
            for line, tmpl, pl, rl in zip(z["lines"], z["templates"], plen, rlen):
                ex = Example(int(line), TEMPLATE_NAMES[int(tmpl)], pids[p0:p0 + pl].tolist(), rids[r0:r0 + rl].tolist())
                if with_logits:
                    ex.topk_ids = tids[r0:r0 + rl].astype(np.int64)
                    ex.topk_logprobs = tlp[r0:r0 + rl].astype(np.float32)
                examples.append(ex)
                p0 += pl
                r0 += rl
        return examples

    def stats(self) -> dict:
        shards = self.completed()
        tokens = prompts = 0
        seconds = 0.0
        for i in shards:
            with np.load(self.shard_path(i)) as z:
                tokens += int(z["response_lengths"].sum())
                prompts += int(len(z["lines"]))
                seconds += float(z["seconds"])
        return {"shards": len(shards), "of_shards": self.num_shards(), "prompts": prompts, "response_tokens": tokens, "generation_seconds": round(seconds, 1)}


def iter_examples(
    store_dir: Path,
    split: str = "train",
    with_logits: bool = True,
    heldout_every: Optional[int] = None,
    shards: Optional[Sequence[int]] = None,
) -> Iterator[Example]:
    """Yield (prompt ids, response ids[, top-k log-probs]) examples from a response cache.

    ``split``: ``train`` (held-out lines excluded), ``heldout`` (only them) or ``all``. The held-out rule
    is the one the cache was generated with (``meta.json``) unless ``heldout_every`` overrides it.
    This is the data interface for every drafter recipe, including the EAGLE-3 head's.
    """
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split={split!r}; valid: train, heldout, all")
    store = ResponseStore.open(store_dir)
    every = int(heldout_every if heldout_every is not None else store.meta.get("heldout_every", 64))
    for index in (shards if shards is not None else store.completed()):
        for ex in store.read_shard(index, with_logits=with_logits):
            held = is_heldout(ex.line, every)
            if split == "all" or (split == "heldout") == held:
                yield ex


# ---------------------------------------------------------------------------------------------
# The generation job


@dataclass
class DataSettings:
    """What :func:`generate_responses` needs (mirrors the ``data`` section of conf/train/config.yaml)."""

    train_path: str
    cache_dir: str
    # gsm8k_train (questions of ``train_path``) or a collection of :mod:`.prompt_sources`; a store holds one source.
    source: str = GSM8K_SOURCE
    templates: Sequence[str] = ("math", "code", "chat")
    seed: int = 0
    shard_size: int = 64
    batch_size: int = 32
    max_new_tokens: int = 256
    topk: int = 16
    heldout_every: int = 64
    # Generate only the first max_prompts planned prompts (whole shards) in this run; the plan, and so the
    # cache's identity, stays the full prompt list, so a later run with a larger limit continues it.
    max_prompts: Optional[int] = None
    dtype: str = "bfloat16"
    check_evaluation_overlap: bool = True
    compact_dir: Optional[str] = None
    time_budget_minutes: Optional[float] = None
    # "all" = every planned prompt; "heldout" = only held-out lines (a small evaluation store).
    subset: str = "all"


def plan_prompts(settings: DataSettings) -> tuple[list[str], list[PromptSpec], list[str]]:
    """Read the questions, drop evaluation overlaps, and order the prompts (deterministic).

    GSM8K train drops exact evaluation prompts only (its questions are not paraphrases of GSM8K test); the
    other sources also drop any prompt sharing a 13-word sequence with an evaluation prompt.
    """
    exclude: frozenset[str] = frozenset()
    notes: list[str] = []
    if settings.check_evaluation_overlap:
        exclude, notes = evaluation_texts()
    if settings.source == GSM8K_SOURCE:
        questions = read_question_lines(Path(settings.train_path))
    else:
        prompts = load_source(settings.source, exclude)
        questions = prompts.texts
        notes.append(f"{settings.source}: {prompts.provenance}")
    specs = prompt_specs(questions, settings.templates, settings.seed, exclude)
    if settings.subset == "heldout":
        specs = [sp for sp in specs if is_heldout(sp.line, settings.heldout_every)]
    elif settings.subset != "all":
        raise ValueError(f"data subset={settings.subset!r}; valid: all, heldout")
    return questions, specs, notes


def generate_responses(settings: DataSettings, target_name: str, model, tokenizer, stop_ids: Sequence[int], progress: bool = True) -> ResponseStore:
    """Generate (or continue generating) the response cache, shard by shard; returns the store.

    Shards already on disk are skipped; with ``compact_dir`` set, shards present only in the committed
    compact copy are rebuilt by teacher forcing instead of being generated again.
    """
    from ..data import render_conversation

    questions, specs, notes = plan_prompts(settings)
    for note in notes:
        log.info("evaluation prompts excluded: %s", note)
    meta = {
        "format": SHARD_FORMAT,
        "target": target_name,
        "fingerprint": specs_fingerprint(specs, questions),
        "num_prompts": len(specs),
        "templates": list(settings.templates),
        "seed": settings.seed,
        "shard_size": settings.shard_size,
        "max_new_tokens": settings.max_new_tokens,
        "topk": settings.topk,
        "heldout_every": settings.heldout_every,
        "subset": settings.subset,
        "dtype": settings.dtype,
        "stop_ids": [int(s) for s in stop_ids],
    }
    if settings.source == GSM8K_SOURCE:
        meta["train_file"] = str(settings.train_path)
        meta["train_file_sha256"] = hashlib.sha256(Path(os.path.expanduser(settings.train_path)).read_bytes()).hexdigest()
    else:
        meta["source"] = settings.source
    store = ResponseStore.open(Path(settings.cache_dir), meta)
    compact: dict = {}
    if settings.compact_dir:
        compact = load_compact_index(Path(settings.compact_dir), expect_fingerprint=meta["fingerprint"])
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0])
    limit = store.num_shards()
    if settings.max_prompts is not None:
        limit = min(limit, -(-int(settings.max_prompts) // settings.shard_size))
    todo = [i for i in range(limit) if not store.shard_path(i).exists()]
    bar = _progress(total=limit, initial=limit - len(todo), desc="responses", enabled=progress)
    started = time.time()
    for index in todo:
        if settings.time_budget_minutes is not None and time.time() - started > 60 * settings.time_budget_minutes:
            log.info("time budget of %.0f min reached; rerun to continue", settings.time_budget_minutes)
            break
        chunk = specs[index * settings.shard_size: (index + 1) * settings.shard_size]
        prompts = [render_conversation(tokenizer, [questions[s.line]], [], s.template) for s in chunk]
        t0 = time.time()
        batch = _shard_from_compact(compact.get(index), chunk, prompts, model, settings, pad_id)
        if batch is None:
            batch = _generate_sorted(model, prompts, settings, stop_ids, pad_id)
        store.write_shard(index, chunk, prompts, batch, time.time() - t0)
        if settings.compact_dir:
            export_compact(store, Path(settings.compact_dir))  # the committable copy keeps up shard by shard
        bar.update(1)
        bar.set_postfix(tok_s=f"{sum(len(r) for r in batch.responses) / max(time.time() - t0, 1e-9):.0f}")
    bar.close()
    if settings.compact_dir and store.completed():
        export_compact(store, Path(settings.compact_dir))
    return store


def _generate_sorted(model, prompts, settings: DataSettings, stop_ids, pad_id) -> GeneratedBatch:
    """Generate in batches of similar prompt length (less padding), results in the original order."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = GeneratedBatch([None] * len(prompts), [None] * len(prompts), [None] * len(prompts))  # type: ignore[list-item]
    for start in range(0, len(order), settings.batch_size):
        rows = order[start: start + settings.batch_size]
        part = generate_greedy(model, [prompts[i] for i in rows], settings.max_new_tokens, stop_ids, pad_id, settings.topk)
        for j, i in enumerate(rows):
            out.responses[i], out.topk_ids[i], out.topk_logprobs[i] = part.responses[j], part.topk_ids[j], part.topk_logprobs[j]
    return out


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, mininterval=5)


# ---------------------------------------------------------------------------------------------
# Compact, committable copy of the responses


def export_compact(store: ResponseStore, out_dir: Path, shards_per_file: int = 16) -> list[Path]:
    """Write response ids (no prompt text, no logits) of every completed shard group to ``out_dir``.

    File ``responses_{g:04d}.npz`` holds shards ``[g*shards_per_file, (g+1)*shards_per_file)``; a group
    is rewritten when it gained shards since the last export.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = ("target", "fingerprint", "num_prompts", "templates", "seed", "shard_size", "max_new_tokens", "heldout_every", "dtype", "train_file_sha256", "source", "stop_ids")
    meta = {k: store.meta[k] for k in keys if k in store.meta}
    meta.update({"format": COMPACT_FORMAT, "shards_per_file": shards_per_file})
    if compact_fingerprint(out_dir) not in (None, meta["fingerprint"]):
        # The copy answered another prompt list: none of its groups may survive next to this store's.
        for stale in out_dir.glob("responses_*.npz"):
            stale.unlink()
    atomic_write_text(out_dir / "meta.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    done = store.completed()
    written = []
    for group in sorted({i // shards_per_file for i in done}):
        members = [i for i in done if i // shards_per_file == group]
        path = out_dir / f"responses_{group:04d}.npz"
        if path.exists():
            with np.load(path) as z:
                if sorted(z["shards"].tolist()) == members:
                    continue
        shard_col, lines, templates, lengths, ids = [], [], [], [], []
        for i in members:
            with np.load(store.shard_path(i)) as z:
                shard_col.append(np.full(len(z["lines"]), i, dtype=np.int32))
                lines.append(z["lines"])
                templates.append(z["templates"])
                lengths.append(z["response_lengths"])
                ids.append(z["response_ids"])
        _save_npz(
            path,
            compressed=True,
            format=np.array(COMPACT_FORMAT),
            shards=np.array(members, dtype=np.int32),
            shard_of_row=np.concatenate(shard_col),
            lines=np.concatenate(lines),
            templates=np.concatenate(templates),
            response_lengths=np.concatenate(lengths),
            response_ids=np.concatenate(ids),
        )
        written.append(path)
    return written


def compact_fingerprint(compact_dir: Path) -> Optional[str]:
    """The prompt-list fingerprint a compact copy was made for (None: no copy there yet; "" if it names none)."""
    meta_path = Path(compact_dir) / "meta.json"
    return json.loads(meta_path.read_text()).get("fingerprint", "") if meta_path.exists() else None


def load_compact_index(compact_dir: Path, expect_fingerprint: Optional[str] = None) -> dict[int, list[tuple[int, int, list[int]]]]:
    """Shard index -> [(line, template id, response ids)] from a compact copy (empty if absent).

    With ``expect_fingerprint``, a copy made for another prompt list (e.g. another version of a prompt
    source's package) is ignored with a warning: its responses answer other prompts.
    """
    compact_dir = Path(compact_dir)
    index: dict[int, list[tuple[int, int, list[int]]]] = {}
    if expect_fingerprint is not None:
        found = compact_fingerprint(compact_dir)
        if found not in (None, expect_fingerprint):
            log.warning("compact responses %s were made for another prompt list (fingerprint %s, planned %s); generating instead", compact_dir, str(found)[:12], expect_fingerprint[:12])
            return index
    for path in sorted(compact_dir.glob("responses_*.npz")):
        with np.load(path) as z:
            offsets = np.concatenate([[0], np.cumsum(z["response_lengths"])])
            ids = z["response_ids"].astype(np.int64)
            for row, (shard, line, tmpl) in enumerate(zip(z["shard_of_row"], z["lines"], z["templates"])):
                index.setdefault(int(shard), []).append((int(line), int(tmpl), ids[offsets[row]: offsets[row + 1]].tolist()))
    return index


def _shard_from_compact(rows, chunk: Sequence[PromptSpec], prompts, model, settings: DataSettings, pad_id: int) -> Optional[GeneratedBatch]:
    """Rebuild a shard from its committed responses (top-k log-probs by teacher forcing), if it matches."""
    if not rows:
        return None
    if [(r[0], TEMPLATE_NAMES[r[1]]) for r in rows] != [(s.line, s.template) for s in chunk]:
        log.warning("compact copy does not match the planned prompts of this shard; generating it instead")
        return None
    responses = [r[2] for r in rows]
    batch = GeneratedBatch(responses, [], [])
    for start in range(0, len(responses), settings.batch_size):
        part_ids, part_lp = teacher_forced_topk(
            model, prompts[start: start + settings.batch_size], responses[start: start + settings.batch_size], settings.topk, pad_id
        )
        batch.topk_ids.extend(part_ids)
        batch.topk_logprobs.extend(part_lp)
    return batch
