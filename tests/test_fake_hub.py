"""The README's GPU commands, run here on CPU against a fake offline Hugging Face Hub (tests/fake_hub.py):
tiny models under the real repo ids and layouts, loaded through the hub-id code paths, each run lossless."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fake_hub as fh

SMALL = ["run.device=cpu", "run.threads=1", "run.max_new_tokens=16", "dataset.num_questions=2", "run.progress=false",
         "dataset.template=chat"]  # the bare question: byte-level prompts stay short


@pytest.fixture(scope="module")
def gsm8k_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "test.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in fh.QUESTIONS))
    return path


def test_cache_has_the_real_layouts(fake_hub):
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(fake_hub.cache)
    assert not info.warnings
    repos = {r.repo_id: r for r in info.repos}
    assert set(repos) == {fh.TARGET_7B, fh.TARGET_14B, fh.TARGET_32B, fh.AR_DRAFTER, fh.FAST_DLLM, fh.EAGLE3_7B, fh.EAGLE3_14B,
                          fh.EAGLE3_32B, fh.EAGLE3_LLAMA, fh.GSM8K}
    for repo_id, repo in repos.items():
        (rev,) = repo.revisions
        assert rev.commit_hash == fake_hub.commits[repo_id] and "main" in rev.refs
    target = fake_hub.snapshot(fh.TARGET_7B)
    assert (target / "model.safetensors.index.json").is_file() and (target / "config.json").is_symlink()
    dllm = json.loads((fake_hub.snapshot(fh.FAST_DLLM) / "config.json").read_text())
    assert dllm["model_type"] == "Fast_dLLM_Qwen" and dllm["bd_size"] == 32 and "auto_map" in dllm and dllm["tie_word_embeddings"]
    assert "mask_token_id" not in dllm  # the mask token lives only in the tokenizer
    added = {t["content"]: t["id"] for t in json.loads((fake_hub.snapshot(fh.FAST_DLLM) / "tokenizer.json").read_text())["added_tokens"]}
    assert added[fh.MASK_TOKEN] == fh.MASK_ID and added["<|im_end|>"] == fh.EOS_ID
    head = fake_hub.snapshot(fh.EAGLE3_7B)
    assert not list(head.glob("tokenizer*")) and json.loads((head / "config.json").read_text())["architectures"] == ["LlamaForCausalLMEagle3"]


DRAFTERS = {
    "failfast": ["drafter=failfast"],
    "dllm": ["drafter=dllm"],
    "ar": ["drafter=ar"],
    "eagle3": ["drafter=eagle3", f"drafter.model={fh.EAGLE3_7B}"],
}


@pytest.mark.parametrize("name", list(DRAFTERS))
def test_readme_gpu_command_runs_lossless_through_hub_ids(name, hub_env, gsm8k_file, tmp_path):
    """`python -m failfast_bench target=qwen2.5-7b drafter=...` (README GPU section), with run.device=cpu and small sizes."""
    from failfast_bench import trace
    from failfast_bench.cli import check_command_line, compose
    from failfast_bench.runner import run

    overrides = ["target=qwen2.5-7b", *DRAFTERS[name], *SMALL, f"dataset.path={gsm8k_file}", f"run.output_dir={tmp_path}"]
    assert check_command_line(overrides) is None  # the CLI's one-line checks, tokenizer / head checks included
    summary = run(compose(overrides))
    metrics = summary["metrics"]
    assert metrics["n_questions"] == 2 and metrics["lossless_mismatches"] == 0
    _, questions, _ = trace.load_run(Path(summary["run_dir"]))
    # Every question was checked against its own vanilla decoding (the reference existed and matched).
    assert questions["vanilla_n_out"].notna().all() and not questions["lossless_mismatch"].any() and (questions["n_out"] > 0).all()
    manifest = json.loads((Path(summary["run_dir"]) / "manifest.json").read_text())
    drafter_repo = {"failfast": fh.FAST_DLLM, "dllm": fh.FAST_DLLM, "ar": fh.AR_DRAFTER, "eagle3": fh.EAGLE3_7B}[name]
    assert manifest["hub"]["target"] == {"repo": fh.TARGET_7B, "revision": None, "commit": hub_env.commits[fh.TARGET_7B]}
    assert manifest["hub"]["drafter"] == {"repo": drafter_repo, "revision": None, "commit": hub_env.commits[drafter_repo]}
    if name == "ar":
        assert metrics["acceptance_rate"] > 0.9  # the fake 1.5B carries the 7B's weights: the accept paths ran
    if name in ("failfast", "dllm"):
        assert manifest["drafter"]["model"]["layout"] == "fast_dllm" and manifest["drafter"]["mask_token_id"] == fh.MASK_ID


def test_cli_finds_the_hub_through_hf_home(fake_hub, gsm8k_file, tmp_path):
    """The real entry point in a fresh process, configured only by HF_HOME (as on a GPU node): an EAGLE-3 head by hub id."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HF_HOME")}
    env.update(HF_HOME=str(fake_hub.home), HF_HUB_OFFLINE="1", FAILFAST_BENCH_RUNS=str(tmp_path / "runs"))
    args = ["target=qwen2.5-7b", "drafter=eagle3", f"drafter.model={fh.EAGLE3_7B}", *SMALL, "dataset.num_questions=1", f"dataset.path={gsm8k_file}"]
    proc = subprocess.run([sys.executable, "-m", "failfast_bench", *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (summary_file,) = (tmp_path / "runs").rglob("summary.json")
    assert json.loads(summary_file.read_text())["metrics"]["lossless_mismatches"] == 0
