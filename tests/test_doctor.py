"""python -m failfast_bench.doctor: the plan of a run or sweep and every problem, without loading weights."""
from __future__ import annotations

import sys

import pytest

from failfast_bench import doctor


def test_plan_of_a_sweep_lists_jobs_and_groups_problems(tmp_path, capsys, monkeypatch):
    # Loading any weights would be a bug here: the doctor reads configs only.
    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("weights loaded"))
    code = doctor.main(["-m", "drafter=failfast", "drafter.tau=0.4,1.5", f"run.output_dir={tmp_path}", "dataset.num_questions=2"])
    out = capsys.readouterr().out
    assert code == 1
    assert "plan      2 job(s): 0 complete (skipped), 2 to run" in out
    assert "sweep over drafter.tau" in out
    assert "problems  1\n  - jobs [drafter.tau=1.5]: drafter.tau=1.5 is outside [0, 1]" in out
    assert "dtype     target float32" in out and "estimate  at most" in out


def test_clean_run_has_no_problems(tmp_path, capsys):
    code = doctor.main(["drafter=vanilla", f"run.output_dir={tmp_path}", "dataset.num_questions=1"])
    out = capsys.readouterr().out
    assert code == 0 and out.rstrip().endswith("problems  0")
    assert "questions gsm8k: 1 (ids " in out and "vanilla   " in out


def test_unknown_option_is_one_problem(capsys):
    assert doctor.main(["target=qwen9"]) == 1
    assert "unknown target 'qwen9'; valid:" in capsys.readouterr().out


@pytest.fixture
def paper_configs_env(tmp_path, monkeypatch):
    """HF_HOME holding only the paper models' real-size config.json files (what the doctor reads)."""
    from huggingface_hub import constants

    import fake_hub as fh

    hub = fh.build_paper_configs(tmp_path / "hf")
    for key, value in hub.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub.cache))
    return hub


def test_paper_preset_dry_run_plans_the_grid_at_real_sizes(paper_configs_env, tmp_path, capsys):
    """experiment=paper_32b in dry-run form: 18 jobs, 32B target over 2 GPUs, refused without the full split."""
    questions = tmp_path / "gsm8k_test_first30.jsonl"
    questions.write_text("".join(f'{{"question": "q{i}", "answer": "#### {i}"}}\n' for i in range(30)))
    hub = paper_configs_env
    assert doctor.main(["-m", "experiment=paper_32b", f"run.output_dir={tmp_path / 'runs'}"]) == 1
    refused = capsys.readouterr().out
    assert "all 18 jobs: dataset.fallback=refuse: GSM8K test lines 13, 51, 54" in refused
    code = doctor.main(["-m", "experiment=paper_32b", f"run.output_dir={tmp_path / 'runs'}", f"dataset.path={questions}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"Qwen/Qwen2.5-32B-Instruct @ {hub.commits['Qwen/Qwen2.5-32B-Instruct']}; 65.5 GB of weights in bfloat16, 32.8 GB per GPU over 2" in out
    assert f"Fast_dLLM_v2_1.5B @ {hub.commits['Efficient-Large-Model/Fast_dLLM_v2_1.5B']}; ~3.1 GB of weights in bfloat16" in out
    assert "questions gsm8k: 30 (ids 0-29) from path" in out and "18 to run" in out
    assert "each <= 30 questions x 1024 tokens x 52.6 ms (a6000_paper) = 26.9 min" in out
