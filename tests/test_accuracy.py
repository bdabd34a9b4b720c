"""Task accuracy (failfast_bench.accuracy): one scorer per dataset on fixtures, the HumanEval sandbox, the
run integration, and equal scores for vanilla and every lossless method on the committed reference runs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from failfast_bench import accuracy, assets, data, trace
from failfast_bench.config import ConfigError, DatasetConfig

from conftest import requires_smollm2

REPO = Path(__file__).resolve().parents[1]
COMMITTED_GSM8K = REPO / "results" / "runs" / "smollm2-135m" / "gsm8k"
SMOLLM2_DIR = assets.cache_root() / "models" / "smollm2-135m-instruct"


# --------------------------------------------------------------------------------------------
# Scorers


@pytest.mark.parametrize("text, answer, predicted, correct", [
    ("So she makes 9 * 2 = 18 dollars.\nThe answer is 18.", "Janet sells ... #### 18", "18", True),
    ("The total is 1,000 dollars, i.e. 1,000.", "#### 1000", "1000", True),
    ("x = 18.00", "18", "18.00", True),
    ("It drops by $-3 each day", "#### -3", "-3", True),
    ("first 5, then \\boxed{42} and a footnote 7", "#### 42", "42", True),  # the boxed number beats a later one
    ("counts 3,4,5", "#### 5", "5", True),  # a list, not thousands
    ("The answer is 17.", "#### 18", "17", False),
    ("no number at all", "#### 18", None, False),
])
def test_gsm8k_final_number(text, answer, predicted, correct):
    score = accuracy.score_gsm8k(text, answer)
    assert (score.predicted, score.correct) == (predicted, correct)
    assert score.reference == answer.split("####")[-1].strip().replace(",", "")


@pytest.mark.parametrize("text, answer, correct", [
    ("Hence $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{(3,\\pi/2)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{14/3}", "\\frac{14}{3}", True),
    ("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}", True),
    ("\\boxed{5,3}", "3, 5", True),
    ("\\boxed{C}", "\\text{(C)}", True),
    ("\\boxed{0204}", "204", True),  # AIME answers are integers
    ("The final answer is $204$.", "204", True),  # math-verify's own anchor, no box
    ("first \\boxed{7}, corrected: \\boxed{204}", "204", True),  # the last box counts
    ("\\boxed{205}", "204", False),
    ("\\boxed{4.6667}", "\\frac{14}{3}", False),
    ("we get 204 somewhere", "204", False),  # a bare number is no answer
])
def test_math_boxed_answer_via_math_verify(text, answer, correct):
    score = accuracy.score_math(text, answer)
    assert score.correct is correct, score
    assert score.reference == answer


@pytest.mark.parametrize("text, predicted", [
    ("... so the answer is \\boxed{A}.", "A"),
    ("\\boxed{(A)}", "A"),
    ("$\\boxed{\\text{A}}$", "A"),
    ("\\boxed{B}", "B"),
    ("I pick \\boxed{A} at first, no: \\boxed{D}", "D"),
    ("Answer: C", "C"),
    ("A seems right", None),
])
def test_gpqa_letter(text, predicted):
    score = accuracy.score_gpqa(text)
    assert score.predicted == predicted and score.correct is (predicted == "A") and score.reference == "A"


HE_PROMPT = 'from typing import List\n\n\ndef add_all(xs: List[int]) -> int:\n    """Sum of xs."""\n'
HE_TEST = "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n"


@pytest.mark.parametrize("answer, passed", [
    ("Here it is:\n```python\ndef add_all(xs):\n    return sum(xs)\n```\nIt sums.", True),  # replaces the stub
    ("```python\n    return sum(xs)\n```", True),  # continues the stub's body
    ("```python\ndef add_all(xs):\n    return sum(xs)\n\nif __name__ == '__main__':\n    print(add_all(input()))\n```", True),
    ("```bash\necho hi\n```\n```python\ndef add_all(xs):\n    return sum(xs) + 1\n```", False),
    ("```python\ndef add_all(xs):\n    return sum(xs", False),  # cut off by the budget
])
def test_humaneval_program_passes_only_correct_code(answer, passed):
    score = accuracy.score_humaneval(answer, HE_PROMPT, HE_TEST, "add_all", accuracy.SandboxLimits(timeout_s=10))
    assert score.correct is passed, score
    assert (score.predicted == "passed") is passed


def test_score_question_refuses_humaneval_without_execute_code_and_mt_bench():
    q = data.Question("HumanEval/0", 0, [HE_PROMPT], None, {"test": HE_TEST, "entry_point": "add_all"})
    with pytest.raises(ConfigError, match="add eval.execute_code=true") as err:
        accuracy.score_question(q, "```python\nimport os\n```", "humaneval", execute_code=False)
    assert "\n" not in str(err.value)
    assert accuracy.score_question(q, "```python\n    return sum(xs)\n```", "humaneval", execute_code=True).correct
    with pytest.raises(ConfigError, match="mt_bench has no automatically checkable answers"):
        accuracy.score_question(data.Question("81", 81, ["q"]), "a", "mt_bench")


def test_wilson_interval():
    assert accuracy.wilson_interval(0, 10)[0] == 0.0
    lo, hi = accuracy.wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)


# --------------------------------------------------------------------------------------------
# The sandbox


LIMITS = accuracy.SandboxLimits(timeout_s=3, memory_mb=512)


@pytest.mark.parametrize("program, passed, why", [
    ("print('fine')", True, None),
    ("raise SystemExit(1)", False, "exit status 1"),
    ("x = bytearray(1 << 30)", False, "MemoryError"),  # over memory_mb
    ("while True:\n    pass", False, "timed out"),
    ("import time\ntime.sleep(60)", False, "timed out"),
    ("import subprocess, time\nsubprocess.Popen(['sleep', '60'])\ntime.sleep(60)", False, "timed out"),
])
def test_sandbox_limits(program, passed, why):
    result = accuracy.run_sandboxed(program, LIMITS)
    assert result.passed is passed, result
    if why:
        assert why in accuracy._failure(result)


def test_sandbox_environment_directory_and_network(monkeypatch, tmp_path):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("SECRET_TOKEN", "do-not-leak")
    outside = tmp_path / "outside.txt"
    program = (
        "import os, socket, tempfile\n"
        "assert not any(k.lower().endswith('proxy') or k == 'SECRET_TOKEN' for k in os.environ), sorted(os.environ)\n"
        "assert os.getcwd() == os.environ['HOME'] and os.path.basename(os.getcwd()).startswith('failfast-bench-exec-')\n"
        "open('scratch.txt', 'w').write('the working directory is writable')\n"
    )
    isolation = accuracy._isolation().description
    if "NETWORK NOT ISOLATED" not in isolation:
        program += "assert [n for _, n in socket.if_nameindex()] == ['lo'], socket.if_nameindex()\n"  # an empty namespace
    if "as nobody" in isolation:
        program += f"try:\n    open({str(outside)!r}, 'w')\nexcept PermissionError:\n    pass\nelse:\n    raise SystemExit('wrote outside')\n"
    result = accuracy.run_sandboxed(program, LIMITS)
    assert result.passed, result.output_tail
    assert not outside.exists()


# --------------------------------------------------------------------------------------------
# A run's questions


class _CharTokenizer:
    """Tokens are character codes; id 0 is a special token."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join("<|im_end|>" if i == 0 else chr(i) for i in ids if not (skip_special_tokens and i == 0))


