"""Trajectory store: a block-diffusion drafter's passes, computed once per (drafter state, pass) and kept on disk.

Under greedy decoding every round's context is a prefix of the same target continuation, so a replayed
sweep (``run.replay=true``) asks the drafter for the same passes again and again: from the same cache and the
same partly masked block, the pass returns the same picks whatever the length policy, τ, N or N_max. This
module keeps them: one compressed ``.npz`` per prompt under
``<cache>/trajectories/<drafter identity>/``, holding for every pass its picks (greedy token and confidence per
requested row) and the row's top-k candidates with their probabilities. :class:`~failfast_bench.drafters.
stored_passes.StoredPasses` answers the drafter from it and runs the model only on a miss.

A pass's key (:func:`write_key`, :func:`denoise_key`) is a digest of everything the model's output depends on:
the cache's history (every block-write call that built it, in order, with how much of it a crop kept: the
KV of a block written inside a multi-block prefill is not bit-identical to the same block written alone),
the block's tokens with their masks, the requested rows, and for a write whether every block end was read.
A target-conditioned drafter's passes also read the target's features: their keys and cache states hold a digest
of the exact feature rows each pass read (:func:`features_digest`), and its cache validity (rows written before
their features were known are re-written) is tracked with the history, so stored passes stand in for it too.
The directory names the numerics (:func:`identity`): drafter and target weights, dtype, device, thread
count and library versions; a different one is simply another store.

Files are written atomically (temporary file, then rename) and merged with what is on disk at that moment,
so a killed run leaves either the old file or the new one, and two runs filling the same prompt lose at most
entries (later misses recompute them), never correctness. An unreadable file is ignored with a warning.
"""
from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from .assets import cache_root

FORMAT = 1
TOP_K = 8  # candidates kept per row: what path-search or lattice policies read beyond the argmax
KIND_WRITE, KIND_DENOISE = 0, 1


def _ids(values: Iterable[int]) -> bytes:
    return array("q", values).tobytes()


def _digest(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part)
    return h.digest()


EMPTY_CACHE = _digest(b"empty-cache")


def _feature_part(features: bytes) -> tuple[bytes, ...]:
    # Nothing for a plain drafter, so the keys of stores written before conditioned drafters stay the same.
    return (b"F", features) if features else ()


def segment_state(previous: bytes, tokens: Sequence[int], kept: int, features: bytes = b"") -> bytes:
    """State of the cache after a write of ``tokens`` on top of ``previous``, of which ``kept`` positions remain.
    ``features``: digest of the target features the write read (:func:`features_digest`; empty for a plain drafter,
    which keeps the keys of stores written before conditioned drafters were storable)."""
    return _digest(previous, b"S", _ids((kept,)), _ids(tokens), *_feature_part(features))


def write_key(state: bytes, tokens: Sequence[int], every_block_end: bool, features: bytes = b"") -> bytes:
    return _digest(state, b"W" if every_block_end else b"w", _ids(tokens), *_feature_part(features))


def denoise_key(state: bytes, block: Sequence[int], rows: Sequence[int], features: bytes = b"") -> bytes:
    return _digest(state, b"D", _ids(block), b"|", _ids(rows), *_feature_part(features))


def features_digest(index, taps) -> bytes:
    """Digest of the feature rows a pass reads: ``index`` (per input row, the tap row it reads or -1, as
    ``conditioned_model.feature_rows`` gives it) and those rows' exact bytes. Keyed by content, a stored pass of a
    target-conditioned drafter is reused only where its features are bit-identical, whatever produced them (a
    replayed continuation's one target forward, whose length can differ between configs)."""
    used = index[index >= 0]
    parts = [b"I", index.cpu().numpy().astype(np.int64).tobytes()]
    if taps is not None and used.numel():
        parts += [b"T", str(taps.dtype).encode(), taps.index_select(0, used.to(taps.device)).float().contiguous().cpu().numpy().tobytes()]
    return _digest(*parts)


@dataclass
class Entry:
    """One stored pass: what it computed (picks and top-k per row) and where: its kind, the cache length it ran
    on (``start``) and, per row, the position it predicts relative to ``start``."""

    kind: int
    start: int
    rows: list[int]
    tokens: list[int]
    confidences: list[float]
    top_ids: Any  # np.ndarray [rows, k]
    top_probs: Any


