"""The vanilla greedy reference each speculative run is compared with, cached per target/question/settings.

Greedy speculative decoding must reproduce the target's greedy output token for token. Runs compare their
output with the reference and record the first divergence index (see ``engine.first_divergence``); the
same cache feeds trace replay, which scores drafters without running the target.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from .assets import cache_root
from .trace import write_json


def target_identity(cfg, model=None) -> str:
    """A stable key for 'the same target decoding under the same numerics': model, dtype and hardware (the
    device type; on CUDA also the GPU model, whose kernels round differently). Keys of CPU runs are unchanged."""
    from .models import device_identity, resolve_dtype_name

    device = device_identity(model) if model is not None else cfg.run.device
    parts = {
        "model": cfg.target.model,
        "gguf": cfg.target.gguf_file,
        "revision": cfg.target.revision,
        "dtype": resolve_dtype_name(cfg.run.dtype, device),
        "device": device,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class ReferenceStore:
    """Greedy vanilla outputs keyed by (target identity, question id, prompt ids, max_new_tokens)."""

    def __init__(self, target_id: str, max_new_tokens: int, root: Optional[Path] = None):
        self.root = (root or cache_root() / "reference") / target_id
        self.max_new_tokens = max_new_tokens

    def _path(self, question_id: str, prompt: list[int]) -> Path:
        key = hashlib.sha256(json.dumps([question_id, prompt, self.max_new_tokens]).encode()).hexdigest()[:24]
        return self.root / f"{key}.json"

    def get(self, question_id: str, prompt: list[int]) -> Optional[list[int]]:
        path = self._path(question_id, prompt)
        if not path.exists():
            return None
        return json.loads(path.read_text())["output_tokens"]

    def put(self, question_id: str, prompt: list[int], output_tokens: list[int]) -> None:
        write_json(
            {"question_id": question_id, "max_new_tokens": self.max_new_tokens, "output_tokens": list(output_tokens)},
            self._path(question_id, prompt),
        )
