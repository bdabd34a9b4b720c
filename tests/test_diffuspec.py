"""DiffuSpec on the block-diffusion engine: the n-gram proxy, causal-consistency path search (CPS), the
adaptive draft length (ADL), their configuration, and losslessness at T = 0 (live and replayed) on tiny models."""
from __future__ import annotations

import math

import pytest
import torch

from failfast_bench.drafters.base import STOP_FIXED, STOP_REASONS, Draft, Verdict
from failfast_bench.drafters.context_ngram import ContextNgram
from failfast_bench.drafters.dllm import BlockDiffusionDrafter, DllmDrafter
from failfast_bench.drafters.length_policies import AdaptiveLength
from failfast_bench.drafters.length_policies.adaptive import generated_length
from failfast_bench.drafters.path_search import CausalPathSearch, candidates
from test_dllm import STOP, V, ScriptedModel, ctx, llama_pair, qwen_pair, token_at  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")


def verdict(accepted: int) -> Verdict:
    return Verdict(accepted_len=accepted, next_token=1, target_tokens=[], bonus=False)


# -- the causal proxy -----------------------------------------------------------------------------------
def test_context_ngram_is_a_distribution_that_learns_the_context():
    lm = ContextNgram(vocab_size=8, order=3)
    lm.extend([1, 2, 3, 1, 2, 3, 1, 2])
    for history in ([], [1], [1, 2], [5, 6], [7, 1, 2]):
        assert sum(math.exp(lm.logprob(history, w)) for w in range(8)) == pytest.approx(1.0)
    assert lm.logprob([1, 2], 3) > lm.logprob([1, 2], 4)  # seen twice after (1, 2)
    assert lm.logprob([7, 1, 2], 3) == lm.logprob([1, 2], 3)  # a trigram reads the last two tokens only
    lm.extend([1, 2, 3, 1, 2, 3, 1, 2, 4])  # extends: counts only the new token
    assert lm._total[()] == 9
    lm.extend([4, 4])  # not an extension (another question): counted afresh
    assert lm._total[()] == 2 and lm.logprob([], 4) > lm.logprob([], 1)
    with pytest.raises(ValueError):
        ContextNgram(vocab_size=0)


# -- the lattice and the search -------------------------------------------------------------------------
def test_candidates_stop_at_the_mass_and_the_cap_and_skip_refused_ids():
    probs = torch.tensor([0.05, 0.5, 0.3, 0.1, 0.05])
    assert candidates(probs, top_m=15, mass=0.8) == [(1, 0.5), (2, pytest.approx(0.3))]
    assert [t for t, _ in candidates(probs, top_m=1, mass=0.8)] == [1]
    assert [t for t, _ in candidates(probs, top_m=15, mass=0.99)] == [1, 2, 3, 0, 4]
    refused = probs.clone()
    refused[1] = -1.0  # the mask id, say
    assert [t for t, _ in candidates(refused, top_m=15, mass=0.8)] == [2, 3, 0, 4]
    assert [t for t, _ in candidates(torch.full((5,), 0.2), top_m=2, mass=0.8)] == [0, 1]  # ties in id order, like argmax
    ids = torch.tensor([10, 11, 12, 13, 14])  # a draft vocabulary: rows are these token ids
    assert [t for t, _ in candidates(probs, top_m=15, mass=0.8, ids=ids)] == [11, 12]


def test_search_without_the_proxy_is_the_argmax_and_the_proxy_can_overrule_it():
    lm = ContextNgram(vocab_size=50, order=3)
    lm.extend([7, 8, 9] * 6)  # 9 always follows (7, 8)
    columns = [[(8, 0.6), (3, 0.4)], [(4, 0.55), (9, 0.45)]]
    argmax = CausalPathSearch(lm, beam=3, weight=1.0)
    assert argmax.search([1, 7], columns) == [8, 4]
    cps = CausalPathSearch(lm, beam=3, weight=0.5)
    assert cps.search([1, 7], columns) == [8, 9]
    # A committed column is given: it scores only through the proxy, and it steers the choice before it.
    assert cps.search([1], [[(5, 0.5), (7, 0.45)], 8, [(9, 0.6), (2, 0.4)]]) == [7, 8, 9]
    with pytest.raises(ValueError):
        CausalPathSearch(lm, beam=0)


