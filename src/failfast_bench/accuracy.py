"""Task accuracy next to speed: per-question correctness of a run's outputs.

    python -m failfast_bench.accuracy RUN_DIR [RUN_DIR ...] [--write] [--execute-code]

Accuracy is a post-hoc evaluation of the text a run produced, so it is never part of the config hash:
``eval.accuracy=true`` scores a run as it finishes (and a finished run when it is asked for again), and the
command above scores stored runs (``questions.parquet`` keeps every output's tokens and text).

What is scored: the first ``run.max_new_tokens`` output tokens, decoded without special tokens. The last
speculative round may overshoot the budget (those tokens count for speed, as in the authors' code); scoring
the budget only puts vanilla decoding and every lossless method at T = 0 on the very same text, so they
score identically.

One scorer per dataset:

- ``gsm8k``: the final number of the answer (inside its last ``\\boxed{}`` when it has one) against the
  ``#### N`` line, compared as numbers;
- ``math500``, ``aime``: the boxed answer against the reference ``answer``, both extracted, normalised and
  compared (symbolically, numerically, as sets or intervals) by the ``math-verify`` library;
- ``gpqa``: the letter in the last ``\\boxed{}`` (else after an "Answer:" anchor, found by math-verify)
  against ``A`` (the authors' code always lists the correct answer first);
- ``humaneval``: pass@1, the task's prompt followed by the code block of the answer run against the task's
  tests in a sandboxed subprocess (:func:`run_sandboxed`). It executes model-written code, so it runs only
  with ``eval.execute_code=true`` (``--execute-code`` here);
- ``mt_bench``: refused (its answers are judged by an LLM, not checkable automatically).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Optional

from .config import ConfigError

SCORERS = {
    "gsm8k": "final number vs the '#### N' answer",
    "math500": "boxed answer, math-verify equivalence",
    "aime": "boxed answer, math-verify equivalence",
    "gpqa": "boxed letter vs (A)",
    "humaneval": "pass@1, tests run in a sandboxed subprocess",
}
COLUMNS = ("correct", "predicted_answer", "reference_answer")


def refusal(dataset: str, execute_code: bool) -> Optional[str]:
    """One line saying why accuracy cannot be scored for ``dataset`` as configured, or None."""
    if dataset == "humaneval" and not execute_code:
        return (
            "eval.accuracy=true on humaneval executes the model's programs: add eval.execute_code=true to allow it "
            "(sandboxed subprocess: time and memory limits, no network, temporary directory)"
        )
    if dataset not in SCORERS:
        return f"eval.accuracy=true: {dataset} has no automatically checkable answers (scorers: {', '.join(SCORERS)}); drop eval.accuracy"
    return None


def requested(cfg: Any) -> bool:
    return bool(_select(cfg, "eval.accuracy", False))


def _select(cfg: Any, key: str, default: Any) -> Any:
    node = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) or hasattr(node, "get") else getattr(node, part, None)
        if node is None:
            return default
    return node


@dataclass
class Score:
    correct: bool
    predicted: Optional[str]  # the extracted answer (humaneval: "passed" or why not)
    reference: Optional[str]


# ---------------------------------------------------------------------------------------------
# Extraction helpers


def last_boxed(text: str) -> Optional[str]:
    """Content of the last ``\\boxed{...}`` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None  # cut off by the token budget


# Thousands separated by commas ("1,000"), or plain digits; an optional sign and decimals.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def final_number(text: str) -> Optional[str]:
    """The last number of ``text`` (in its last ``\\boxed{}`` when there is one), commas removed."""
    boxed = last_boxed(text)
    found = _NUMBER.findall(boxed if boxed is not None else text)
    return found[-1].replace(",", "") if found else None


def _same_number(a: str, b: str) -> bool:
    try:
        return Decimal(a) == Decimal(b)
    except InvalidOperation:
        return a.strip() == b.strip()


def _math_verify_timeout() -> Optional[int]:
    # math-verify times out with SIGALRM, which only the main thread may use.
    return 5 if threading.current_thread() is threading.main_thread() else None


# ---------------------------------------------------------------------------------------------
# Scorers, one per dataset


