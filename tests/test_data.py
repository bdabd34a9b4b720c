"""Dataset resolution, question selection and the paper's exact prompts (failfast_bench.data)."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from failfast_bench import assets, data
from failfast_bench.config import ConfigError, DatasetConfig

REPO = Path(__file__).resolve().parents[1]
SMOLLM2_DIR = assets.cache_root() / "models" / "smollm2-135m-instruct"

# paper-reference.md §9.3, "Checksums for test fixtures": (length in chars, SHA-256 of the user message).
GSM8K_0_CODE = (479, "249502f9a05217ca06bd7311ac7c743476a11b4af992eecb31eb19f7f4fb4498")
GSM8K_0_MATH = (520, "91801e33b3d19e037650968df16bd83d72099ac33f54184b13fa2b498a301b94")
HUMANEVAL_0_CODE = (547, "a6ab8679a676cfba09e926ec6e28fb131a7251d0bb644b9ae1a8e6a4fe5767f6")
MT_BENCH_141_PAPER = (356, "80610d41f85deb76e217c7d88b1d2cec6556c07706dac55d03e8eab3fc3ffe72")
# paper-reference.md gives no checksum for MATH-500, AIME or GPQA prompts (and GPQA's text may not be stored):
# these pin the messages of the synthetic FIXTURE_* rows below, as the authors' get_first_user_msg builds them
# (utils.py at 9ec0a85; the GPQA template is unchanged from f1394ea, Dec 2025, on; MATH/AIME use the math template).
FIXTURE_PROBLEM = "Which of the following is\na multi-line problem with $x^2$ and {braces}?"
FIXTURE_CHOICES = ["right one", "wrong one", "  padded wrong  ", "wrong\nthree"]
FIXTURE_MATH = (311, "4548ff004b9d40a37ef49901014562a3fcc9a3c7d04f55d44f963ceeb0fc9b0f")
FIXTURE_GPQA = (530, "48df6d7a8326846bfa8171fb076ce843fea91f6c8940d1048c554f0fa755a5bc")

# Fixture files are not the canonical data; the warnings saying so are expected here.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*is not the canonical:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*not the pinned one:UserWarning"),
]


def cfg(name: str, **kw) -> DatasetConfig:
    kw.setdefault("use_hf", False)
    kw.setdefault("num_questions", None)
    return DatasetConfig(name=name, **kw)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


def mt_rows(tag: str = "") -> list[dict]:
    return [
        {"question_id": qid, "category": "stem" if qid > 140 else "writing", "turns": [f"{tag}q{qid} first", f"{tag}q{qid} second"]}
        for qid in range(81, 161)
    ]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No env data dir and an empty asset cache under tmp_path."""
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.setenv("FAILFAST_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def fake_asset(name: str, rows: list[dict]) -> Path:
    return write_jsonl(assets.asset_path(name), rows)


# --------------------------------------------------------------------------------------------
# Exact prompts


def packaged(name: str) -> Path:
    try:
        return assets.require(name)
    except assets.AssetMissing as exc:
        pytest.skip(str(exc))


def first_message(config: DatasetConfig) -> str:
    questions, _ = data.load_questions(config)
    return data.user_message(questions[0].turns[0], config.template)


@pytest.mark.parametrize("template, expected", [("code", GSM8K_0_CODE), ("math", GSM8K_0_MATH)])
def test_gsm8k_line0_prompt_checksums(template, expected, full_gsm8k_test):
    message = first_message(cfg("gsm8k", path=str(full_gsm8k_test), template=template, question_ids=[0]))
    assert (len(message), data.prompt_sha256(message)) == expected


def test_humaneval_0_prompt_checksum():
    message = first_message(cfg("humaneval", path=str(packaged("humaneval")), template="code", question_ids=[0]))
    assert (len(message), data.prompt_sha256(message)) == HUMANEVAL_0_CODE


def test_mt_bench_141_prompt_checksum_in_paper_selection():
    config = cfg("mt_bench", path=str(packaged("mt_bench")), template="mt_bench", selection="paper", num_questions=5)
    questions, _ = data.load_questions(config)
    assert [q.id for q in questions] == ["141", "142", "143", "144", "145"]
    message = data.user_message(questions[0].turns[0], "mt_bench")
    assert (len(message), data.prompt_sha256(message)) == MT_BENCH_141_PAPER


def test_template_whitespace_quirks():
    math = data.user_message("X", "math")
    assert math.startswith("\n        Solve the following math problem") and math.endswith("Problem: X\n        ")
    assert "step by step, \n" in math and "(\n\n)" in math and "\\boxed{}." in math
    assert data.user_message("X", "mt_bench") == math.replace("math problem", "problem")
    assert data.user_message("a\nb", "code").endswith("```\n        a\nb\n        ```\n        ")
    assert data.user_message("plain {x}", "chat") == "plain {x}"
    with pytest.raises(ValueError, match="unknown prompt template"):
        data.user_message("X", "mmlu")
    gpqa = data.user_message("X", "gpqa")
    assert gpqa.startswith("\n        What is the correct answer") and gpqa.endswith("Problem: X\n        ")
    assert "step by step. \n" in gpqa and "(\n\n).\n" in gpqa and "\\boxed{X}, where X" in gpqa
    assert "D).\n\n        **Example output:** \\boxed{A}\n\n        Problem: " in gpqa  # blank lines carry no indentation


# --------------------------------------------------------------------------------------------
# Resolution order


def test_explicit_path_beats_env_beats_packaged(isolated, monkeypatch):
    fake_asset("mt_bench", mt_rows("pkg "))
    env_dir = isolated / "env"
    write_jsonl(env_dir / "mt_bench" / "question.jsonl", mt_rows("env "))
    explicit = write_jsonl(isolated / "mine.jsonl", mt_rows("path "))

    questions, source = data.load_questions(cfg("mt_bench", num_questions=1))
    assert source.kind == "packaged" and questions[0].turns == ["pkg q81 first"]

    monkeypatch.setenv(data.DATA_ENV, str(env_dir))
    questions, source = data.load_questions(cfg("mt_bench", num_questions=1))
    assert source.kind == "env" and questions[0].turns == ["env q81 first"]
    assert source.location == str(env_dir / "mt_bench" / "question.jsonl") and source.n_rows == 80

    questions, source = data.load_questions(cfg("mt_bench", num_questions=1, path=str(explicit)))
    assert source.kind == "path" and questions[0].turns == ["path q81 first"]
    assert source.sha256 == assets.sha256_file(explicit)


# The development machines' data directory next to the checkout, spelt in pieces so this guard is not itself a
# reference to it.
BESIDE_CHECKOUT = ("/".join(("..", "shared")), "/".join(("shared", "data")))


def test_product_never_looks_beside_the_checkout():
    """Only the user's own settings point at data: no directory next to the repository is searched."""
    for path in [*(REPO / "src").rglob("*.py"), *(REPO / "src").rglob("*.json"), *(REPO / "conf").rglob("*.yaml"),
                 REPO / "Makefile", REPO / "README.md", *(REPO / "scripts").glob("*")]:
        text = path.read_text(encoding="utf-8")
        assert not [p for p in BESIDE_CHECKOUT if p in text], path


def test_env_dir_messages(isolated, monkeypatch, caplog):
    fake_asset("humaneval", [{"task_id": "HumanEval/0", "prompt": "pkg"}])
    caplog.set_level("INFO", logger="failfast_bench.data")
    data.load_questions(cfg("humaneval"))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # unset: nothing to say

    monkeypatch.setenv(data.DATA_ENV, str(isolated / "typo"))
    monkeypatch.setattr(data, "_warned_env_dirs", set())
    for _ in range(3):
        assert data.load_questions(cfg("humaneval"))[1].kind == "packaged"
    warnings_ = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings_ == [f"${data.DATA_ENV}={isolated / 'typo'} is not a directory; ignoring it"]  # once per process

    caplog.clear()
    write_jsonl(isolated / "env" / "gsm8k" / "test.jsonl", [{"question": "q", "answer": "#### 1"}])
    monkeypatch.setenv(data.DATA_ENV, str(isolated / "env"))
    assert data.load_questions(cfg("humaneval"))[1].kind == "packaged"  # a GSM8K-only directory is fine
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def sample_rows(ids=(13, 51, 54)):
    return [{"id": f"gsm8k-test-{i:04d}", "prompt": f"p{i}", "upstream_answer": "x\n#### 7"} for i in ids]


@pytest.mark.parametrize("policy, offline_default, level", [
    ("auto", True, "INFO"), ("auto", False, "WARNING"), ("warn", True, "WARNING"), ("allow", False, None),
])
def test_fallback_to_the_gsm8k_sample_is_said(isolated, caplog, policy, offline_default, level):
    fake_asset("gsm8k_sample", sample_rows())
    caplog.set_level("INFO", logger="failfast_bench.data")
    questions, source = data.load_questions(cfg("gsm8k", num_questions=2, fallback=policy), offline_default=offline_default)
    assert [q.index for q in questions] == [13, 51]
    assert "13, 51" in source.fallback and "first 2 lines" in source.fallback and data.DATA_ENV in source.fallback
    said = [r.levelname for r in caplog.records if "13, 51" in r.getMessage()]
    assert said == ([level] if level else [])


def test_fallback_refused_before_any_model_loads(isolated):
    fake_asset("gsm8k_sample", sample_rows())
    with pytest.raises(ConfigError, match="dataset.fallback=refuse: GSM8K test lines 13, 51"):
        data.dataset_size(cfg("gsm8k", num_questions=2, fallback="refuse"))
    # Explicit ids the sample holds are what was asked for: no fallback.
    questions, source = data.load_questions(cfg("gsm8k", question_ids=[51], fallback="refuse"))
    assert source.fallback is None and questions[0].index == 51


def test_unreachable_hub_goes_offline_for_one_call_only(isolated, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(data, "_hub_reachable", lambda timeout=2.0: False)
    seen = []

    def load_dataset(hub_id, config_name, split, **kw):
        seen.append((os.environ.get("HF_HUB_OFFLINE"), hub_constants.HF_HUB_OFFLINE))
        raise ConnectionError("not cached")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    before = hub_constants.HF_HUB_OFFLINE
    fake_asset("mt_bench", mt_rows("pkg "))
    assert data.load_questions(cfg("mt_bench", use_hf=True, num_questions=1))[1].kind == "packaged"
    assert seen == [("1", True)]
    assert "HF_HUB_OFFLINE" not in os.environ and hub_constants.HF_HUB_OFFLINE == before


def test_hf_beats_packaged_and_failures_fall_through(isolated, monkeypatch):
    fake_asset("mt_bench", mt_rows("pkg "))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    calls = []

    def load_dataset(hub_id, config_name, split, revision=None):
        calls.append((hub_id, config_name, split))
        if hub_id != "philschmid/mt-bench":
            raise ConnectionError("not cached")
        return types.SimpleNamespace(to_list=lambda: mt_rows("hf "))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    questions, source = data.load_questions(cfg("mt_bench", use_hf=True, num_questions=1))
    assert source.kind == "hf" and source.location == "hf:philschmid/mt-bench/train"
    assert source.sha256 == data.canonical_rows_sha256(mt_rows("hf ")) and questions[0].turns == ["hf q81 first"]

    _, source = data.load_questions(cfg("mt_bench", use_hf=True, hf_id="nobody/missing", num_questions=1))
    assert source.kind == "packaged" and calls[-1] == ("nobody/missing", None, "train")


def test_missing_everything_and_bad_explicit_path_are_clear_errors(isolated):
    with pytest.raises(ConfigError, match="assets fetch gsm8k_sample"):
        data.load_questions(cfg("gsm8k"))
    with pytest.raises(ConfigError, match="does not exist"):
        data.load_questions(cfg("gsm8k", path=str(isolated / "nope.jsonl")))
    (isolated / "emptydir").mkdir()
    with pytest.raises(ConfigError, match="directory without"):
        data.load_questions(cfg("gsm8k", path=str(isolated / "emptydir")))


def test_gsm8k_test_file_is_verified_by_hash(isolated):
    rows = [{"question": f"q{i}", "answer": f"work\n#### 1,00{i}"} for i in range(5)]
    tampered = write_jsonl(isolated / "gsm8k" / "test.jsonl", rows)
    with pytest.raises(ConfigError, match="not the GSM8K test split"):
        data.load_questions(cfg("gsm8k", path=str(tampered)))
    other = write_jsonl(isolated / "subset.jsonl", rows)
    with pytest.warns(UserWarning, match="not the canonical gsm8k"):
        questions, _ = data.load_questions(cfg("gsm8k", path=str(other), question_ids=[3]))
    assert questions[0].id == "3" and questions[0].meta["final_answer"] == "1003"


def test_gsm8k_sample_keeps_original_ids(isolated):
    fake_asset("gsm8k_sample", [
        {"id": f"gsm8k-test-{i:04d}", "source": "gsm8k", "prompt": f"p{i}", "expected": "7", "upstream_answer": "x\n#### 7"}
        for i in (5, 42, 1300)
    ])
    questions, source = data.load_questions(cfg("gsm8k", question_ids=[1300, 5]))
    assert source.kind == "packaged" and source.n_rows == 3
    assert [(q.id, q.index, q.turns[0]) for q in questions] == [("5", 5, "p5"), ("1300", 1300, "p1300")]
    with pytest.raises(ConfigError, match=r"question_ids 0, 1 not in gsm8k .*sample"):
        data.load_questions(cfg("gsm8k", question_ids=[0, 1, 5]))


def test_real_gsm8k_sample_ids_are_test_lines(full_gsm8k_test):
    path = packaged("gsm8k_sample")
    questions, _ = data.load_questions(cfg("gsm8k", path=str(path)))
    assert len(questions) == 100 and all(q.id == str(q.index) for q in questions)
    lines = full_gsm8k_test.read_text().splitlines()
    for q in questions[:5]:
        assert json.loads(lines[q.index])["question"] == q.turns[0]


# --------------------------------------------------------------------------------------------
# Selection and errors


def test_selection_keeps_dataset_order_and_takes_first_n(isolated):
    path = write_jsonl(isolated / "he.jsonl", [{"task_id": f"HumanEval/{i}", "prompt": f"p{i}"} for i in range(20)])
    questions, _ = data.load_questions(cfg("humaneval", path=str(path), num_questions=3))
    assert [q.id for q in questions] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    questions, _ = data.load_questions(cfg("humaneval", path=str(path), question_ids=[7, 2, 11], num_questions=2))
    assert [q.index for q in questions] == [2, 7]
    questions, _ = data.load_questions(cfg("humaneval", path=str(path), question_ids=[7], num_questions=10))
    assert [q.id for q in questions] == ["HumanEval/7"] and questions[0].meta["template"] == "math"
    assert data.dataset_size(cfg("humaneval", path=str(path), num_questions=20)) == 20
    with pytest.raises(ConfigError, match="num_questions=21 .* has only 20 questions"):
        data.dataset_size(cfg("humaneval", path=str(path), num_questions=21))
    with pytest.raises(ConfigError, match="question_ids 99 not in humaneval"):
        data.load_questions(cfg("humaneval", path=str(path), question_ids=[1, 99]))
    with pytest.raises(ConfigError, match="more than once"):
        data.load_questions(cfg("humaneval", path=str(path), question_ids=[1, 1]))


def test_mt_bench_standard_paper_and_both_turns(isolated):
    path = write_jsonl(isolated / "question.jsonl", mt_rows())
    questions, _ = data.load_questions(cfg("mt_bench", path=str(path), question_ids=[90, 141]))
    assert [(q.id, q.index) for q in questions] == [("90", 90), ("141", 141)] and questions[0].turns == ["q90 first"]
    questions, _ = data.load_questions(cfg("mt_bench", path=str(path), selection="paper", question_ids=[0, 19], turns="both"))
    assert [(q.id, q.index, q.meta["problem_id"]) for q in questions] == [("141", 0, 0), ("160", 19, 19)]
    assert questions[1].turns == ["q160 first", "q160 second"] and questions[1].meta["selection"] == "paper"
    assert data.dataset_size(cfg("mt_bench", path=str(path), selection="paper")) == 20
    with pytest.raises(ConfigError, match="selection=paper uses rows 60"):
        data.load_questions(cfg("mt_bench", path=str(path), selection="paper", num_questions=30))


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("gsm8k", {"selection": "paper"}, "applies to mt_bench only"),
        ("humaneval", {"turns": "both"}, "have one turn"),
        ("humaneval", {"split": "train"}, "single split"),
        ("gsm8k", {"template": "gpqa"}, "dataset.template=gpqa frames GPQA's four choices"),
        ("gsm8k", {"template": "mmlu"}, "dataset.template='mmlu'"),
        ("aime", {"split": "train"}, "single split"),
        ("squad", {}, "dataset.name='squad'"),
        ("gsm8k", {"num_questions": 0}, "must be >= 1"),
    ],
)
def test_bad_options_are_one_line_config_errors(isolated, name, options, message):
    path = write_jsonl(isolated / "rows.jsonl", [{"question": "q", "answer": "#### 1"}])
    with pytest.raises(ConfigError, match=message) as err:
        data.load_questions(cfg(name, path=str(path), **options))
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------
# Chat rendering


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    if not (SMOLLM2_DIR / "tokenizer_config.json").is_file():
        pytest.skip(f"SmolLM2 tokenizer missing at {SMOLLM2_DIR}; fetch it with: {assets.FETCH_COMMAND} smollm2-135m")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(SMOLLM2_DIR))


