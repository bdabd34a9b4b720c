"""The F9 input table is built from the recipes' training logs and the EAGLE-3 evaluation history."""
from __future__ import annotations

import json

from failfast_bench.train.curves import collect_curves, main


def test_curves_from_training_logs(tmp_path):
    (tmp_path / "dllm").mkdir()
    (tmp_path / "dllm" / "log.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"kind": "eval", "step": 0, "top1": 0.5},
        {"kind": "train", "step": 10, "accuracy": 0.2, "loss": 4.0},
        {"kind": "train", "step": 20, "accuracy": 0.3, "loss": 3.5},
    ]))
    (tmp_path / "eagle3" / "export").mkdir(parents=True)
    (tmp_path / "eagle3" / "export" / "train_summary.json").write_text(json.dumps(
        {"history": [{"step": 100, "top1_agreement": 0.6, "step0_loss": 2.0}]}))
    frame = collect_curves(tmp_path)
    assert list(frame.step) == [10, 20, 100] and set(frame.kind) == {"train", "heldout"}


def test_curves_cli_writes_csv(tmp_path):
    root = tmp_path / "train_runs" / "t"
    (root / "ar").mkdir(parents=True)
    (root / "ar" / "log.jsonl").write_text(json.dumps({"kind": "train", "step": 5, "accuracy": 0.4, "loss": 3.0}))
    out = tmp_path / "curves.csv"
    assert main(["--cache-root", str(tmp_path), "--target", "t", "--out", str(out)]) == 0
    assert out.read_text().splitlines()[1].startswith("AR drafter")


def test_warm_started_runs_are_one_line_and_absent_runs_keep_their_rows(tmp_path):
    root = tmp_path / "train_runs" / "t"
    for name, steps in (("dllm_cond", (10, 20)), ("dllm_cond_2", (10,)), ("dllm_cond_unitnorm", (10,))):
        (root / name).mkdir(parents=True)
        (root / name / "log.jsonl").write_text("\n".join(json.dumps({"kind": "train", "step": s, "accuracy": 0.5, "loss": 2.0})
                                                         for s in steps))
    out = tmp_path / "curves.csv"
    out.write_text('label,step,accuracy,loss,kind\nAR drafter (training accuracy),5,0.4,3.0,train\n')
    assert main(["--cache-root", str(tmp_path), "--target", "t", "--out", str(out)]) == 0
    frame = __import__("pandas").read_csv(out)
    cond = frame[frame.label.str.startswith("target-conditioned")]
    assert list(cond.step) == [10, 20, 30]  # the second run's step 10 is step 30 of the drafter
    assert list(frame[frame.label.str.startswith("AR")].step) == [5]  # not on this machine: kept