# -- the adaptive draft length --------------------------------------------------------------------------
def test_generated_length_stops_before_the_first_stop_token():
    assert generated_length([5, 6, 7], frozenset({2}), 30) == 3
    assert generated_length([5, 2, 7], frozenset({2}), 30) == 1
    assert generated_length([5, 6, 7, 8], frozenset(), 2) == 2


def test_adaptive_rule_by_hand():
    p = AdaptiveLength(k_min=20, k_max=30, delta=10, rho=0.5, stop_ids=(STOP,))
    assert p.initial_window() == 30  # k_1 = k_max, both averages 0
    steps = [
        ([1] * 30, 30, 15.0, 15.0, 25),  # Ā = Ḡ = 15: grows by δ -> 15 + 10
        ([1] * 25, 5, 20.0, 10.0, 20),  # Ḡ = 20 > Ā: no growth -> 20
        ([1] * 3 + [STOP], 3, 11.5, 6.5, 20),  # a stop token after 3 tokens: Ḡ = 11.5 -> floor 11, clipped to k_min
    ]
    for tokens, accepted, gen, acc, k in steps:
        p.observe(Draft(tokens=tokens), verdict(accepted))
        assert (p.generated, p.accepted, p.k) == (gen, acc, k)
    p.start()  # a new question forgets everything
    assert (p.generated, p.accepted, p.initial_window()) == (0.0, 0.0, 30)
    with pytest.raises(ValueError):
        AdaptiveLength(k_min=10, k_max=5)


def test_adaptive_drafter_drafts_exactly_the_controlled_length():
    d = BlockDiffusionDrafter(ScriptedModel(), theta=0.05, policy=AdaptiveLength(k_min=4, k_max=12, delta=3), stop_ids=(STOP,))
    d.start(ctx(40))
    lengths = []
    context = ctx(100)
    for accepted in (12, 1, 1, 6):
        draft = d.propose(context)
        lengths.append(len(draft.tokens))
        assert draft.stop_reason == STOP_FIXED and draft.tokens == [token_at(p) for p in range(len(context), len(context) + len(draft.tokens))]
        d.observe(draft, verdict(accepted))
        context = ctx(len(context) + accepted + 1)
    # k: 12; Ḡ 6, Ā 6 -> 6+3 = 9; Ḡ 7.5, Ā 3.5 -> 7; Ḡ 7.25, Ā 2.25 -> 7
    assert lengths == [12, 9, 7, 7]
    assert d.describe()["policy"] == "adaptive" and "cps" not in d.describe()


# -- CPS inside the drafter -----------------------------------------------------------------------------
class TwoWayModel(ScriptedModel):
    """Every masked position proposes its usual token at 0.5 and ``alt[pos]`` at 0.45 (a two-candidate column)."""

    def __init__(self, alt):
        super().__init__()
        self.alt = alt

    def denoise(self, block_tokens, rows):
        start = self.length
        out = []
        for r in rows:
            pos = start + r
            probs = torch.full((V,), 0.05 / (V - 2))
            probs[token_at(pos)] = 0.5
            probs[self.alt.get(pos, 0)] = 0.45
            out.append(probs.log())
        return torch.stack(out)


def cps_drafter(model, weight=0.5, spec_len=8, theta=0.05, **kw):
    search = CausalPathSearch(ContextNgram(V), beam=3, weight=weight)
    return DllmDrafter(model, spec_len=spec_len, theta=theta, stop_ids=(STOP,), path_search=search, **kw)


