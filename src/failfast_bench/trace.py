"""Per-round and per-question records, and atomic writing of a run's files.

The column lists below are the trace schema every other module (metrics, latency, report, plots)
reads. A run directory holds ``rounds.parquet``, ``questions.parquet``, ``summary.json``,
``config.yaml``, ``manifest.json`` and, last of all, ``COMPLETE`` (its presence marks a finished run).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd


@dataclass
class RoundRecord:
    question_id: str
    round: int  # 0-based round index within the question
    prefix_len: int  # context length (prompt + committed output) when the round started
    draft_tokens: list[int]
    draft_len: int  # spec_len: the acceptance denominator (reported length; see Draft.reported_len)
    accepted_len: int  # accepted draft tokens, excluding the correction/bonus token
    next_token: int  # the target's correction or bonus token
    bonus: bool  # True when the whole draft was accepted
    target_tokens: list[int]  # target argmax at the verified positions
    confidences: list[float]  # drafter confidence of each draft token
    recorded_confidences: list[float]  # FailFast's C list (faithful); empty otherwise
    passes_prefill: int
    passes_denoise: int
    passes_cache_update: int
    passes_decode: int
    drafter_passes: int  # total of all kinds
    stop_reason: str
    committed: int  # tokens appended to the output this round (after EOS/length truncation)
    drafter_seconds: float  # wall time of propose() (model passes + drafter logic)
    verify_seconds: float  # wall time of verify() (target forward + acceptance + cache roll-back)
    drafter_forward_seconds: float  # time inside drafter model forwards only
    verify_forward_seconds: float  # time inside the target forward only
    verified_tokens: int  # tokens fed to the target this round (pending token + draft)
    reused_draft: bool = False


ROUND_COLUMNS = [f.name for f in RoundRecord.__dataclass_fields__.values()]


@dataclass
class QuestionRecord:
    question_id: str
    question_index: int  # position in the run's question order
    prompt_len: int
    prompt_sha256: str
    output_tokens: list[int]
    n_out: int  # output tokens produced (includes overshoot past max_new_tokens; stops at EOS)
    n_rounds: int
    accepted_total: int
    drafted_total: int  # Σ draft_len
    drafter_passes: int
    stopped_by_eos: bool
    wall_seconds: float  # prefill + all rounds, this question
    prefill_seconds: float
    drafter_seconds: float
    verify_seconds: float
    forward_seconds: float  # Σ time inside model forwards (target and drafter)
    vanilla_wall_seconds: Optional[float]  # same question decoded without drafter in this process
    vanilla_n_out: Optional[int]
    lossless_mismatch: bool
    first_divergence: Optional[int]  # first index where output differs from the vanilla reference
    output_text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


QUESTION_COLUMNS = [f.name for f in QuestionRecord.__dataclass_fields__.values()]


def records_frame(records: list[Any], columns: list[str]) -> pd.DataFrame:
    rows = [asdict(r) for r in records]
    frame = pd.DataFrame(rows, columns=columns)
    if "extra" in frame.columns:
        frame["extra"] = frame["extra"].map(lambda e: json.dumps(e, sort_keys=True))
    return frame


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    _atomic(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


def strict_json_value(obj: Any) -> Any:
    """``obj`` with every undefined number (NaN, ±inf, pandas NA) as ``None``, numpy scalars as Python
    numbers and tuples as lists: what strict JSON (RFC 8259: jq, JavaScript, most dashboards) can hold."""
    if isinstance(obj, dict):
        return {(k if isinstance(k, str) else str(k)): strict_json_value(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json_value(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "item") and not isinstance(obj, (int, float)) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()  # numpy / torch scalar
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, int):
        return obj
    try:
        if pd.isna(obj):
            return None
    except (TypeError, ValueError):
        pass
    return obj


def dumps_strict(obj: Any, **kwargs) -> str:
    """JSON text with ``null`` for undefined values; refuses NaN/Infinity instead of writing them."""
    return json.dumps(strict_json_value(obj), allow_nan=False, default=str, **kwargs)


def write_json(obj: Any, path: Path) -> None:
    """Atomically write strict JSON (``null`` for undefined values, never NaN/Infinity)."""
    text = dumps_strict(obj, indent=2, sort_keys=True) + "\n"

    def _w(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    _atomic(Path(path), _w)


def write_text(text: str, path: Path) -> None:
    def _w(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    _atomic(Path(path), _w)


COMPLETE_MARKER = "COMPLETE"


def is_complete(run_dir: Path) -> bool:
    return (Path(run_dir) / COMPLETE_MARKER).exists()


def load_run(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """rounds, questions and summary of a complete run directory."""
    run_dir = Path(run_dir)
    if not is_complete(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a complete run (no {COMPLETE_MARKER} marker)")
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    questions = pd.read_parquet(run_dir / "questions.parquet")
    summary = json.loads((run_dir / "summary.json").read_text())
    return rounds, questions, summary
