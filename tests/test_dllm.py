"""Block-diffusion drafters: Algorithm 1's control flow on a scripted model, and losslessness end to end.

The scripted model decides, per absolute position and per visit, which token a denoising pass proposes
and with what probability, so every stopping rule, extension, cap, pass count and KV-reuse decision
can be asserted exactly (paper-reference §4.4-§4.7, §6, §7).
"""
from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch

from failfast_bench.drafters.base import (
    STOP_BUDGET,
    STOP_CAP,
    STOP_FIXED,
    STOP_LOW_CONFIDENCE,
    STOP_REASONS,
    STOP_TOKEN,
    Verdict,
)
from failfast_bench.drafters.dllm import DllmDrafter, FailFastDrafter, rejected_overlap

pytestmark = pytest.mark.usefixtures("one_thread")


def approx(value):
    return pytest.approx(value, abs=1e-5)  # probabilities pass through float32 log/softmax


V = 1000  # scripted vocabulary
MASK = V  # past the vocabulary, like the project drafters
STOP = 999
HIGH = 0.95  # above the baseline's θ = 0.9 (commits are strictly above θ)


def token_at(pos: int) -> int:
    return 1 + pos % 900


class ScriptedModel:
    """Stands in for BlockDiffusionLM: a length-only block cache and scripted predictions.

    ``conf[pos]`` (or ``conf[(pos, visit)]``) sets the top-1 probability a denoising pass reports for a
    masked position on its visit-th pass; ``tokens[pos]`` the token. Cache writes predict
    ``boundary[pos]`` for the position after each block; ``cached`` holds the tokens written so far.
    """

    block_size = 32
    vocab_limit = None

    def __init__(self, mask_token_id: int = MASK):
        self.mask_token_id = mask_token_id
        self.length = 0
        self.conf: dict = {}
        self.tokens: dict = {}
        self.boundary: dict = {}
        self.visits: defaultdict = defaultdict(int)
        self.calls: list = []
        self.cached: list = []

    @property
    def cache_len(self) -> int:
        return self.length

    def reset(self) -> None:
        self.length = 0
        self.cached = []

    def crop(self, keep: int) -> None:
        assert keep % 32 == 0 and keep <= self.length
        self.length = keep
        del self.cached[keep:]

    def _logits(self, token: int, conf: float) -> torch.Tensor:
        probs = torch.full((V,), (1.0 - conf) / (V - 1))
        probs[token] = conf
        return probs.log()

    def write_blocks(self, tokens, every_block_end=False):
        assert self.length % 32 == 0 and len(tokens) % 32 == 0
        start = self.length
        self.length += len(tokens)
        self.cached.extend(tokens)
        self.calls.append(("write", start, len(tokens)))
        ends = range(start + 32, self.length + 1, 32) if every_block_end else [self.length]
        rows = [self._logits(*self.boundary.get(p, (token_at(p), 0.99))) for p in ends]
        return torch.stack(rows)

    def denoise(self, block_tokens, rows):
        assert len(block_tokens) == 32 and self.length % 32 == 0
        start = self.length
        self.calls.append(("denoise", start, tuple(rows)))
        out = []
        for r in rows:
            pos = start + r
            assert block_tokens[r] == self.mask_token_id, "drafter asked for a committed position"
            self.visits[pos] += 1
            conf = self.conf.get((pos, self.visits[pos]), self.conf.get(pos, HIGH))
            out.append(self._logits(self.tokens.get(pos, token_at(pos)), conf))
        return torch.stack(out)