def ranked_arrays(ranked: Optional[list], k: int) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Per-row (token, probability) pairs as [rows, k] id and probability arrays (short rows padded with -1, 0)."""
    if ranked is None:
        return None, None
    ids = np.full((len(ranked), k), -1, dtype=np.int64)
    probs = np.zeros((len(ranked), k), dtype=np.float32)
    for i, pairs in enumerate(ranked):
        for j, (token, p) in enumerate(pairs[:k]):
            ids[i, j], probs[i, j] = token, p
    return ids, probs


def identity(facts: dict) -> str:
    """Directory name for one set of numerics (see the module docstring for what ``facts`` should hold)."""
    return hashlib.sha256(json.dumps({"format": FORMAT, "top_k": TOP_K, **facts}, sort_keys=True, default=str).encode()).hexdigest()[:20]


class TrajectoryStore:
    """Per-prompt files of stored passes for one drafter identity."""

    def __init__(self, identity_id: str, root: Optional[Path] = None):
        self.root = (root or cache_root() / "trajectories") / identity_id

    def path(self, prompt_ids: Sequence[int]) -> Path:
        return self.root / f"{hashlib.sha256(_ids(prompt_ids)).hexdigest()[:24]}.npz"

    def load(self, prompt_ids: Sequence[int]) -> dict[bytes, Entry]:
        path = self.path(prompt_ids)
        if not path.exists():
            return {}
        try:
            with np.load(path, allow_pickle=False) as f:
                return _entries(dict(f))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            warnings.warn(f"ignoring unreadable trajectory file {path} ({exc}); its passes will be recomputed")
            return {}

    def save(self, prompt_ids: Sequence[int], new: dict[bytes, Entry]) -> None:
        """Add ``new`` to the prompt's file (atomically; entries already on disk are kept)."""
        if not new:
            return
        from .trace import _atomic

        merged = {**self.load(prompt_ids), **new}
        arrays = _arrays(merged)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)

        _atomic(self.path(prompt_ids), write)


def _arrays(entries: dict[bytes, Entry]) -> dict[str, np.ndarray]:
    keys = list(entries)
    values = [entries[k] for k in keys]
    counts = [len(e.tokens) for e in values]
    k = max([e.top_ids.shape[1] for e in values if e.top_ids is not None and e.top_ids.ndim == 2] or [0])

    def top(e: Entry, field: str, dtype) -> np.ndarray:
        got = getattr(e, field)
        return np.asarray(got, dtype=dtype).reshape(len(e.tokens), k) if got is not None and k else np.zeros((len(e.tokens), k), dtype)

    return {
        "format": np.asarray([FORMAT]),
        "keys": np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 16),
        "kind": np.asarray([e.kind for e in values], dtype=np.uint8),
        "start": np.asarray([e.start for e in values], dtype=np.int64),
        "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "rows": np.asarray([r for e in values for r in e.rows], dtype=np.int32),
        "tokens": np.asarray([t for e in values for t in e.tokens], dtype=np.int64),
        # float32 is lossless here: every confidence is a float32 probability (drafters.passes.pick)
        "confidences": np.asarray([c for e in values for c in e.confidences], dtype=np.float32),
        "top_ids": np.concatenate([top(e, "top_ids", np.int64) for e in values]) if values else np.zeros((0, k), np.int64),
        "top_probs": np.concatenate([top(e, "top_probs", np.float32) for e in values]) if values else np.zeros((0, k), np.float32),
    }


def _entries(f: dict[str, np.ndarray]) -> dict[bytes, Entry]:
    if int(f["format"][0]) != FORMAT:
        raise ValueError(f"format {int(f['format'][0])}, expected {FORMAT}")
    offsets = f["offsets"].tolist()
    rows, tokens, confs = f["rows"].tolist(), f["tokens"].tolist(), f["confidences"].tolist()
    out = {}
    for i, key in enumerate(f["keys"]):
        a, b = offsets[i], offsets[i + 1]
        out[key.tobytes()] = Entry(int(f["kind"][i]), int(f["start"][i]), rows[a:b], tokens[a:b], confs[a:b],
                                   f["top_ids"][a:b], f["top_probs"][a:b])
    return out


def store_for_run(cfg, drafter, target_id: str, root: Optional[Path] = None) -> TrajectoryStore:
    """The store of this run's numerics: target identity, drafter weights and model facts, threads, versions."""
    import torch
    import transformers

    from .runner import drafter_weights_id

    described = drafter.describe().get("model") or {}
    weights = drafter_weights_id(cfg)
    # The weights' content names them; only when it is unknown (an unresolved hub id) does the source path.
    model = {k: v for k, v in described.items() if k != "source" or weights is None}
    facts = {
        "target": target_id,
        "drafter_weights": weights,
        "drafter_model": model,
        "vocab_limit": getattr(drafter.model, "vocab_limit", None),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    return TrajectoryStore(identity(facts), root)


def check_storable(cfg) -> None:
    """Refuse, before anything loads, ``run.trajectories=true`` where stored passes cannot stand in for the drafter."""
    from omegaconf import OmegaConf

    from .config import ConfigError

    if not OmegaConf.select(cfg, "run.replay", default=False):
        raise ConfigError("run.trajectories=true needs run.replay=true: live runs time the drafter, so it must run")
    if cfg.drafter.name not in ("dllm", "failfast"):
        raise ConfigError(f"run.trajectories=true stores block-diffusion drafter passes; drafter={cfg.drafter.name} has none "
                          f"(use drafter=dllm or drafter=failfast, or run.trajectories=false)")
    reads_logits = [key for key in ("cps", "tree") if getattr(cfg.drafter, key, False)]
    if reads_logits:
        raise ConfigError(f"run.trajectories=true cannot serve drafter.{'/'.join(reads_logits)}=true: it reads whole pass logits, "
                          f"which the store does not keep (only picks and a top-{TOP_K}); set run.trajectories=false")
