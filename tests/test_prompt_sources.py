"""Prompt collections beyond GSM8K train: parsing of the shipped files, the HumanEval-shaped code prompts,
the 13-gram evaluation-overlap rule, and one response store per source feeding one training pool."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from failfast_bench.train import prompt_sources as ps
from failfast_bench.train.data import TEMPLATE_NAMES, DataSettings, generate_responses, iter_examples, load_compact_index

from test_train_data import _ChatTokenizer
from tiny_models import tiny_model

# Hundreds of tiny forwards: one torch thread (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_truncated_sharegpt_file_is_read_up_to_the_last_complete_record():
    records = [{"id": str(i), "conversations": [{"from": "human", "value": f"Tell me about topic {i} please"}]} for i in range(3)]
    text = json.dumps(records, indent=2)
    assert ps.read_sharegpt_conversations(text.encode()) == records
    cut = text[: text.rfind('"value"', 0, len(text) - 5) + 12]  # mid-way through the last record
    assert [r["id"] for r in ps.read_sharegpt_conversations(cut.encode())] == ["0", "1"]
    with pytest.raises(ValueError, match="cut off"):
        ps.read_sharegpt_conversations(b'{"id": ')


def test_sharegpt_first_turns_filters_and_deduplicates():
    convs = [
        {"conversations": [{"from": "human", "value": "Write a haiku about the autumn sea, please."}]},
        {"conversations": [{"from": "human", "value": "write a  haiku about the autumn sea, PLEASE."}]},  # duplicate
        {"conversations": [{"from": "gpt", "value": "I start the conversation myself, oddly."}]},
        {"conversations": [{"from": "human", "value": "Hi"}]},  # too short
        {"conversations": [{"from": "human", "value": "Напиши мне стихотворение про осеннее море"}]},
        {"conversations": []},
        {"conversations": [{"from": "human", "value": "Explain how a binary heap keeps its order."}]},
    ]
    assert ps.sharegpt_first_turns(convs) == ["Write a haiku about the autumn sea, please.", "Explain how a binary heap keeps its order."]


NUMPYDOC = '''Return the number of widgets reachable from the start node.

    Longer explanation
    over two lines.

    Parameters
    ----------
    G : graph

    Returns
    -------
    int

    Examples
    --------
    >>> count_widgets(G, 1)
    3
    >>> count_widgets(G, 2)
    0
    '''


def test_code_prompts_have_humaneval_shape(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "tests").mkdir(parents=True)
    (pkg / "mod.py").write_text(
        "import os\n\n"
        f'def count_widgets(G, start: int = 0) -> int:\n    """{NUMPYDOC}"""\n    seen = set()\n    stack = [start]\n    while stack:\n        seen.add(stack.pop())\n    return len(seen)\n\n'
        'def _private(x):\n    """A private helper that nobody should see here."""\n    a = 1\n    b = 2\n    return a + b\n\n'
        'def short_doc(x):\n    """Too short."""\n    a = 1\n    b = 2\n    return a + b\n\n'
        'def tiny_body(x):\n    """This one has a proper docstring but a tiny body."""\n    return x\n\n'
        'def blank_doc(x):\n    """\n\n    """\n    a = 1\n    b = 2\n    return a + b\n'  # numpy.ma.take's docstring
    )
    (pkg / "tests" / "test_mod.py").write_text('def test_something_long_enough(x):\n    """Tests are not prompts even with docstrings."""\n    a = 1\n    b = 2\n    return a\n')
    prompts = ps.package_function_prompts(pkg)
    assert len(prompts) == 1
    prompt = prompts[0]
    assert prompt.startswith("def count_widgets(G, start: int=0) -> int:\n    \"\"\"\n    Return the number of widgets")
    assert "Parameters" not in prompt and "Returns" not in prompt
    assert ">>> count_widgets(G, 1)\n    3" in prompt
    assert prompt.endswith('    """\n')
    tree = ast.parse(prompt + "    pass\n")  # a function header and docstring: the body is the model's job
    assert ast.get_docstring(tree.body[0]).startswith("Return the number of widgets")