def _frame(texts: list[str]) -> pd.DataFrame:
    tokens = [[ord(c) for c in t] + [0] for t in texts]
    return pd.DataFrame({"question_id": [str(i) for i in range(len(texts))], "output_tokens": tokens,
                         "output_text": [t + "<|im_end|>" for t in texts], "n_out": [len(t) for t in tokens]})


def test_score_frame_scores_the_token_budget_only():
    questions = {"0": data.Question("0", 0, ["q"], "#### 4", {"final_answer": "4"}),
                 "1": data.Question("1", 1, ["q"], "#### 5", {"final_answer": "5"})}
    # question 1 states its answer only past a 12-token budget (a speculative round's overshoot)
    frame = _frame(["so it is 4", "so it is 3, no: 5"])
    scored = accuracy.score_frame(frame, questions, "gsm8k", 12, _CharTokenizer())
    assert list(scored["correct"]) == [True, False] and list(scored["predicted_answer"]) == ["4", "3"]
    assert list(scored["reference_answer"]) == ["4", "5"]
    summary = accuracy.summarize(scored, "gsm8k", 12)
    assert (summary["n_correct"], summary["n_questions"], summary["accuracy"]) == (1, 2, 0.5)
    assert "accuracy: 1/2 = 0.500" in accuracy.format_line(summary)
    # without a tokenizer the stored text stands in, but only within the budget
    assert list(accuracy.score_frame(frame, questions, "gsm8k", 100)["correct"]) == [True, True]
    with pytest.raises(ConfigError, match="overshot the 12-token budget"):
        accuracy.score_frame(frame, questions, "gsm8k", 12)
    with pytest.raises(ConfigError, match="question\\(s\\) 1 of the run are not in the dataset source"):
        accuracy.score_frame(frame, {"0": questions["0"]}, "gsm8k", 100)