def test_path_search_picks_the_causally_consistent_candidate():
    context = ctx(100)
    # The context repeats (a, b, c): the proxy expects c after (a, b); the drafter's first choice at 101 is not c.
    a, b, c = 701, 702, 703
    context[-2:] = [a, b]
    context[40:70] = [a, b, c] * 10
    alt = {100: c}
    plain = DllmDrafter(TwoWayModel(alt), spec_len=8, theta=0.05, stop_ids=(STOP,))
    plain.start(context[:40])
    assert plain.propose(context).tokens[0] == token_at(100)
    d = cps_drafter(TwoWayModel(alt))
    d.start(context[:40])
    draft = d.propose(context)
    assert draft.tokens[0] == c and draft.confidences[0] == pytest.approx(0.45, abs=1e-5)
    assert draft.tokens[1:] == [token_at(p) for p in range(101, 108)]
    info = d.describe()
    assert info["cps"] and info["cps_beam"] == 3 and info["cps_proxy"]["proxy"] == "context_ngram"


def test_path_search_without_proxy_weight_drafts_like_the_argmax():
    conf = {p: 0.3 + 0.6 * ((p * 7) % 5) / 5 for p in range(100, 200)}  # several passes per sub-block
    plain = DllmDrafter(ScriptedModel(), spec_len=20, theta=0.5, stop_ids=(STOP,))
    searched = cps_drafter(ScriptedModel(), weight=1.0, spec_len=20, theta=0.5)
    for d in (plain, searched):
        d.model.conf = dict(conf)
        d.start(ctx(40))
    one, two = plain.propose(ctx(100)), searched.propose(ctx(100))
    assert one.passes["denoise"] > 3  # positions below θ waited for later passes
    assert (one.tokens, one.confidences, one.passes) == (two.tokens, two.confidences, two.passes)
    assert plain.model.calls == searched.model.calls


def test_path_search_refuses_sampling():
    from failfast_bench.sampling import Sampling

    with pytest.raises(ValueError, match="temperature 0"):
        cps_drafter(ScriptedModel(), sampling=Sampling(temperature=1.0))


# -- configuration --------------------------------------------------------------------------------------
def test_config_variants_names_and_hashes(tmp_path):
    from failfast_bench.cli import compose
    from failfast_bench.config import ConfigError, validate
    from failfast_bench.drafters import config_name
    from failfast_bench.runner import config_hash

    def cfg(*overrides):
        c = compose(list(overrides) + [f"run.output_dir={tmp_path}"])
        validate(c)
        return c

    names = {
        ("drafter=diffuspec",): "dllm_0.05_adl_20_30_10_cps",
        ("drafter=diffuspec", "drafter.cps=false"): "dllm_0.05_adl_20_30_10",
        ("drafter=diffuspec", "drafter.policy=fixed"): "dllm_0.05_sf_8_cps",
        ("drafter=dllm", "drafter.cps=true"): "dllm_0.9_sf_8_cps",
        ("drafter=failfast", "drafter.cps=true"): "dllm_0.05_df_0.45_60_10_cps",
    }
    hashes = set()
    for overrides, name in names.items():
        c = cfg(*overrides)
        assert config_name(c.drafter) == name
        hashes.add(config_hash(c))
    assert len(hashes) == len(names)
    # The new keys at their defaults leave every earlier config's hash as it was; policy=fixed is spec_len.
    assert config_hash(cfg("drafter=dllm")) == config_hash(cfg("drafter=dllm", "drafter.policy=fixed")) == config_hash(
        cfg("drafter=dllm", "drafter.cps=false", "drafter.adl_k_max=30"))
    assert config_hash(cfg("drafter=diffuspec")) != config_hash(cfg("drafter=diffuspec", "drafter.adl_delta=5"))
    refused = {
        ("drafter=diffuspec", "run.temperature=1.0"): "cps=true needs run.temperature=0",
        ("drafter=failfast", "drafter.policy=adaptive"): "applies to drafter=dllm",
        ("drafter=diffuspec", "drafter.adl_k_max=100"): "exceeds drafter.budget",
        ("drafter=diffuspec", "drafter.adl_k_min=31"): "adl_k_min <= adl_k_max",
        ("drafter=diffuspec", "drafter.adl_rho=0"): "adl_rho",
        ("drafter=diffuspec", "drafter.cps_mass=0"): "cps_mass",
        ("drafter=diffuspec", "drafter.cps_weight=1.5"): "cps_weight",
        ("drafter=diffuspec", "drafter.cps_beam=0"): "cps_beam",
        ("drafter=ar", "drafter.cps=true"): "applies to dllm and failfast",
        ("drafter=diffuspec", "drafter.policy=greedy"): "drafter.policy='greedy'",
    }
    for overrides, message in refused.items():
        with pytest.raises(ConfigError, match=message):
            cfg(*overrides)
    # ADL alone is valid at T > 0 (it reads finished rounds only).
    cfg("drafter=diffuspec", "drafter.cps=false", "run.temperature=1.0")


