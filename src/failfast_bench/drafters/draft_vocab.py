"""A drafter's draft vocabulary: the target tokens its LM head may propose (``draft_vocab.json``).

The LM head over the full vocabulary is most of a small drafter's pass (SmolLM2: 49,152 rows, 56-62 % of a
2-layer dLLM denoising pass on the CPU). Restricting it to the tokens the target actually emits on the
training responses (EAGLE-3's draft vocabulary, applied here to the block-diffusion drafter) makes a pass
cheaper; verification stays with the target, so the output is unchanged and only tokens outside the list
can no longer be drafted.

File layout: ``{"token_ids": [...], "size": n, "coverage": share of training response tokens covered,
"source": how the list was chosen}``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

from ..config import ConfigError

VOCAB_FILE = "draft_vocab.json"


def write_draft_vocab(directory, token_ids: Iterable[int], coverage: Optional[float], source: str) -> Path:
    """Write ``draft_vocab.json`` atomically (sorted, unique ids)."""
    ids = sorted(set(int(t) for t in token_ids))
    path = Path(directory) / VOCAB_FILE
    tmp = path.with_suffix(".json.tmp")
    payload = {"size": len(ids), "coverage": None if coverage is None else round(float(coverage), 5), "source": source, "token_ids": ids}
    tmp.write_text(json.dumps(payload) + "\n")
    tmp.replace(path)
    return path


def draft_vocab_card_section(size: int, coverage: Optional[float]) -> str:
    covered = "" if coverage is None else f", covering {100 * coverage:.2f}% of the training response tokens"
    return (f"## Draft vocabulary\n`{VOCAB_FILE}`: {size} target tokens{covered}. With `drafter.draft_vocab=true` the "
            f"drafter proposes only these and runs its LM head over their rows only (the target still verifies "
            f"every token, so outputs are unchanged).\n")


def read_draft_vocab(directory) -> list[int]:
    path = Path(directory) / VOCAB_FILE
    if not path.exists():
        raise ConfigError(
            f"drafter.draft_vocab=true but {path} does not exist: the drafter's ship stage writes it "
            f"(python -m failfast_bench.train recipe=dllm stage=ship), or set drafter.draft_vocab=false"
        )
    try:
        ids = [int(t) for t in json.loads(path.read_text())["token_ids"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a draft vocabulary ({type(exc).__name__}: {exc})") from exc
    if not ids:
        raise ConfigError(f"{path} lists no token ids")
    return ids