def score_gsm8k(text: str, answer: str) -> Score:
    """``answer``: GSM8K's answer field (``... #### 72``) or the final number itself."""
    reference = answer.split("####")[-1].strip().replace(",", "") if answer is not None else None
    predicted = final_number(text)
    return Score(predicted is not None and reference is not None and _same_number(predicted, reference), predicted, reference)


def score_math(text: str, answer: str) -> Score:
    """MATH-500 / AIME: the boxed answer vs the reference ``answer`` (LaTeX), both through math-verify."""
    from math_verify import LatexExtractionConfig, parse, verify

    timeout = _math_verify_timeout()
    gold = parse(f"${answer}$", parsing_timeout=timeout)
    # The last boxed answer (math-verify would join every \boxed{} of the text into one set); without one,
    # math-verify's own "final answer is" anchors; never a bare number found anywhere.
    boxed = last_boxed(text)
    config = [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]
    pred = parse(text if boxed is None else f"\\boxed{{{boxed}}}", extraction_config=config, parsing_timeout=timeout)
    predicted = str(pred[-1]) if pred else None
    correct = bool(pred) and bool(gold) and verify(gold, pred, timeout_seconds=timeout)
    return Score(correct, predicted, str(answer))


_LETTER = re.compile(r"^[\s(]*(?:\\text(?:bf)?\{)?[\s(]*([A-Da-d])[\s)]*\}?[\s).]*$")


def score_gpqa(text: str, letter: str = "A") -> Score:
    """The chosen letter: the last ``\\boxed{X}`` (as the GPQA template demands), else an "Answer: X" anchor."""
    predicted = None
    boxed = last_boxed(text)
    if boxed is not None:
        match = _LETTER.match(boxed)
        predicted = match.group(1).upper() if match else None
    if predicted is None:
        from math_verify import StringExtractionConfig, parse

        found = parse(text, extraction_config=[StringExtractionConfig(strings=("A", "B", "C", "D"), try_extract_without_anchor=False)],
                      parsing_timeout=_math_verify_timeout())
        predicted = str(found[-1]).upper() if found else None
    return Score(predicted == letter, predicted, letter)


_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def humaneval_program(text: str, prompt: str, test: str, entry_point: str) -> str:
    """The program pass@1 runs: the prompt (imports, helpers, the stub), the answer's code, the tests, the check.

    The answer's code is its first fenced Python block that defines ``entry_point`` (it replaces the stub),
    else its first Python block (a continuation of the stub's body), else the whole answer.
    """
    blocks = [body for lang, body in _FENCE.findall(text) if lang.lower() in ("", "python", "py", "python3")]
    defines = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.M)
    code = next((b for b in blocks if defines.search(b)), blocks[0] if blocks else text)
    head = prompt if prompt.endswith("\n") else prompt + "\n"
    if defines.search(code):
        head += "\n"
    return f"{head}{code}\n\n{test}\n\ncheck({entry_point})\n"


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0  # wall clock; CPU time is capped at this + 1 s as well
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    file_mb: int = 16  # largest file it may write (its output included)
    open_files: int = 64
    processes: int = 64  # RLIMIT_NPROC, when the program runs as an unprivileged user


@dataclass
class SandboxResult:
    passed: bool
    returncode: Optional[int]
    timed_out: bool
    output_tail: str
    isolation: str


def _child_setup(limits: SandboxLimits, user: Optional[tuple[int, int]]):
    def apply() -> None:
        import resource

        mem = int(limits.memory_mb) << 20
        cpu = int(math.ceil(limits.timeout_s)) + 1
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb << 20, limits.file_mb << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if user is not None:
            os.setgroups([])
            os.setgid(user[1])
            os.setuid(user[0])
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))

    return apply


def _unprivileged_user() -> Optional[tuple[int, int]]:
    """(uid, gid) of ``nobody`` when this process is root (the program then runs without root's rights)."""
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except (KeyError, ImportError):
        return None