def test_overlap_rule_drops_prompts_sharing_a_13_word_sequence():
    evaluation = ["Compose an engaging travel blog post about a recent trip to Hawaii, highlighting cultural experiences and must-see attractions."]
    near_copy = "Please compose an ENGAGING travel blog post about a recent trip to Hawaii, highlighting cultural experiences - thanks"
    related = "Write a travel blog post about Hawaii with cultural experiences and attractions."
    kept, dropped = ps.drop_overlapping([near_copy, related], evaluation)
    assert kept == [related] and dropped == 1


def test_unknown_source_and_wrong_package_version_are_clear(monkeypatch):
    with pytest.raises(ValueError, match="valid: gsm8k_train, sharegpt, pydoc"):
        ps.load_source("alpaca")
    monkeypatch.setattr(ps.importlib.metadata, "version", lambda dist: "0.0.1")
    with pytest.raises(ps.MissingSource, match=r"pip install networkx==3\.6\.1"):
        ps.pydoc_source()

    def missing(dist):
        raise ps.importlib.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(ps.importlib.metadata, "version", missing)
    with pytest.raises(ps.MissingSource, match=r"\.\[train-data\]"):
        ps.sharegpt_source()


def test_each_source_has_its_own_store_and_the_pool_joins_them(tmp_path, monkeypatch):
    """A non-GSM8K source: prompts named by index, held-out indices never trained on, compact copy only
    reused for the same prompt list, and the training loop's pool is the union of the stores."""
    from failfast_bench.train.dllm_recipe import DllmRecipe, DllmSettings
    from failfast_bench.train.evaluate import EvalSettings
    from failfast_bench.train.loop import LoopSettings, Trainer

    texts = [f"Write a function number {i} that sorts the list" for i in range(12)]
    monkeypatch.setitem(ps.EXTRA_SOURCES, "pydoc", lambda strict=True: ps.SourcePrompts("pydoc", list(texts), {"test": True}))
    model = tiny_model(layers=2, seed=4)
    settings = DataSettings(
        train_path="", cache_dir=str(tmp_path / "responses_pydoc"), source="pydoc", templates=("code",), seed=1, shard_size=4,
        batch_size=3, max_new_tokens=6, topk=4, heldout_every=5, check_evaluation_overlap=False, compact_dir=str(tmp_path / "compact" / "pydoc"),
    )
    store = generate_responses(settings, "tiny", model, _ChatTokenizer(), [2], progress=False)
    assert store.meta["source"] == "pydoc" and "train_file_sha256" not in store.meta
    assert store.completed() == [0, 1, 2]
    held = {e.line for e in iter_examples(store.root, split="heldout")}
    assert held == {2, 7} and not held & {e.line for e in iter_examples(store.root, split="train")}
    assert json.loads((tmp_path / "compact" / "pydoc" / "meta.json").read_text())["source"] == "pydoc"
    # The compact copy answers this prompt list only: another list (a new package version) ignores it.
    assert load_compact_index(tmp_path / "compact" / "pydoc", expect_fingerprint=store.meta["fingerprint"])
    assert load_compact_index(tmp_path / "compact" / "pydoc", expect_fingerprint="other") == {}

    texts[3] = "A changed prompt text"
    other = generate_responses(
        DataSettings(**{**settings.__dict__, "cache_dir": str(tmp_path / "rebuilt")}), "tiny", model, _ChatTokenizer(), [2], progress=False
    )
    fresh = generate_responses(
        DataSettings(**{**settings.__dict__, "cache_dir": str(tmp_path / "fresh"), "compact_dir": None}), "tiny", model, _ChatTokenizer(), [2], progress=False
    )
    assert other.meta["fingerprint"] == fresh.meta["fingerprint"] != store.meta["fingerprint"]
    prompt_of = {e.line: e.prompt_ids for e in iter_examples(store.root, split="all")}
    assert {e.line: e.prompt_ids for e in iter_examples(other.root, split="all")}[3] != prompt_of[3]
    by_line = {e.line: e.response_ids for e in iter_examples(fresh.root, split="all")}
    assert {e.line: e.response_ids for e in iter_examples(other.root, split="all")} == by_line
    # ... and the copy now mirrors the new store alone.
    copy = load_compact_index(tmp_path / "compact" / "pydoc", expect_fingerprint=other.meta["fingerprint"])
    assert {line: ids for rows in copy.values() for line, _, ids in rows} == by_line

    # Two stores, one pool (a missing source store is skipped).
    gsm = generate_responses(
        DataSettings(**{**settings.__dict__, "cache_dir": str(tmp_path / "responses"), "source": "pydoc", "compact_dir": None, "seed": 2}),
        "tiny", model, _ChatTokenizer(), [2], progress=False,
    )
    torch.manual_seed(0)
    ev = EvalSettings(examples=1, points_per_example=2, sim_tokens=8, sub_block_size=4, n=4, n_max=12, budget=16, ar_spec_lens=(2,))
    recipe = DllmRecipe(tiny_model(layers=3, seed=5), "tiny", [0, 1], DllmSettings(block_size=8, sub_block_size=4), ev)
    loop = LoopSettings(steps=1, batch_size=2, lr=1e-3, warmup_steps=1, eval_every=100, log_every=1, min_examples=1, autocast_bf16=False)
    trainer = Trainer(recipe, tmp_path / "run", [gsm.root, store.root, tmp_path / "responses_sharegpt"], loop, lambda: [], {}, progress=False)
    trainer.refresh_pool(force=True)
    assert len(trainer.pool) == 2 * len(list(iter_examples(store.root, split="train")))
    # Source weights: a batch slot picks a store by weight (here only the second one).
    weighted = Trainer(recipe, tmp_path / "run2", [gsm.root, store.root, tmp_path / "responses_sharegpt"],
                       LoopSettings(**{**loop.__dict__, "store_weights": (0.0, 1.0, 1.0), "batch_size": 8}), lambda: [], {}, progress=False)
    weighted.refresh_pool(force=True)
    examples, _ = weighted.batch_for(0)
    own = {tuple(e.prompt_ids) for e in iter_examples(store.root, split="train")}
    assert len(examples) == 8 and all(tuple(e.prompt_ids) in own for e in examples)
    with pytest.raises(ValueError, match="2 store weights for 3 stores"):
        Trainer(recipe, tmp_path / "run3", [gsm.root, store.root, tmp_path / "x"], LoopSettings(**{**loop.__dict__, "store_weights": (1.0, 1.0)}), lambda: [], {}, progress=False)