class Spy(FailFastDrafter):
    """FailFast that logs (|C|, L) at every stopping-rule check."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.checks = []

    def _decide(self, st):
        self.checks.append((len(st.recorded), st.window_end - st.ell))
        return super()._decide(st)


def ctx(n: int) -> list[int]:
    return [token_at(p) for p in range(n)]


def failfast(model=None, **kw):
    kw.setdefault("stop_ids", (STOP,))
    return Spy(model or ScriptedModel(), **kw)


def passes(draft):
    return (draft.passes["prefill"], draft.passes["denoise"], draft.passes["cache_update"])


# -- worked traces (paper-reference §4.7) -------------------------------------------------------------
def test_trace_a_fresh_then_reused():
    d = failfast()
    d.start(ctx(40))
    draft = d.propose(ctx(100))
    assert d.checks == [(12, 10), (20, 20), (35, 30), (43, 40), (51, 50), (59, 60), (74, 70)]
    assert draft.stop_reason == STOP_CAP
    assert draft.tokens == [token_at(p) for p in range(100, 170)]
    assert passes(draft) == (1, 10, 2) and draft.total_passes == 13  # Trace A's 12 + the prefill
    assert len(draft.recorded_confidences) == 74 and draft.reported_len is None
    assert draft.confidences[28] == approx(0.99)  # token 128 came from the cache-update pass
    # The block cache now ends at 160; a context in block [160, 192) reuses it: Trace A shifted by 64.
    d.checks.clear()
    second = d.propose((ctx(100) + draft.tokens)[:164])
    assert passes(second) == (0, 10, 2) and second.total_passes == 12
    assert len(second.tokens) == 70 and second.stop_reason == STOP_CAP
    assert second.extra["kv_reused"] and not second.extra["stale_kv"]


def test_trace_b_block_aligned_context():
    d = failfast()
    d.start(ctx(40))
    draft = d.propose(ctx(96))
    assert d.checks == [(15, 10), (23, 20), (31, 30), (38, 40), (54, 50), (62, 60)]
    assert draft.stop_reason == STOP_CAP and len(draft.tokens) == 60
    assert passes(draft) == (1, 8, 1)  # 9 passes + the prefill, which also supplied token 96
    assert draft.tokens[0] == token_at(96) and draft.confidences[0] == approx(0.99)
    assert d.model.calls[0] == ("write", 0, 96)


def test_trace_b_after_cache_update_faithful_prefills_afresh():
    # ℓ = 160 lands exactly on the cache end left by round 1's cache update [128, 160). The authors' code
    # does not reuse that pass's output here: a fresh prefill over [0, 160) runs (P += 1) and its last
    # logit yields token 160. The scripted fresh logit differs from the stored one to tell them apart.
    d = failfast()
    d.start(ctx(40))
    first = d.propose(ctx(100))  # leaves the cache at 160
    assert d.model.cache_len == 160
    d.model.boundary[160] = (777, 0.6)  # what a prefill over [0, 160) predicts from now on
    d.checks.clear()
    second = d.propose((ctx(100) + first.tokens)[:160])
    assert passes(second) == (1, 8, 1) and second.total_passes == 10  # Trace B + the prefill
    assert d.model.calls[-10] == ("write", 0, 160)
    assert second.tokens[0] == 777 and second.confidences[0] == approx(0.6)
    assert second.tokens[1:] == [token_at(p) for p in range(161, 220)]
    assert d.checks == [(15, 10), (23, 20), (31, 30), (38, 40), (54, 50), (62, 60)]
    assert second.stop_reason == STOP_CAP and len(second.tokens) == 60
    assert not second.extra["kv_reused"] and not second.extra["stale_kv"]


@pytest.mark.parametrize("how", ["clean", "override"])
def test_trace_b_after_cache_update_clean_shortcut_reuses_stored_logit(how):
    # The documented clean-mode option: reuse the cache, take token 160 from the logit the cache update
    # stored (no pass). N_max = 70 lets the clean round complete block [128, 160) as the faithful one does.
    kw = dict(mode="clean", n_max=70) if how == "clean" else dict(boundary_reuse=True)
    d = failfast(**kw)
    assert d.boundary_reuse and d.describe()["boundary_reuse"]
    d.start(ctx(40))
    first = d.propose(ctx(100))
    assert d.model.cache_len == 160
    d.model.boundary[160] = (777, 0.6)  # a fresh prefill would predict this; the shortcut never asks
    second = d.propose((ctx(100) + first.tokens)[:160])
    assert passes(second)[0] == 0
    assert second.tokens[0] == token_at(160) and second.confidences[0] == approx(0.99)
    assert second.extra["kv_reused"] and not second.extra["stale_kv"]
    assert ("write", 0, 160) not in d.model.calls


# -- stopping rules ---------------------------------------------------------------------------------
def test_fail_fast_at_first_check():
    d = failfast()
    d.model.conf[105] = 0.3  # above θ, below τ: committed, recorded, fails the round
    d.start(ctx(40))
    draft = d.propose(ctx(100))
    assert draft.stop_reason == STOP_LOW_CONFIDENCE
    assert len(draft.tokens) == 10 and passes(draft) == (1, 2, 0)
    assert draft.confidences[5] == approx(0.3)


def test_faithful_records_past_window_positions_clean_does_not():
    # Position 111 lies past the window [100, 110) but in the same sub-block [104, 112): faithful C
    # records it and fails at the first check; clean mode only fails once 111 is part of the draft.
    for mode, length in [("faithful", 10), ("clean", 20)]:
        d = failfast(mode=mode)
        d.model.conf[111] = 0.3
        d.start(ctx(40))
        draft = d.propose(ctx(100))
        assert (draft.stop_reason, len(draft.tokens)) == (STOP_LOW_CONFIDENCE, length), mode
        assert min(draft.recorded_confidences) == approx(0.3)
        assert len(draft.recorded_confidences) == (12 if mode == "faithful" else 20)


def test_second_pass_position_forces_fail_fast_in_faithful_mode():
    # Quirk 3: a position left masked (confidence <= θ) is recorded, so θ < τ fails the round.
    for mode in ("faithful", "clean"):
        d = failfast(mode=mode)
        d.model.conf[(106, 1)] = 0.03
        d.start(ctx(40))
        draft = d.propose(ctx(100))
        assert d.model.visits[106] == 2
        if mode == "faithful":
            assert draft.stop_reason == STOP_LOW_CONFIDENCE and len(draft.tokens) == 10
            assert passes(draft) == (1, 3, 0)
            assert len(draft.recorded_confidences) == 4 + 8 + 1
            assert draft.recorded_confidences.count(approx(0.03)) == 1
        else:
            assert draft.stop_reason == STOP_CAP
        assert draft.confidences[6] == approx(HIGH)


def test_cap_both_modes():
    faithful, clean = failfast(), failfast(mode="clean")
    for d in (faithful, clean):
        d.start(ctx(40))
        d.propose(ctx(100))
    f2 = faithful.propose(ctx(164))
    c2 = clean.propose(ctx(164))
    assert (len(f2.tokens), f2.stop_reason, passes(f2)) == (70, STOP_CAP, (0, 10, 2))
    # The clean round stopped at L = 60 before completing block [128, 160): its cache ends at 128, so
    # ℓ0 = 160 needs a prefill.
    assert (len(c2.tokens), c2.stop_reason, passes(c2)) == (60, STOP_CAP, (1, 8, 1))
    assert clean.checks[-1] == (c2.extra["records"], 60)
    assert c2.recorded_confidences == approx(c2.confidences)


def test_extension_keeps_committed_tokens_past_the_window():
    # N = 1 < b = 8: after widening, the window is often committed already, yet the next check only
    # comes after another denoising pass (the authors' control flow), and the cap tests |C|, not L.
    d = failfast(n=1, n_max=30)
    d.start(ctx(40))
    draft = d.propose(ctx(100))
    assert d.checks == [(4, 1), (12, 2), (20, 3), (28, 4), (35, 5)]
    assert draft.tokens == [token_at(p) for p in range(100, 105)] and draft.stop_reason == STOP_CAP
    assert passes(draft) == (1, 5, 1)


def test_stop_token_inside_window_reports_window_length():
    d = failfast()
    d.model.tokens[103] = STOP
    d.start(ctx(40))
    draft = d.propose(ctx(100))
    assert draft.stop_reason == STOP_TOKEN
    assert draft.tokens == [token_at(100), token_at(101), token_at(102), STOP]
    assert draft.reported_len == 10 and draft.spec_len == 10  # §4.6 item 8
    assert passes(draft) == (1, 1, 0)


def test_stop_token_waits_for_earlier_masks():
    d = failfast(theta=0.5)
    d.model.tokens[102] = STOP
    d.model.conf[(101, 1)] = 0.2  # stays masked on the first pass
    d.model.conf[100] = 0.6
    d.start(ctx(40))
    draft = d.propose(ctx(100))
    assert d.model.visits[101] == 2
    assert draft.tokens == [token_at(100), token_at(101), STOP]
    assert draft.stop_reason == STOP_TOKEN and passes(draft) == (1, 2, 0)


def test_budget_ends_round_before_window():
    d = failfast(n_max=200, budget=64)
    d.start(ctx(40))
    draft = d.propose(ctx(100))
    assert draft.stop_reason == STOP_BUDGET
    assert draft.tokens == [token_at(p) for p in range(100, 161)]  # up to the last cache-update token
    assert draft.reported_len == 70
    assert passes(draft) == (1, 8, 2)


@pytest.mark.parametrize("mode", ["faithful", "clean"])
def test_budget_ending_on_a_stop_token_reports_stop_token(mode):
    # The last cache update of the budget (block [128, 160)) yields the stop token at 160.
    d = failfast(n_max=200, budget=64, mode=mode)
    d.model.boundary[160] = (STOP, 0.99)
    d.start(ctx(40))
    draft = d.propose(ctx(100))
    assert draft.stop_reason == STOP_TOKEN
    assert draft.tokens == [token_at(p) for p in range(100, 160)] + [STOP]
    assert passes(draft) == (1, 8, 2) and draft.reported_len == 70


def test_most_confident_position_always_commits():
    d = DllmDrafter(ScriptedModel(), spec_len=3, theta=0.9, stop_ids=(STOP,))
    for pos, conf in zip(range(100, 104), (0.5, 0.6, 0.7, 0.8)):
        d.model.conf[pos] = conf
    d.start(ctx(40))
    draft = d.propose(ctx(100))
    # One commit per pass, most confident first: 103, 102, 101, then 100 completes [100, 103).
    assert [c[2] for c in d.model.calls if c[0] == "denoise"] == [(4, 5, 6, 7), (4, 5, 6), (4, 5), (4,)]
    assert draft.stop_reason == STOP_FIXED and passes(draft) == (1, 4, 0)
    assert draft.confidences == approx([0.5, 0.6, 0.7])


def test_fixed_length_spanning_a_block_boundary():
    d = DllmDrafter(ScriptedModel(), spec_len=16, theta=0.9, stop_ids=(STOP,))
    d.start(ctx(40))
    draft = d.propose(ctx(120))  # window [120, 136) crosses 128
    assert len(draft.tokens) == 16 and draft.stop_reason == STOP_FIXED
    assert passes(draft) == (1, 2, 1)
    assert draft.recorded_confidences is None


def test_mask_id_is_never_drafted():
    model = ScriptedModel(mask_token_id=500)
    model.tokens[100] = 500  # the model's favourite is the mask token itself
    d = DllmDrafter(model, spec_len=4, theta=0.05, stop_ids=(STOP,))
    d.start(ctx(40))
    draft = d.propose(ctx(100))
    assert 500 not in draft.tokens and len(draft.tokens) == 4


def test_stop_reasons_come_from_the_shared_vocabulary():
    assert {STOP_FIXED, STOP_LOW_CONFIDENCE, STOP_CAP, STOP_TOKEN, STOP_BUDGET} <= set(STOP_REASONS)


# -- drafter KV reuse (paper §7) ------------------------------------------------------------------------
def short_round(d, context):
    d.model.conf = {len(context) + 5: 0.3}  # fail fast at the first check: no block is completed
    return d.propose(context)


def test_exact_kv_reuse_rule():
    d = failfast()
    d.start(ctx(40))
    assert passes(short_round(d, ctx(100))) == (1, 2, 0)
    assert passes(short_round(d, ctx(107))) == (0, 2, 0)  # same ℓ0 = 96: reused
    r3 = short_round(d, ctx(140))  # ℓ0 = 128 != 96: full re-prefill from 0
    assert passes(r3)[0] == 1 and d.model.calls[-3] == ("write", 0, 128)
    d.model.conf = {}
    long = d.propose(ctx(140))  # completes blocks: the cache now ends at 192
    assert d.model.cache_len == 192 and passes(long)[0] == 0
    r5 = short_round(d, ctx(150))  # accepted prefix fell back below the cache end: re-prefill, never crop
    assert passes(r5)[0] == 1 and ("write", 0, 128) in d.model.calls[-4:]


def test_kv_reuse_off_prefills_every_round():
    d = failfast(reuse_kv=False)
    d.start(ctx(40))
    assert [passes(short_round(d, ctx(n)))[0] for n in (100, 107, 108)] == [1, 1, 1]
    short = failfast(reuse_kv=False)
    short.start(ctx(10))
    assert passes(short_round(short, ctx(20)))[0] == 0  # no complete block, nothing to prefill


def test_crop_policy_extends_instead_of_reprefilling():
    d = failfast(kv_policy="crop")
    d.start(ctx(40))
    d.model.conf = {}
    first = d.propose(ctx(100))  # cache ends at 160
    full = ctx(100) + first.tokens
    r2 = short_round(d, full[:150])  # ℓ0 = 128 < 160: crop, no pass
    assert passes(r2)[0] == 0 and d.model.cache_len == 128 and r2.extra["kv_reused"]
    r3 = short_round(d, (full + ctx(300)[170:])[:200])  # ℓ0 = 192: only [128, 192) is written
    assert passes(r3)[0] == 1 and ("write", 128, 64) in d.model.calls


@pytest.mark.parametrize(
    "policy,boundary_reuse,extra,prefill,stale",
    [
        ("exact", False, [], 1, False),  # faithful, ℓ = 160: fresh prefill over [0, 160) holds the correction
        ("exact", True, [], 0, True),  # clean shortcut, ℓ = 160: stale block and its stale stored logit
        ("exact", False, [11], 0, True),  # ℓ = 161: the authors' exact-length reuse keeps the stale block
        ("crop", False, [], 1, False),  # crop rewrites the mismatching block [128, 160) only
    ],
)
def test_stale_block_after_correction_on_its_last_token(policy, boundary_reuse, extra, prefill, stale):
    # The verifier corrected position 159, the last one of the cached block [128, 160).
    d = failfast(kv_policy=policy, **({"boundary_reuse": True} if boundary_reuse else {}))
    d.start(ctx(40))
    first = d.propose(ctx(100))
    assert d.model.cache_len == 160 and d.model.cached[159] == first.tokens[59]
    context = ctx(100) + first.tokens[:59] + [7] + extra
    draft = d.propose(context)
    assert passes(draft)[0] == prefill
    assert draft.extra["stale_kv"] is stale and draft.extra["kv_reused"] is (prefill == 0 or policy == "crop")
    assert (d.model.cached[159] == 7) is not stale
    if policy == "crop":
        assert ("write", 128, 32) in d.model.calls
    elif prefill:
        assert ("write", 0, 160) in d.model.calls


def test_fixed_length_drafter_prefills_afresh_at_a_block_boundary():
    # The Fast-dLLM baseline shares the authors' prefix code: same rule, same clean-mode shortcut.
    for mode, prefill, first_token in [("faithful", 1, 777), ("clean", 0, token_at(128))]:
        d = DllmDrafter(ScriptedModel(), spec_len=30, theta=0.9, stop_ids=(STOP,), mode=mode)
        d.start(ctx(40))
        first = d.propose(ctx(100))  # window [100, 130) completes block [96, 128): cache ends at 128
        assert d.model.cache_len == 128 and first.stop_reason == STOP_FIXED
        d.model.boundary[128] = (777, 0.6)
        second = d.propose((ctx(100) + first.tokens)[:128])
        assert passes(second)[0] == prefill, mode
        assert second.tokens[0] == first_token, mode
        assert d.describe()["mode"] == mode


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        DllmDrafter(ScriptedModel(), mode="fast")


# -- draft reuse (paper §6, Appendix E) ----------------------------------------------------------------
def test_rejected_overlap_matches_paper_example():
    rejected = [1077, 594, 1477, 400, 69, 4080, 16, 15087, 1447, 41306] + list(range(43))
    proposal = [11, 1077, 594, 1477, 400, 69, 4080, 16, 15087, 1447]
    assert rejected_overlap(rejected, proposal) == (53, 0, 1)
    assert rejected_overlap([1, 2, 3], [4, 5]) == (0, -1, -1)


@pytest.mark.parametrize("reuse", [False, True])
def test_draft_reuse_after_fail_fast(reuse):
    d = failfast(reuse_drafts=reuse)
    d.start(ctx(40))
    d.model.conf = {105: 0.3}
    d.model.tokens = dict(zip(range(100, 110), [40, 41, 42, 50, 51, 52, 53, 54, 55, 56]))
    first = d.propose(ctx(100))
    assert first.tokens == [40, 41, 42, 50, 51, 52, 53, 54, 55, 56]
    d.observe(first, Verdict(accepted_len=2, next_token=3, target_tokens=[40, 41, 3], bonus=False))
    # Round 2 (ℓ = 103) drafts a window whose suffix [51, 52, 53, 54] sits inside last round's
    # rejected tail [50, ..., 56]; it fails fast, so the tail is recycled at no extra pass.
    d.model.visits.clear()
    d.model.conf = {104: 0.3}
    d.model.tokens = dict(zip(range(103, 113), [60, 61, 62, 63, 64, 65, 51, 52, 53, 54]))
    second = d.propose(ctx(100) + [40, 41, 3])
    assert second.stop_reason == STOP_LOW_CONFIDENCE
    assert passes(second) == (0, 3, 0)
    if reuse:
        assert second.tokens == [60, 61, 62, 63, 64, 65, 51, 52, 53, 54, 55, 56]
        assert second.extra["reused_draft"] and second.reported_len is None
        assert len(second.confidences) == 12 and second.confidences[-1] == first.confidences[-1]
    else:
        assert second.tokens == [60, 61, 62, 63, 64, 65, 51, 52, 53, 54]
        assert not second.extra["reused_draft"]


def test_draft_reuse_needs_two_rejected_tokens():
    d = failfast(reuse_drafts=True)
    d.start(ctx(40))
    d.model.conf = {105: 0.3}
    first = d.propose(ctx(100))
    d.observe(first, Verdict(accepted_len=9, next_token=3, target_tokens=[], bonus=False))
    second = short_round(d, ctx(110))
    assert not second.extra["reused_draft"]


# -- losslessness on real (tiny, random) block-diffusion models ----------------------------------------
from failfast_bench.drafters.blockdiff_model import load_block_diffusion_drafter  # noqa: E402
from failfast_bench.engine import generate  # noqa: E402
from failfast_bench.verify import TargetVerifier  # noqa: E402
from helpers_blockdiff import write_fast_dllm_checkpoint, write_project_drafter  # noqa: E402
from tiny_models import EOS, greedy_reference, tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def qwen_pair(tmp_path_factory):
    """A tiny Qwen2 target and a Fast-dLLM-layout drafter initialised from the target's weights (so it
    drafts plausible tokens), with a padded vocabulary holding the mask id, as in the real pairing."""
    target = tiny_model("qwen2", seed=1, vocab=96)
    directory, _ = write_fast_dllm_checkpoint(
        tmp_path_factory.mktemp("fd"), vocab_size=104, hidden=48, mask_token_id=100, init_from=target
    )
    return target, directory


@pytest.fixture(scope="module")
def llama_pair(tmp_path_factory):
    target = tiny_model("llama", seed=2)
    directory = write_project_drafter(tmp_path_factory.mktemp("pj"), target, seed=3)
    return target, directory


PROMPT_LENGTHS = [5, 32, 70]  # no complete block, block-aligned, mid-block


def prompt_of(n: int) -> list[int]:
    return [1] + [(7 * i + 3) % 90 + 3 for i in range(n - 1)]


DRAFTERS = {
    "dllm": lambda m: DllmDrafter(m, spec_len=5, theta=0.9, stop_ids=(EOS,)),
    "dllm_clean": lambda m: DllmDrafter(m, spec_len=5, theta=0.9, mode="clean", stop_ids=(EOS,)),  # boundary shortcut
    "failfast": lambda m: FailFastDrafter(m, tau=0.0, n=10, n_max=60, stop_ids=(EOS,)),
    "failfast_clean_crop": lambda m: FailFastDrafter(m, tau=0.0, mode="clean", kv_policy="crop", stop_ids=(EOS,)),
    "failfast_reuse_off": lambda m: FailFastDrafter(m, tau=0.3, reuse_kv=False, reuse_drafts=True, stop_ids=(EOS,)),
}
CASES = [
    ("qwen_pair", "dllm"),
    ("qwen_pair", "dllm_clean"),
    ("qwen_pair", "failfast"),
    ("llama_pair", "failfast_clean_crop"),
    ("llama_pair", "failfast_reuse_off"),
]


def _lossless_generation(target, drafter, prompt_len: int, max_new_tokens: int):
    prompt = prompt_of(prompt_len)
    gen = generate(TargetVerifier(target), drafter, prompt, max_new_tokens, stop_ids=[EOS])
    ref = greedy_reference(target, prompt, max_new_tokens)
    assert gen.output_tokens[: len(ref)] == ref, (drafter.describe(), prompt_len)
    return gen


def lossless_rounds(target, drafter, prompt_len: int, max_new_tokens: int) -> list:
    """Decode ``prompt_of(prompt_len)`` with ``drafter``; assert the target's greedy output; return the rounds."""
    return _lossless_generation(target, drafter, prompt_len, max_new_tokens).rounds


