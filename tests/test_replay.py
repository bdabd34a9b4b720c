"""Trace replay: verdicts read from the target's cached greedy continuation equal live verdicts."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from failfast_bench import replay
from failfast_bench.config import ConfigError
from failfast_bench.drafters.ar import ARDrafter
from failfast_bench.drafters.base import Draft, VanillaDrafter
from failfast_bench.engine import generate
from failfast_bench.verify import TargetVerifier

from conftest import requires_smollm2
from tiny_models import greedy_reference, tiny_model

# Timing fields differ between any two runs; target_tokens past the first rejection are unknowable in replay.
TIMING = {"drafter_seconds", "verify_seconds", "drafter_forward_seconds", "verify_forward_seconds"}


def comparable(record) -> dict:
    row = {k: v for k, v in dataclasses.asdict(record).items() if k not in TIMING}
    row["target_tokens"] = row["target_tokens"][: row["accepted_len"] + 1]
    return row


@pytest.fixture(scope="module")
def target():
    return tiny_model("llama", seed=0)


@pytest.fixture(scope="module")
def noisy_drafter_model(target):
    """The target with perturbed weights: agrees often but not always (a realistic mix of verdicts)."""
    model = tiny_model("llama", seed=0)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.25 * p.std() * torch.randn(p.shape, generator=gen))
    return model


def live_and_replayed(target, drafter_factory, prompt, max_new_tokens, stop_ids):
    live = generate(TargetVerifier(target), drafter_factory(), prompt, max_new_tokens, stop_ids)
    length = max_new_tokens + 61
    cont = replay.greedy_continuation(TargetVerifier(target), prompt, length, stop_ids)
    verifier = replay.ReplayVerifier(lambda p: cont.tokens if list(p) == prompt else None)
    replayed = generate(verifier, drafter_factory(), prompt, max_new_tokens, stop_ids)
    return live, replayed, cont


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("with_stop", [False, True])
def test_replayed_rounds_equal_live_rounds(target, noisy_drafter_model, dynamic, with_stop):
    prompt = [5, 17, 33, 8, 41, 12]
    free_run = greedy_reference(target, prompt, 40, stop_ids=())
    # A stop token that the target really emits mid-way exercises the cut and the bonus after the stop.
    stop_ids = [free_run[15]] if with_stop else [2]
    factory = lambda: ARDrafter(noisy_drafter_model, spec_len=5, dynamic=dynamic, tau=0.5, n=4, n_max=12, stop_ids=tuple(stop_ids))  # noqa: E731
    live, replayed, cont = live_and_replayed(target, factory, prompt, 30, stop_ids)
    assert [comparable(r) for r in replayed.rounds] == [comparable(r) for r in live.rounds]
    assert replayed.output_tokens == live.output_tokens
    assert replayed.stopped_by_eos == live.stopped_by_eos
    accepted = [r.accepted_len for r in live.rounds]
    assert 0 < sum(accepted) < sum(r.draft_len for r in live.rounds), "want both accepted and rejected drafts"
    vanilla = generate(TargetVerifier(target), VanillaDrafter(), prompt, 30, stop_ids).output_tokens
    assert replay.vanilla_output(cont.tokens, 30, stop_ids) == vanilla
    if with_stop:
        assert cont.complete and cont.tokens[-2] in stop_ids  # one token past the first stop, then done


def test_tree_verdicts_equal_live(target):
    prompt = [3, 9, 27, 81, 50]
    cont = replay.greedy_continuation(TargetVerifier(target), prompt, 40, [2]).tokens
    live = TargetVerifier(target)
    live.start(prompt)
    rep = replay.ReplayVerifier(lambda p: cont)
    rep.start(prompt)
    wrong = lambda t: (t + 1) % 96  # noqa: E731
    # Trees relative to the committed position c: a right path with wrong siblings; a wrong root; all right.
    shapes = [
        (lambda c: [cont[c], wrong(cont[c]), cont[c + 1], wrong(cont[c + 2])], [-1, -1, 0, 2], 2),
        (lambda c: [wrong(cont[c])], [-1], 0),
        (lambda c: [cont[c], cont[c + 1]], [-1, 0], 2),
    ]
    position = 0
    for make, parents, expect_accepted in shapes:
        draft = Draft(tokens=make(position), tree_parents=parents)
        a, b = live.verify(draft), rep.verify(draft)
        assert a.accepted_len == expect_accepted
        assert (a.accepted_len, a.next_token, a.accepted_path, a.bonus, a.target_tokens) == (
            b.accepted_len, b.next_token, b.accepted_path, b.bonus, b.target_tokens)
        assert live.last_verified_tokens == rep.last_verified_tokens
        position += a.accepted_len + 1
        assert rep.position == position


def test_vanilla_output_cuts_after_stop_and_at_limit():
    assert replay.vanilla_output([4, 5, 2, 7, 8], 10, [2]) == [4, 5, 2]
    assert replay.vanilla_output([4, 5, 6, 7, 8], 3, [2]) == [4, 5, 6]
    assert replay.vanilla_output([4, 5, 6], 3, [6]) == [4, 5, 6]


def test_draft_past_the_continuation_is_a_clear_error():
    rep = replay.ReplayVerifier(lambda p: [4, 5, 6])
    rep.start([1])
    with pytest.raises(replay.ReplayError, match="continuation holds 3 tokens"):
        rep.verify(Draft(tokens=[4, 5, 6]))


def test_continuation_length_covers_the_longest_draft(tmp_path):
    from failfast_bench.cli import compose

    cfg = compose([f"run.output_dir={tmp_path}", "run.max_new_tokens=32", "drafter=ar_dynamic", "drafter.n_max=200"])
    assert replay.continuation_length(cfg) == 32 + 200 + 1
    cfg = compose([f"run.output_dir={tmp_path}", "run.max_new_tokens=32", "drafter=ar", "drafter.spec_len=5"])
    assert replay.continuation_length(cfg) == 32 + 5 + 1
    cfg = compose([f"run.output_dir={tmp_path}", "run.max_new_tokens=32", "drafter=failfast"])
    assert replay.continuation_length(cfg) == 32 + 96 + 1  # the dLLM budget bounds every draft


def test_extending_a_cached_continuation_equals_decoding_it_whole(target):
    prompt = [7, 3, 19, 44]
    whole = replay.greedy_continuation(TargetVerifier(target), prompt, 30, [])
    part = replay.greedy_continuation(TargetVerifier(target), prompt, 12, [])
    extended = replay.greedy_continuation(TargetVerifier(target), prompt, 30, [], known=part.tokens)
    assert extended.tokens == whole.tokens and not extended.complete
    stop = whole.tokens[5]
    done = replay.greedy_continuation(TargetVerifier(target), prompt, 30, [stop], known=whole.tokens[:7])
    assert done.complete and done.tokens == whole.tokens[:7]


def test_store_keeps_the_longest_entry(tmp_path):
    store = replay.ContinuationStore("t", root=tmp_path)
    store.put("q", [1, 2], replay.Continuation([5, 6, 7], False))
    store.put("q", [1, 2], replay.Continuation([5], False))
    assert store.get("q", [1, 2]).tokens == [5, 6, 7]
    assert store.get("q", [1, 3]) is None
    made = []
    got = store.get_or_make("q", [1, 2], 5, lambda known: made.append(list(known)) or replay.Continuation([5, 6, 7, 8, 9], False))
    assert got.tokens == [5, 6, 7, 8, 9] and made == [[5, 6, 7]]
    assert store.get_or_make("q", [1, 2], 4, lambda known: pytest.fail("cached")).tokens == [5, 6, 7, 8, 9]
    store.put("q", [1, 2], replay.Continuation([5, 2, 9], True))  # complete beats longer-but-open
    assert store.get("q", [1, 2]).covers(1000)


def test_eagle3_replays_with_taps_from_one_target_forward(tmp_path):
    """Drafters reading the target's hidden states replay: the taps come from one forward per question."""
    from failfast_bench.cli import compose

    replay.check_replayable(compose([f"run.output_dir={tmp_path}", "drafter=eagle3", "run.replay=true"]))


