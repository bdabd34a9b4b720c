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