def test_render_conversation_two_turns(smollm2_tokenizer):
    tok = smollm2_tokenizer
    turns, template = ["What is 2+2?", "And times 3?"], "math"
    first = data.render_conversation(tok, turns[:1], [], template)
    second = data.render_conversation(tok, turns, ["It is 4."], template)
    wrapped = data.user_message(turns[0], template)
    expected = tok.apply_chat_template(
        [
            {"role": "user", "content": wrapped},
            {"role": "assistant", "content": "It is 4."},
            {"role": "user", "content": "And times 3?"},
        ],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert second == tok(expected, add_special_tokens=False)["input_ids"]
    text = tok.decode(second)
    assert text.count("<|im_start|>user") == 2 and text.endswith("<|im_start|>assistant\n")
    assert "Problem: What is 2+2?" in text and "Problem: And times 3?" not in text
    assert tok.decode(first).endswith("Problem: What is 2+2?\n        <|im_end|>\n<|im_start|>assistant\n")
    assert "<|im_start|>system" in tok.decode(first)  # the template's own default, not ours
    assert data.render_prompt(tok, data.Question("0", 0, turns, None, {}), template) == first
    with pytest.raises(ValueError, match="need 1 assistant answer"):
        data.render_conversation(tok, turns, [], template)


def test_render_conversation_refuses_tokenizer_without_chat_template():
    with pytest.raises(ValueError, match="no chat template"):
        data.render_conversation(types.SimpleNamespace(chat_template=None, name_or_path="tiny"), ["q"], [], "chat")


# --------------------------------------------------------------------------------------------
# Import weight and Hydra options


def test_data_module_and_dataset_size_do_not_import_torch(tmp_path):
    rows = write_jsonl(tmp_path / "he.jsonl", [{"task_id": "HumanEval/0", "prompt": "p"}])
    script = (
        "import sys\n"
        "from failfast_bench import data\n"
        "from failfast_bench.config import DatasetConfig\n"
        f"n = data.dataset_size(DatasetConfig(name='humaneval', path={str(rows)!r}, num_questions=1, use_hf=False))\n"
        "assert n == 1, n\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_conf_dataset_options_compose_into_the_schema():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from failfast_bench.config import register_configs

    register_configs()
    expected = {"gsm8k": ("math", "standard"), "humaneval": ("code", "standard"), "mt_bench": ("chat", "standard"),
                "math500": ("math", "standard"), "aime": ("math", "standard"), "gpqa": ("gpqa", "standard")}
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for name, (template, selection) in expected.items():
            ds = compose(overrides=[f"+dataset={name}", "dataset.question_ids=[1,2]"]).dataset
            assert OmegaConf.get_type(ds) is DatasetConfig
            assert (ds.name, ds.template, ds.selection, ds.num_questions, ds.turns) == (name, template, selection, 10, "first")
            assert list(ds.question_ids) == [1, 2]


# --------------------------------------------------------------------------------------------
# The paper's other datasets: MATH-500, AIME 2024, GPQA Diamond (tiny fixtures; none of them is packaged)


def math_rows(n: int) -> list[dict]:
    rows = [{"problem": f"p{i}", "answer": f"\\frac{{{i}}}{{2}}", "unique_id": f"test/algebra/{i}.json"} for i in range(n)]
    rows[0]["problem"] = FIXTURE_PROBLEM
    return rows


def gpqa_rows(n: int) -> list[dict]:
    fields = ("Question", *data.GPQA_CHOICE_FIELDS)
    rows = [dict(zip(fields, [f"question {i}", f"right {i}", f"wrong {i}a", f"wrong {i}b", f"wrong {i}c"]), **{"Record ID": f"rec{i}"}) for i in range(n)]
    rows[0].update(zip(fields, [FIXTURE_PROBLEM, *FIXTURE_CHOICES]))
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("name", ["math500", "aime"])
def test_math500_and_aime_fixture_prompt_checksum(isolated, name):
    path = write_jsonl(isolated / "rows.jsonl", math_rows(3))
    questions, source = data.load_questions(cfg(name, path=str(path), template="math"))
    assert source.kind == "path" and [q.id for q in questions] == ["0", "1", "2"]
    assert questions[1].reference == questions[1].meta["final_answer"] == "\\frac{1}{2}"
    message = data.user_message(questions[0].turns[0], "math")
    assert (len(message), data.prompt_sha256(message)) == FIXTURE_MATH


def test_gpqa_fixture_prompt_checksum_and_choice_order(isolated):
    path = write_csv(isolated / "gpqa" / "gpqa_diamond.csv", gpqa_rows(3))
    questions, _ = data.load_questions(cfg("gpqa", path=str(isolated), template="gpqa"))  # the directory works too
    message = data.user_message(questions[0].turns[0], "gpqa")
    assert (len(message), data.prompt_sha256(message)) == FIXTURE_GPQA
    text = data.user_message(questions[1].turns[0], "gpqa")
    assert text.endswith("Problem: question 1.\n        Choices: \n        (A) right 1\n        (B) wrong 1a\n"
                         "        (C) wrong 1b\n        (D) wrong 1c\n        ")
    assert questions[1].reference == "A" and questions[1].meta["record_id"] == "rec1"
    plain, _ = data.load_questions(cfg("gpqa", path=str(path), template="chat", question_ids=[1]))
    assert plain[0].turns[0] == "question 1\n\n(A) right 1\n(B) wrong 1a\n(C) wrong 1b\n(D) wrong 1c"


def test_new_datasets_resolve_env_then_hub_and_offline_say_how_to_get_them(isolated, monkeypatch):
    env_dir = isolated / "env"
    write_jsonl(env_dir / "math500" / "test.jsonl", math_rows(4))
    import pandas as pd

    (env_dir / "aime").mkdir(parents=True)
    pd.DataFrame(math_rows(30)).to_parquet(env_dir / "aime" / "train.parquet")  # the hub's file format
    monkeypatch.setenv(data.DATA_ENV, str(env_dir))
    questions, source = data.load_questions(cfg("math500"))
    assert source.kind == "env" and len(questions) == 4
    assert data.dataset_size(cfg("aime")) == 30

    monkeypatch.delenv(data.DATA_ENV)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = []

    def load_dataset(hub_id, config_name, split, revision=None):
        calls.append((hub_id, config_name, split))
        if hub_id != "HuggingFaceH4/aime_2024":
            raise ConnectionError("not cached")
        return types.SimpleNamespace(to_list=lambda: math_rows(30))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    _, source = data.load_questions(cfg("aime", use_hf=True))
    assert source.kind == "hf" and source.location == "hf:HuggingFaceH4/aime_2024/train"
    for name, needs in [("math500", "$FAILFAST_BENCH_DATA/math500/test.jsonl"), ("gpqa", "set HF_TOKEN")]:
        with pytest.raises(ConfigError, match="no packaged copy") as err:
            data.load_questions(cfg(name, use_hf=True))
        assert "dataset.path" in str(err.value) and needs in str(err.value) and "\n" not in str(err.value)
    assert calls[1:] == [("HuggingFaceH4/MATH-500", None, "test"), ("Idavidrein/gpqa", "gpqa_diamond", "train")]


def test_gpqa_text_is_never_committed():
    """GPQA's authors ask that its questions stay out of crawlable places: no GPQA file in the repository."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert not [f for f in tracked if "gpqa" in f.lower() and not f.endswith((".py", ".yaml", ".md"))]