def _interpreters() -> list[str]:
    """Python interpreters to run programs with: this one, then the system's (an unprivileged user may be unable
    to reach this one, e.g. a virtualenv under /root)."""
    found = [sys.executable, getattr(sys, "_base_executable", "") or ""]
    found += [p for p in (shutil.which("python3"), "/usr/bin/python3", "/usr/local/bin/python3") if p]
    return list(dict.fromkeys(p for p in found if p and os.path.exists(p)))


@dataclass(frozen=True)
class _Isolation:
    prefix: tuple[str, ...]  # command prefix (unshare ...)
    user: Optional[tuple[int, int]]  # (uid, gid) to switch to
    python: str
    description: str


@functools.lru_cache(maxsize=None)
def _isolation() -> _Isolation:
    """The strongest isolation this machine allows, found by running a trivial program each way once.

    No network comes from a new, empty network namespace (``unshare``); a root process hands the program to
    ``nobody``. Where neither is possible the program still runs with an empty environment (no proxy
    variables) and the description says that the network is not isolated.
    """
    nobody = _unprivileged_user()
    unshare = shutil.which("unshare")
    # Own network namespace (no interface but a down loopback); own PID namespace when allowed, so whatever the
    # program spawns dies with it (--kill-child: also when unshare itself is killed at the time limit).
    user_ns = ("--user", "--map-root-user")
    pid_ns = ("--pid", "--kill-child")
    me = "as root" if os.geteuid() == 0 else "as this user"
    plans: list[tuple[Optional[tuple[str, ...]], Optional[tuple[int, int]], str]] = []
    if unshare:
        for who, user, extra in (("as nobody", nobody, user_ns), (me, None, () if os.geteuid() == 0 else user_ns)):
            plans.append(((unshare, *extra, "--net", *pid_ns), user, f"no network (own network and PID namespaces), {who}"))
            plans.append(((unshare, *extra, "--net"), user, f"no network (own network namespace), {who}"))
    plans += [
        ((), nobody, "NETWORK NOT ISOLATED (no network namespace allowed here; proxy variables removed), as nobody"),
        ((), None, f"NETWORK NOT ISOLATED (no network namespace allowed here; proxy variables removed), {me}"),
    ]
    for prefix, user, description in plans:
        if user is None and "as nobody" in description:
            continue
        for python in _interpreters():
            try:
                probe = subprocess.run([*prefix, python, "-I", "-c", "pass"], preexec_fn=_child_setup(SandboxLimits(), user),
                                       capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"}, cwd="/")
            except (OSError, subprocess.SubprocessError):
                continue
            if probe.returncode == 0:
                return _Isolation(tuple(prefix), user, python, f"{description}, {python}")
    raise ConfigError("cannot start a sandboxed Python interpreter here (tried " + ", ".join(_interpreters()) + ")")


def run_sandboxed(program: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run ``program`` (Python source) in a subprocess: isolated interpreter (``-I``), empty environment,
    a fresh temporary directory as its working directory and home, rlimits on memory, CPU time, file size,
    open files (and processes), no network where a network namespace can be made, killed with its whole
    process group at the wall-clock limit. It runs as ``__candidate__``, not ``__main__``, so an answer's
    ``if __name__ == "__main__":`` demo does not run. Passed = exit status 0 in time.
    """
    iso = _isolation()
    prefix, user, isolation = iso.prefix, iso.user, iso.description
    workdir = Path(tempfile.mkdtemp(prefix="failfast-bench-exec-"))
    try:
        if user is not None:
            os.chown(workdir, *user)
        (workdir / "program.py").write_text(program, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        launcher = "import runpy; runpy.run_path('program.py', run_name='__candidate__')"
        log_path = workdir / "output.log"
        with open(log_path, "wb") as log:
            if user is not None:
                os.chown(log_path, *user)
            proc = subprocess.Popen([*prefix, iso.python, "-I", "-B", "-c", launcher], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_child_setup(limits, user))
            timed_out = False
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the program's children too
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        tail = log_path.read_bytes()[-2000:].decode("utf-8", "replace")
        return SandboxResult(proc.returncode == 0 and not timed_out, proc.returncode, timed_out, tail, isolation)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _failure(result: SandboxResult) -> str:
    if result.timed_out:
        return "timed out"
    if result.returncode is not None and result.returncode < 0:
        return f"killed by signal {-result.returncode}"
    lines = [line.strip() for line in result.output_tail.splitlines() if line.strip()]
    return (lines[-1] if lines else f"exit status {result.returncode}")[:200]


def score_humaneval(text: str, prompt: str, test: str, entry_point: str, limits: SandboxLimits = SandboxLimits()) -> Score:
    result = run_sandboxed(humaneval_program(text, prompt, test, entry_point), limits)
    return Score(result.passed, "passed" if result.passed else _failure(result), None)


def score_question(question: Any, text: str, dataset: str, execute_code: bool = False, limits: SandboxLimits = SandboxLimits()) -> Score:
    """Score one answer ``text`` to a :class:`failfast_bench.data.Question` of ``dataset``."""
    reason = refusal(dataset, execute_code)
    if reason:
        raise ConfigError(reason)
    meta = question.meta or {}
    if dataset == "gsm8k":
        return score_gsm8k(text, meta.get("final_answer") or question.reference)
    if dataset in ("math500", "aime"):
        return score_math(text, meta.get("final_answer") or question.reference)
    if dataset == "gpqa":
        return score_gpqa(text, meta.get("final_answer") or "A")
    return score_humaneval(text, question.turns[0], meta["test"], meta["entry_point"], limits)


# ---------------------------------------------------------------------------------------------
# A run's questions


_SPECIAL = re.compile(r"<\|[A-Za-z0-9_]+\|>")


def scored_text(tokens: Any, output_text: str, max_new_tokens: int, tokenizer: Any = None) -> str:
    """The text accuracy reads: the first ``max_new_tokens`` output tokens without special tokens.

    Without a tokenizer the stored text stands in (chat-template markers such as ``<|im_end|>`` removed),
    which is exact only for an output within the budget.
    """
    if tokenizer is not None:
        return tokenizer.decode([int(t) for t in list(tokens)[:max_new_tokens]], skip_special_tokens=True)
    return _SPECIAL.sub("", output_text)


def limits_from(cfg: Any) -> SandboxLimits:
    return SandboxLimits(timeout_s=float(_select(cfg, "eval.timeout_s", 10.0)), memory_mb=int(_select(cfg, "eval.memory_mb", 1024)))


def score_frame(frame: Any, questions: dict, dataset: str, max_new_tokens: int, tokenizer: Any = None, execute_code: bool = False,
                limits: SandboxLimits = SandboxLimits()) -> Any:
    """``frame`` (questions.parquet rows) with the columns of :data:`COLUMNS` added; ``questions``: id -> Question."""
    missing = [str(q) for q in frame["question_id"] if str(q) not in questions]
    if missing:
        raise ConfigError(f"{dataset} question(s) {', '.join(missing[:5])} of the run are not in the dataset source found; "
                          "point dataset.path or $FAILFAST_BENCH_DATA at the file the run used (see its manifest.json)")
    scores = []
    for qid, tokens, text, n_out in zip(frame["question_id"], frame["output_tokens"], frame["output_text"], frame["n_out"]):
        if tokenizer is None and int(n_out) > max_new_tokens:
            raise ConfigError(f"question {qid} overshot the {max_new_tokens}-token budget: scoring the budget needs the target's tokenizer")
        scores.append(score_question(questions[str(qid)], scored_text(tokens, text, max_new_tokens, tokenizer), dataset, execute_code, limits))
    out = frame.copy()
    out["correct"] = [s.correct for s in scores]
    out["predicted_answer"] = [s.predicted for s in scores]
    out["reference_answer"] = [s.reference for s in scores]
    return out


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(frame: Any, dataset: str, max_new_tokens: int) -> dict:
    """The summary's ``accuracy`` entry of a scored frame."""
    n, k = int(len(frame)), int(frame["correct"].sum())
    out = {
        "dataset": dataset, "scorer": SCORERS[dataset], "n_questions": n, "n_correct": k,
        "accuracy": k / n if n else float("nan"), "ci95": list(wilson_interval(k, n)), "scored_tokens": int(max_new_tokens),
    }
    if dataset == "humaneval":
        out["sandbox"] = _isolation().description
    else:
        try:
            from importlib import metadata

            out["math_verify"] = metadata.version("math-verify")
        except Exception:  # noqa: BLE001 - informative only
            pass
    return out


def format_line(acc: dict) -> str:
    lo, hi = acc["ci95"]
    metric = "pass@1" if acc["dataset"] == "humaneval" else "accuracy"
    return (f"{metric}: {acc['n_correct']}/{acc['n_questions']} = {acc['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f}; "
            f"{acc['scorer']}; first {acc['scored_tokens']} tokens)")


# ---------------------------------------------------------------------------------------------
# Stored runs


def _dataset_cfg(run_dir: Path, cfg: dict) -> Any:
    """The run's dataset config, aimed at the file the run read when it is still there (same SHA-256)."""
    from omegaconf import OmegaConf

    from . import assets

    ds = dict(cfg["dataset"], question_ids=None, num_questions=None, fallback="allow")
    manifest_path = run_dir / "manifest.json"
    source = json.loads(manifest_path.read_text()).get("dataset_source") if manifest_path.exists() else None
    if source and not ds.get("path"):
        location = Path(str(source.get("location", "")))
        if location.is_file() and assets.sha256_file(location) == source.get("sha256"):
            ds["path"] = str(location)
    return OmegaConf.create(ds)


def _tokenizer_for(cfg: dict) -> Any:
    from . import models

    target = cfg["target"]
    try:
        src = models.resolve_source(target["model"], target.get("gguf_file"), target.get("revision"))
        return models.load_tokenizer(src, bool(target.get("trust_remote_code", False)))
    except Exception:  # noqa: BLE001 - the stored text stands in when every output is within the budget
        return None


def score_run(run_dir: Path, execute_code: bool = False, write: bool = False, limits: Optional[SandboxLimits] = None,
              tokenizer: Any = None) -> tuple[Any, dict]:
    """Score a complete stored run: (its questions frame with the accuracy columns, the accuracy summary).

    ``write``: also store them in its questions.parquet and summary.json (atomically).
    """
    import yaml

    from . import data, trace

    run_dir = Path(run_dir)
    _, frame, summary = trace.load_run(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    dataset = cfg["dataset"]["name"]
    reason = refusal(dataset, execute_code)
    if reason:
        raise ConfigError(reason.replace("eval.execute_code=true", "--execute-code (eval.execute_code=true)"))
    questions, _ = data.questions_by_id(_dataset_cfg(run_dir, cfg))
    budget = int(cfg["run"]["max_new_tokens"])
    if tokenizer is None:
        tokenizer = _tokenizer_for(cfg)
    limits = limits or limits_from(cfg)
    scored = score_frame(frame, questions, dataset, budget, tokenizer, execute_code, limits)
    acc = summarize(scored, dataset, budget)
    if write:
        trace.write_parquet(scored, run_dir / "questions.parquet")
        trace.write_json({**summary, "accuracy": acc}, run_dir / "summary.json")
    return scored, acc


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m failfast_bench.accuracy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", help="run directories, or roots searched for complete runs")
    parser.add_argument("--write", action="store_true", help="store the scores in each run's questions.parquet and summary.json")
    parser.add_argument("--execute-code", action="store_true", help="allow HumanEval pass@1 (runs model-written programs, sandboxed)")
    parser.add_argument("--per-question", action="store_true", help="print every question's extracted and reference answer")
    args = parser.parse_args(argv)
    from .report import find_runs

    runs = find_runs([Path(d) for d in args.dirs])
    if not runs:
        parser.error(f"no complete runs under {', '.join(args.dirs)}")
    status = 0
    for run_dir in runs:
        try:
            scored, acc = score_run(run_dir, execute_code=args.execute_code, write=args.write)
        except ConfigError as exc:
            print(f"{run_dir}: {exc}", file=sys.stderr)
            status = 2
            continue
        print(f"{run_dir}: {format_line(acc)}")
        if args.per_question:
            for row in scored.itertuples():
                print(f"  {row.question_id}: {'correct' if row.correct else 'wrong  '} predicted={row.predicted_answer!r} reference={row.reference_answer!r}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
