"""Bad input exits non-zero with one clear line, before any model loads, and leaves no files."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

CASES = [
    (["drafter=nope"], "unknown drafter 'nope'; valid: ar, ar_dynamic, diffuspec, dllm, dllm_cost, dllm_tree, eagle3, failfast, vanilla"),
    (["target=gpt5"], "unknown target 'gpt5'; valid:"),
    (["drafter.spec_len=abc"], "could not be converted to Integer"),
    (["drafter.bogus=1"], "Key 'bogus' not in 'DrafterConfig'"),
    (["drafter.tau=1.5"], "drafter.tau=1.5 is outside [0, 1]"),
    (["drafter.tau=-0.1"], "outside [0, 1]"),
    (["drafter=failfast", "drafter.n_max=5"], "drafter.n_max=5 must be >= drafter.n=10"),
    (["drafter=ar", "drafter.spec_len=0", "drafter.model=target"], "drafter.spec_len=0 must be >= 1"),
    (["drafter=vanilla", "dataset.num_questions=100000"], "num_questions=100000"),
    (["drafter=vanilla", "run.device=cuda"], "no CUDA device"),
    (["drafter=ar", "drafter.model=/nonexistent/dir"], "does not exist"),
    (["drafter=vanilla", "dataset=humaneval", "eval.accuracy=true"], "executes the model's programs: add eval.execute_code=true"),
    (["drafter=vanilla", "dataset=mt_bench", "eval.accuracy=true"], "mt_bench has no automatically checkable answers"),
    (["drafter=vanilla", "dataset=math500"], "no math500 data (no packaged copy): set dataset.path"),
    (["drafter=vanilla", "dataset=gpqa"], "Idavidrein/gpqa is gated: accept its terms on the hub, then set HF_TOKEN"),
    # -m sweeps: every job is checked before the first one starts, and the bad one is named.
    (["-m", "experiment=micro_tau", "drafter.tau=0.2,1.5"], "sweep job [drafter.tau=1.5]: drafter.tau=1.5 is outside [0, 1]"),
    (["-m", "drafter=failfast,dllm", "drafter.spec_len=0"], "sweep job [drafter=failfast]: drafter.spec_len=0 must be >= 1"),
    (["-m", "drafter=failfast,nope"], "sweep job [drafter=nope]: unknown drafter 'nope'; valid: ar,"),
]


def run_cli(args, tmp_path, extra_env=None):
    env = {**os.environ, "FAILFAST_BENCH_RUNS": str(tmp_path / "runs"), "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "failfast_bench", *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


@pytest.mark.parametrize("args,expected", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_one_clear_line(args, expected, tmp_path):
    if "cuda" in " ".join(args):
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("failfast-bench: error: ")
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == [], "bad input must leave no files"


def test_missing_asset_names_the_fetch_command(tmp_path):
    proc = run_cli(["drafter=vanilla"], tmp_path, {"FAILFAST_BENCH_CACHE": str(tmp_path / "empty-cache")})
    assert proc.returncode == 2
    assert "python -m failfast_bench.assets fetch smollm2-135m" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == []


def test_tokenizer_mismatch_is_refused(tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    from failfast_bench.config import ConfigError
    from failfast_bench.models import check_shared_tokenizer

    def make(vocab):
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")

    a = make({"<unk>": 0, "hello": 1, "world": 2})
    b = make({"<unk>": 0, "world": 1, "hello": 2})
    padded = make({"<unk>": 0, "hello": 1, "world": 2, "<mask>": 3})
    check_shared_tokenizer(a, padded, "padded")  # an added token is fine
    with pytest.raises(ConfigError, match="does not share the target's tokenizer"):
        check_shared_tokenizer(a, b, "other")


def test_sweep_jobs_expand_presets_and_command_line_like_hydra():
    from failfast_bench.cli import sweep_jobs

    assert sweep_jobs(["experiment=micro_tau"]) == [["experiment=micro_tau", f"drafter.tau={t}"] for t in ("0.05", "0.25", "0.45", "0.65", "0.85")]
    # A command-line sweep of the preset's key replaces the preset's values; other axes multiply.
    jobs = sweep_jobs(["experiment=micro_tau", "drafter.tau=0.1,0.2", "run.seed=1,2"])
    assert len(jobs) == 4 and ["experiment=micro_tau", "drafter.tau=0.1", "run.seed=2"] in jobs