def test_source_options_are_checked_before_any_model_loads():
    from test_train_cli import compose_train

    from failfast_bench.train.__main__ import _loop_settings, _main_data_settings

    with pytest.raises(ValueError, match="valid: gsm8k_train, sharegpt, pydoc"):
        _main_data_settings(compose_train(["data.source=alpaca"]))
    with pytest.raises(ValueError, match="not in train.sources"):
        _loop_settings(compose_train(["train.source_weights={pydoc: 1}"]))
    cfg = compose_train(["train.sources=[gsm8k_train,sharegpt,pydoc]", "train.source_weights={sharegpt: 2, pydoc: 1}"])
    assert _loop_settings(cfg).store_weights == (0.0, 2.0, 1.0)



@pytest.mark.parametrize("source", ["pydoc", "pydoc_sci", "sharegpt"])
def test_committed_responses_answer_the_installed_prompt_lists(source):
    """The committed copy names prompts by index: it is only valid for the prompt list it was made from."""
    from failfast_bench.train.data import plan_prompts, specs_fingerprint

    compact = Path(__file__).resolve().parents[1] / "data" / "train_responses" / "smollm2-135m" / source
    meta = json.loads((compact / "meta.json").read_text())
    try:
        questions, specs, _ = plan_prompts(
            DataSettings(train_path="", cache_dir="unused", source=source, templates=tuple(meta["templates"]), seed=meta["seed"], heldout_every=meta["heldout_every"])
        )
    except ps.MissingSource as exc:
        pytest.skip(str(exc))
    assert len(specs) == meta["num_prompts"]
    assert specs_fingerprint(specs, questions) == meta["fingerprint"]
    rows = load_compact_index(compact, expect_fingerprint=meta["fingerprint"])
    assert rows
    size = meta["shard_size"]
    for shard, shard_rows in rows.items():
        planned = specs[shard * size: (shard + 1) * size]
        assert [(line, TEMPLATE_NAMES[t]) for line, t, _ in shard_rows] == [(s.line, s.template) for s in planned]