def test_report_ranks_diffuspec_runs_apart_from_the_methods_they_modify():
    from failfast_bench.report import _family

    assert _family("dllm", {"policy": "adaptive", "cps": True}, False) == "diffuspec"
    assert _family("dllm", {"policy": None, "cps": True}, False) == "diffuspec"
    assert _family("dllm", {"policy": "adaptive"}, False) == "diffuspec"
    assert _family("dllm", {"policy": None}, False) == "dllm"  # committed runs have no cps key
    assert _family("failfast", {"cps": True}, False) == "failfast_cps"
    assert _family("dllm", {"policy": "cost_aware"}, True) == "dllm_cost"


# -- losslessness at T = 0 on tiny random models, live and replayed -------------------------------------
VARIANTS = {
    "both": dict(policy="adaptive", cps=True),
    "cps": dict(policy=None, cps=True),
    "adl": dict(policy="adaptive", cps=False),
    "cps_crop_clean": dict(policy="adaptive", cps=True, mode="clean", kv_policy="crop"),
}


def build_variant(directory, target, name):
    """The variant as a run config builds it (drafters/dllm.py ``build``), with small ADL bounds for short runs."""
    from types import SimpleNamespace

    from failfast_bench.config import DrafterConfig
    from failfast_bench.drafters import dllm
    from tiny_models import EOS

    d = DrafterConfig(name="dllm", theta=0.05, spec_len=6, adl_k_min=4, adl_k_max=16, adl_delta=4, **VARIANTS[name])
    cfg = SimpleNamespace(target=SimpleNamespace(name="tiny"), drafter=d)
    return dllm.build(cfg, str(directory), target, None, [EOS], torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("pair", ["qwen_pair", "llama_pair"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_is_lossless_at_t0(pair, variant, request):
    from test_dllm import lossless_generations

    target, directory = request.getfixturevalue(pair)
    drafter = build_variant(directory, target, variant)
    model = drafter.model
    assert (drafter.path_search is not None) == VARIANTS[variant]["cps"]
    assert drafter.describe().get("policy") == ("adaptive" if VARIANTS[variant]["policy"] else None)
    for _, gen in lossless_generations(target, drafter, 40):
        for r in gen.rounds:
            assert model.mask_token_id not in r.draft_tokens and r.stop_reason in STOP_REASONS
            assert len(r.confidences) == len(r.draft_tokens) and all(0.0 < c <= 1.0 for c in r.confidences)
            assert len(r.draft_tokens) <= (16 if VARIANTS[variant]["policy"] else 6)


@pytest.mark.parametrize("variant", ["both", "cps"])
def test_replayed_rounds_equal_live_rounds(llama_pair, variant):
    from test_replay import comparable, live_and_replayed
    from tiny_models import EOS

    target, directory = llama_pair

    def factory():
        return build_variant(directory, target, variant)

    prompt = [1] + [(7 * i + 3) % 90 + 3 for i in range(20)]
    live, replayed, _ = live_and_replayed(target, factory, prompt, 40, [EOS])
    assert replayed.output_tokens == live.output_tokens
    assert [comparable(r) for r in replayed.rounds] == [comparable(r) for r in live.rounds]