def lossless_generations(target, drafter, max_new_tokens: int = 32):
    """(prompt length, generation) for every PROMPT_LENGTHS prompt, each checked token for token against the
    target's own greedy output."""
    for n in PROMPT_LENGTHS:
        yield n, _lossless_generation(target, drafter, n, max_new_tokens)


@pytest.mark.parametrize("pair,kind", CASES)
def test_lossless_end_to_end(pair, kind, request):
    target, directory = request.getfixturevalue(pair)
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    drafter = DRAFTERS[kind](model)
    for n, gen in lossless_generations(target, drafter):
        for r in gen.rounds:
            assert model.mask_token_id not in r.draft_tokens
            assert all(0 <= t < 96 for t in r.draft_tokens)
            assert r.drafter_passes == r.passes_prefill + r.passes_denoise + r.passes_cache_update >= 1
            assert r.stop_reason in STOP_REASONS
            assert len(r.confidences) == len(r.draft_tokens)
            assert all(0.0 <= c <= 1.0 and not math.isnan(c) for c in r.confidences)
            if drafter.kv_policy != "crop" and not drafter.boundary_reuse and r.prefix_len % 32 == 0:
                assert r.passes_prefill == 1, (kind, n, r.round)  # block-aligned ℓ: a fresh prefill, never reuse


