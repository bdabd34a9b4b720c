"""``python -m failfast_bench.train`` end to end on a tiny random target with SmolLM2's tokenizer: data,
training, shipping (model card) and loading the shipped drafters the way the benchmark does."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from failfast_bench.cli import CONF_DIR

# Hundreds of tiny forwards: one torch thread (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

SMOLLM2 = Path("~/.cache/failfast-bench/models/smollm2-135m-instruct").expanduser()



def compose_train(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from failfast_bench.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR / "train")):
        return compose(config_name="config", overrides=[f"hydra.searchpath=[file://{CONF_DIR}]", *overrides])


def test_config_composes_with_benchmark_targets():
    cfg = compose_train(["recipe=ar", "target=qwen2.5-7b"])
    assert cfg.recipe.name == "ar" and cfg.target.model == "Qwen/Qwen2.5-7B-Instruct"
    assert cfg.data.train_path is None  # resolved at run time: $FAILFAST_BENCH_DATA, then the hub
    assert compose_train([]).recipe.name == "dllm"


@pytest.fixture(scope="module")
def tiny_target_dir(tmp_path_factory):
    """A 2-layer random Llama with SmolLM2's vocabulary, saved next to SmolLM2's tokenizer."""
    if not (SMOLLM2 / "tokenizer.json").exists():
        pytest.skip("SmolLM2 tokenizer not in the asset cache (python -m failfast_bench.assets fetch smollm2-135m)")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny_target")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, eos_token_id=2, bos_token_id=1, pad_token_id=2, tie_word_embeddings=True, initializer_range=0.3,
    )
    LlamaForCausalLM(config).save_pretrained(root)
    AutoTokenizer.from_pretrained(SMOLLM2).save_pretrained(root)
    questions = root / "train.jsonl"
    questions.write_text("".join(json.dumps({"question": f"Tom has {i} apples and buys {i + 3} more. How many now?", "answer": "#### 0"}) + "\n" for i in range(12)))
    return root


@pytest.mark.parametrize("recipe", ["dllm", "dllm_cond", "ar"])
def test_all_stages_then_load_like_the_benchmark(tiny_target_dir, tmp_path, recipe):
    from failfast_bench.drafters.blockdiff_model import load_block_diffusion_drafter
    from failfast_bench.drafters.shared_trunk import load_shared_trunk_lm
    from failfast_bench.train.__main__ import run
    from transformers import AutoModelForCausalLM

    ship = tmp_path / "ship"
    overrides = [
        f"recipe={recipe}", "stage=all", "progress=false", "threads=1", "target_dtype=float32", f"target.model={tiny_target_dir}",
        f"cache_root={tmp_path}", f"data.train_path={tiny_target_dir / 'train.jsonl'}", f"data.compact_dir={tmp_path / 'compact'}",
        "data.templates=[math,chat]", "data.shard_size=4", "data.batch_size=4", "data.max_new_tokens=40", "data.heldout_every=5",
        "data.check_evaluation_overlap=false", "recipe.num_layers=2", "train.steps=3", "train.eval_every=2", "train.min_examples=1",
        "eval.examples=1", "eval.points_per_example=2", "eval.sim_tokens=8", f"ship_dir={ship}",
    ]
    block_diffusion = recipe.startswith("dllm")
    if block_diffusion:
        overrides += ["recipe.block_size=8", "recipe.sub_block_size=4", "eval.sub_block_size=4", "eval.budget=16", "eval.n=4", "eval.n_max=12"]
    if recipe == "dllm_cond":
        overrides += ["recipe.feature_layers=[0,1,1]"]  # the tiny target has 3 layers: taps below the last one
    out = run(compose_train(overrides))
    assert out["train"]["step"] == 3
    shipped = {"README.md", "config.json", "model.safetensors"}
    assert {p.name for p in ship.iterdir()} == (shipped | {"draft_vocab.json"} if block_diffusion else shipped)
    card = (ship / "README.md").read_text()
    assert "Held-out quality" in card and "Wall time" in card and "Steps: 3" in card
    meta = json.loads((ship / "config.json").read_text())["failfast_bench"]
    assert meta["shares_target_embeddings"] and meta["target"] == "smollm2-135m"
    assert meta["kind"] == ("block_diffusion" if block_diffusion else "causal")
    target = AutoModelForCausalLM.from_pretrained(tiny_target_dir, dtype=torch.float32)
    if block_diffusion:
        lm = load_block_diffusion_drafter(str(ship), target_model=target)
        assert lm.block_size == 8 and lm.mask_token_id == 49152
        assert tuple(getattr(lm, "feature_layers", ())) == ((0, 1, 1) if recipe == "dllm_cond" else ())
        from failfast_bench.drafters.draft_vocab import read_draft_vocab

        vocab = read_draft_vocab(ship)
        assert len(vocab) == 4096 and 2 in vocab and json.loads((ship / "draft_vocab.json").read_text())["coverage"] == 1.0
    else:
        from transformers import DynamicCache

        lm = load_shared_trunk_lm(ship, target)
        logits = lm(input_ids=torch.tensor([[1, 5, 9]]), past_key_values=DynamicCache(config=lm.config), use_cache=True).logits
        assert logits.shape == (1, 3, 49152)
    # A rerun resumes (nothing left to do) instead of starting over.
    again = run(compose_train(overrides))
    assert again["train"]["step"] == 3 and again["train"]["examples_seen"] == out["train"]["examples_seen"]


def test_eagle3_recipe_through_the_train_app_ships_an_int8_packed_head(tiny_target_dir, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from failfast_bench.drafters.eagle3_head import load_head
    from failfast_bench.drafters.weight_files import PACKING, PACKING_KEY
    from failfast_bench.train.__main__ import run

    ship = tmp_path / "ship"
    overrides = [
        "recipe=eagle3", "stage=all", "progress=false", "threads=1", "target_dtype=float32", f"target.model={tiny_target_dir}",
        f"cache_root={tmp_path}", f"data.train_path={tiny_target_dir / 'train.jsonl'}", f"data.compact_dir={tmp_path / 'compact'}",
        "data.templates=[math]", "data.shard_size=4", "data.batch_size=4", "data.max_new_tokens=24", "data.heldout_every=5",
        "data.check_evaluation_overlap=false", "recipe.max_steps=3", "recipe.eval_every=2", "recipe.eval_examples=2",
        "recipe.draft_vocab_size=64", "recipe.reference_examples=0", "recipe.batch_size=2", "recipe.warmup_steps=1", "recipe.taps=[0,1,2]",
        f"ship_dir={ship}",
    ]
    out = run(compose_train(overrides))
    assert out["train"]["steps"] == 3 and 0.0 <= out["train"]["final_eval"]["top1_agreement"] <= 1.0
    assert {"README.md", "config.json", "model.safetensors"} <= {p.name for p in ship.iterdir()}
    with safe_open(str(ship / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata()[PACKING_KEY] == PACKING
    assert "int8" in (ship / "README.md").read_text()
    target = AutoModelForCausalLM.from_pretrained(tiny_target_dir, dtype=torch.float32)
    head = load_head(str(ship), target)
    assert head.lm_head.weight.dtype.is_floating_point and head.lm_head.weight.shape[0] <= 64 + 2


def test_unknown_eagle3_recipe_key_is_refused():
    from failfast_bench.train.__main__ import _eagle3_settings

    cfg = compose_train(["recipe=eagle3", "+recipe.bogus=1"])
    with pytest.raises(ValueError, match="no key"):
        _eagle3_settings(cfg)
    assert _eagle3_settings(compose_train(["recipe=eagle3"])).ttt_length == 7