# ------------------------------------------------------------------------------------------------
# The embedded default, through the runner


def _layer_skip_drafter(tmp_path_factory) -> str:
    """SmolLM2 cut to its first 3 layers: a real drafter that is right often but not always."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from failfast_bench import assets

    src = assets.require("smollm2-135m")
    config = AutoConfig.from_pretrained(src)
    config.num_hidden_layers = 3
    full = AutoModelForCausalLM.from_pretrained(src)
    small = AutoModelForCausalLM.from_config(config)
    small.load_state_dict(full.state_dict(), strict=False)
    out = tmp_path_factory.mktemp("layer_skip")
    small.save_pretrained(out)
    return str(out)


@pytest.mark.integration
@requires_smollm2
def test_replayed_run_equals_live_run_on_smollm2(tmp_path, tmp_path_factory):
    import pandas as pd

    from failfast_bench import trace
    from failfast_bench.cli import compose
    from failfast_bench.runner import Runner, preflight

    drafter_dir = _layer_skip_drafter(tmp_path_factory)
    common = [f"run.output_dir={tmp_path}", "run.progress=false", "dataset.num_questions=2", "run.max_new_tokens=20",
              "drafter=ar_dynamic", f"drafter.model={drafter_dir}", "drafter.n=4", "drafter.n_max=12", "drafter.tau=0.3"]
    results = {}
    for mode in ("false", "true"):
        cfg = compose([*common, f"run.replay={mode}"])
        preflight(cfg)
        summary = Runner(cfg).run()
        results[mode] = (summary, *trace.load_run(Runner(cfg).run_dir), Runner(cfg).run_dir)
    (live_s, live_r, live_q, _, _), (rep_s, rep_r, rep_q, _, rep_dir) = results["false"], results["true"]
    assert live_s["config_hash"] != rep_s["config_hash"]
    drop = [c for c in live_r.columns if c in TIMING]
    live_r, rep_r = live_r.drop(columns=drop), rep_r.drop(columns=drop)
    for frame in (live_r, rep_r):
        frame["target_tokens"] = [list(t)[: a + 1] for t, a in zip(frame["target_tokens"], frame["accepted_len"])]
        for col in ("draft_tokens", "confidences", "recorded_confidences"):
            frame[col] = frame[col].map(list)
    pd.testing.assert_frame_equal(live_r, rep_r)
    assert 0 < live_s["metrics"]["acceptance_rate"] < 1
    for col in ("output_tokens", "n_out", "n_rounds", "accepted_total", "drafted_total", "drafter_passes", "lossless_mismatch"):
        assert list(map(str, live_q[col])) == list(map(str, rep_q[col])), col
    for key in ("modeled_speedup", "modeled_speedup_refined", "acceptance_rate", "tokens_per_round"):
        assert rep_s["metrics"][key] == pytest.approx(live_s["metrics"][key]), key
    assert rep_s["metrics"]["measured_speedup"] is None  # null in strict JSON: nothing was timed
    # Both accountings come from the same replayed trace; asking for strict reports it without a rerun.
    for s in (live_s, rep_s):
        paper, strict = s["accounting"]["paper"]["a6000_paper"], s["accounting"]["strict"]["a6000_paper"]
        assert strict["tokens_per_round_pooled"] <= paper["tokens_per_round_pooled"]
        assert strict["n_out_total"] <= min(paper["n_out_total"], 2 * 20)
    for key in ("modeled_speedup", "modeled_speedup_pooled", "acceptance_rate", "tokens_per_round"):
        assert rep_s["accounting"]["strict"]["a6000_paper"][key] == pytest.approx(live_s["accounting"]["strict"]["a6000_paper"][key]), key
    cfg = compose([*common, "run.replay=true", "run.accounting=strict"])
    assert Runner(cfg).run_dir == rep_dir
    again = Runner(cfg).run()
    assert again["headline_accounting"] == "strict" and again["metrics"] == rep_s["accounting"]["strict"]["a6000_paper"]
    assert json.loads((rep_dir / "manifest.json").read_text())["replay"] is True
    assert rep_s["replay"] is True