def test_accuracy_is_validated_and_never_hashed(tmp_path):
    from failfast_bench.cli import compose
    from failfast_bench.config import validate
    from failfast_bench.runner import config_hash

    base = [f"run.output_dir={tmp_path}", "drafter=vanilla"]
    plain = config_hash(compose(base))
    assert config_hash(compose([*base, "eval.accuracy=true", "eval.timeout_s=3"])) == plain
    validate(compose([*base, "eval.accuracy=true"]))
    for extra, message in [
        (["dataset=humaneval"], "add eval.execute_code=true to allow it"),
        (["dataset=mt_bench"], "mt_bench has no automatically checkable answers"),
        (["eval.memory_mb=8"], "eval.memory_mb=8 >= 64"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate(compose([*base, "eval.accuracy=true", *extra]))
    validate(compose([*base, "eval.accuracy=true", "eval.execute_code=true", "dataset=humaneval"]))


# --------------------------------------------------------------------------------------------
# Committed reference runs: at T = 0 vanilla and every speculative method score identically


def _committed_runs() -> dict[str, Path]:
    runs = {p.name: p for p in sorted(COMMITTED_GSM8K.iterdir()) if trace.is_complete(p)}
    assert any(name.startswith("vanilla__") for name in runs) and len(runs) > 5
    return runs


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    if not (SMOLLM2_DIR / "tokenizer_config.json").is_file():
        pytest.skip(f"SmolLM2 tokenizer missing at {SMOLLM2_DIR}; fetch it with: {assets.FETCH_COMMAND} smollm2-135m")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(SMOLLM2_DIR))


def _score_committed(questions: dict, tokenizer) -> dict[str, pd.DataFrame]:
    out = {}
    for name, run_dir in _committed_runs().items():
        _, frame, _ = trace.load_run(run_dir)
        budget = yaml.safe_load((run_dir / "config.yaml").read_text())["run"]["max_new_tokens"]
        out[name] = accuracy.score_frame(frame, questions, "gsm8k", budget, tokenizer)
    return out


def test_committed_runs_extract_the_same_answers(smollm2_tokenizer):
    """Without the dataset: every method's extracted final numbers equal vanilla's (so would any score)."""
    questions = {str(i): data.Question(str(i), i, ["q"], None, {}) for i in range(30)}
    scored = _score_committed(questions, smollm2_tokenizer)
    vanilla = next(f for name, f in scored.items() if name.startswith("vanilla__"))
    assert vanilla["predicted_answer"].notna().mean() >= 0.8
    for name, frame in scored.items():
        assert list(frame["predicted_answer"]) == list(vanilla["predicted_answer"]), name


def test_committed_runs_score_identically(full_gsm8k_test, smollm2_tokenizer):
    questions, _ = data.questions_by_id(DatasetConfig(name="gsm8k", path=str(full_gsm8k_test), use_hf=False))
    scored = _score_committed(questions, smollm2_tokenizer)
    vanilla = next(f for name, f in scored.items() if name.startswith("vanilla__"))
    assert list(vanilla["reference_answer"])[:10] == ["18", "3", "70000", "540", "20", "64", "260", "160", "45", "460"]
    for name, frame in scored.items():
        assert list(frame["correct"]) == list(vanilla["correct"]), name


# --------------------------------------------------------------------------------------------
# The runner (integration: the real SmolLM2)


@pytest.mark.integration
@requires_smollm2
def test_run_scores_accuracy_and_a_finished_run_is_scored_after_the_fact(tmp_path):
    from failfast_bench.cli import compose
    from failfast_bench.runner import Runner, config_hash, format_summary, preflight

    base = [f"run.output_dir={tmp_path}", "run.progress=false", "dataset.num_questions=2", "run.max_new_tokens=24", "drafter=vanilla"]
    plain = compose(base)
    preflight(plain)
    first = Runner(plain).run()
    assert "accuracy" not in first

    scored_cfg = compose([*base, "eval.accuracy=true"])
    assert config_hash(scored_cfg) == config_hash(plain)
    again = Runner(scored_cfg).run()  # complete already: scored from the stored outputs, not rerun
    run_dir = Runner(scored_cfg).run_dir
    _, questions, saved = trace.load_run(run_dir)
    assert set(accuracy.COLUMNS) <= set(questions.columns)
    assert saved["accuracy"] == again["accuracy"] and again["accuracy"]["n_questions"] == 2

    ar = compose([f"run.output_dir={tmp_path}", "run.progress=false", "dataset.num_questions=2", "run.max_new_tokens=24",
                  "drafter=ar", "drafter.model=target", "drafter.spec_len=5", "eval.accuracy=true"])
    preflight(ar)
    live = Runner(ar).run()
    assert live["accuracy"]["n_correct"] == again["accuracy"]["n_correct"]
    _, ar_questions, _ = trace.load_run(Runner(ar).run_dir)
    assert list(ar_questions["predicted_answer"]) == list(questions["predicted_answer"])
    assert "accuracy: " in format_summary(live)


# --------------------------------------------------------------------------------------------
# Stored runs: the CLI and report --accuracy


@pytest.mark.filterwarnings("ignore:.*is not the canonical:UserWarning")
def test_stored_run_is_scored_post_hoc_by_the_cli_and_the_report(tmp_path, capsys):
    import json

    from failfast_bench import report
    from failfast_bench.latency import load_profile
    from test_report import write_run

    gold = tmp_path / "gsm8k.jsonl"
    gold.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"work\n#### {i + 1}"}) + "\n" for i in range(2)))
    run_dir = write_run(tmp_path / "runs", "ar_None_sf_4", {"name": "ar", "spec_len": 4}, 3, 4)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["dataset"].update(path=str(gold), use_hf=False)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    frame = pd.read_parquet(run_dir / "questions.parquet")
    frame["output_text"] = ["1 + 0 = \\boxed{1}<|im_end|>", "so 3"]  # within the 64-token budget: no tokenizer needed
    trace.write_parquet(frame, run_dir / "questions.parquet")

    runs, _ = report.collect([tmp_path / "runs"], [load_profile("a6000_paper")], accuracy=True)
    assert list(runs["accuracy"]) == [0.5] and list(runs["accuracy_n"]) == [2]
    assert "accuracy" not in trace.load_run(run_dir)[2]  # the report never writes

    assert accuracy.main([str(tmp_path / "runs"), "--write", "--per-question"]) == 0
    out = capsys.readouterr().out
    assert "accuracy: 1/2 = 0.500" in out and "predicted='3' reference='2'" in out
    _, stored, summary = trace.load_run(run_dir)
    assert list(stored["correct"]) == [True, False] and summary["accuracy"]["n_correct"] == 1