# -- construction from a run config ---------------------------------------------------------------------
def test_build_from_config(llama_pair, qwen_pair):
    from types import SimpleNamespace

    from failfast_bench.config import ConfigError, DrafterConfig
    from failfast_bench.drafters import dllm

    target, directory = llama_pair
    cfg = SimpleNamespace(target=SimpleNamespace(name="tiny"), drafter=DrafterConfig(name="failfast", theta=0.05, mode="clean"))
    drafter = dllm.build(cfg, str(directory), target, None, [EOS], torch.device("cpu"), torch.float32)
    assert isinstance(drafter, FailFastDrafter) and drafter.mode == "clean" and drafter.kv_policy == "exact"
    assert drafter.boundary_reuse  # clean mode keeps the block-aligned shortcut
    assert drafter.describe()["model"]["layout"] == "project"
    cfg.drafter = DrafterConfig(name="dllm", spec_len=7, reuse_kv=False)
    drafter = dllm.build(cfg, str(directory), target, None, [EOS], torch.device("cpu"), torch.float32)
    assert isinstance(drafter, DllmDrafter) and drafter.spec_len == 7 and drafter.kv_policy == "off"
    assert drafter.mode == "faithful" and not drafter.boundary_reuse
    cfg.drafter = DrafterConfig(name="dllm", mode="clean")
    assert dllm.build(cfg, str(directory), target, None, [EOS], torch.device("cpu"), torch.float32).boundary_reuse
    q_target, q_dir = qwen_pair
    cfg.drafter = DrafterConfig(name="dllm", mask_token_id=101)
    assert dllm.build(cfg, str(q_dir), q_target, None, [EOS], torch.device("cpu"), torch.float32).mask_token_id == 101
    with pytest.raises(ConfigError, match="block size"):
        cfg.drafter = DrafterConfig(name="dllm", block_size=16, sub_block_size=8)
        dllm.build(cfg, str(directory), target, None, [EOS], torch.device("cpu"), torch.float32)
    with pytest.raises(ConfigError, match="not the target"):
        dllm.build(cfg, "target", target, None, [EOS], torch.device("cpu"), torch.float32)
