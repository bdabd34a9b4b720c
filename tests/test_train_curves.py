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


def test_model_card_names_the_whole_warm_start_chain(tmp_path):
    """Three runs of one recipe from another recipe's drafter: the card counts every run's steps, whether the
    previous export recorded the chain (new) or only its own steps (older exports, resolved through `from`)."""
    from failfast_bench.train.card import lineage, write_model_card

    def export(name, training):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"failfast_bench": {"training": training, "target": "t", "kind": "block_diffusion"},
                                                   "num_hidden_layers": 2}))
        return d

    base = {"recipe": "dllm", "steps": 937, "train_seconds": 3420.0, "examples_seen": 3748}
    first = export("a", {"recipe": "dllm_cond", "steps": 212, "warm_start": {"from": "x", **base}})
    second = export("b", {"recipe": "dllm_cond", "steps": 993, "warm_start": {"from": str(first), "steps": 212}})  # old format
    third = {"recipe": "dllm_cond", "steps": 700, "warm_start": {"from": str(second), "steps": 993}}
    assert lineage(third) == {"steps_total": 1905, "runs": 3, "base": base}
    recorded = lineage(json.loads((second / "config.json").read_text())["failfast_bench"]["training"])  # what a new loop records
    fourth = {"recipe": "dllm_cond", "steps": 50, "warm_start": {"from": "/gone", "steps": 700, "steps_total": recorded["steps_total"] + 700,
                                                                 "runs": recorded["runs"] + 1, "base": recorded["base"]}}
    assert lineage(fourth) == {"steps_total": 1955, "runs": 4, "base": base}
    assert lineage({"steps": 5, "warm_start": {"from": "/gone", "steps": 7}})["incomplete"]
    card = write_model_card(export("c", third)).read_text()
    assert "1905 steps of this recipe in 3 runs" in card and "`dllm` recipe's drafter (937 steps" in card
