"""drafter.draft_vocab: a block-diffusion drafter proposing only its draft vocabulary's tokens stays lossless,
never proposes anything else, and the option leaves every existing run hash untouched when off."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from failfast_bench.config import ConfigError, DrafterConfig, validate
from failfast_bench.drafters import config_name
from failfast_bench.drafters import dllm as dllm_module
from failfast_bench.drafters.blockdiff_model import load_block_diffusion_drafter
from failfast_bench.drafters.dllm import FailFastDrafter
from failfast_bench.drafters.draft_vocab import VOCAB_FILE, read_draft_vocab, write_draft_vocab
from failfast_bench.engine import first_divergence, generate
from failfast_bench.verify import TargetVerifier

from helpers_blockdiff import write_project_drafter
from tiny_models import EOS, greedy_reference, tiny_model

PROMPT = [1] + [(7 * i + 3) % 90 + 3 for i in range(40)]
VOCAB = [t for t in range(0, 96, 2)]  # every even id (EOS = 2 included)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    target = tiny_model("llama", seed=2)
    directory = write_project_drafter(tmp_path_factory.mktemp("pj"), target, seed=3)
    return target, directory


def test_restricted_drafter_is_lossless_and_stays_in_its_vocabulary(pair):
    target, directory = pair
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    full_head = model.head
    model.restrict_vocab(VOCAB)
    assert model.head.weight.shape == (len(VOCAB), full_head.weight.shape[1])
    torch.testing.assert_close(model.head.weight, full_head.weight[VOCAB])
    assert target.get_output_embeddings() is full_head  # the target's head is untouched
    assert model.describe()["draft_vocab"] == len(VOCAB) and model.twin().vocab_ids is model.vocab_ids

    drafter = FailFastDrafter(model, theta=0.05, tau=0.3, n=4, n_max=12, stop_ids=(EOS,))
    gen = generate(TargetVerifier(target), drafter, PROMPT, 48, stop_ids=[EOS])
    ref = greedy_reference(target, PROMPT, 48)
    assert first_divergence(gen.output_tokens, ref) is None and gen.output_tokens[: len(ref)] == ref
    drafted = [t for r in gen.rounds for t in r.draft_tokens]
    assert drafted and set(drafted) <= set(VOCAB)
    for r in gen.rounds:  # confidences are probabilities over the draft vocabulary
        assert all(0.0 < c <= 1.0 for c in r.confidences)


def test_restrict_refuses_the_mask_id_and_ids_past_the_vocabulary(pair):
    target, directory = pair
    model = load_block_diffusion_drafter(str(directory), target_model=target)
    with pytest.raises(ConfigError, match="may not propose"):
        model.restrict_vocab([3, model.mask_token_id])
    with pytest.raises(ConfigError, match="may not propose"):
        model.restrict_vocab([3, 96])


def test_build_reads_the_drafters_vocabulary_file(pair, tmp_path):
    target, directory = pair
    cfg = SimpleNamespace(target=SimpleNamespace(name="tiny"), drafter=DrafterConfig(name="failfast", theta=0.05, draft_vocab=True))
    missing = tmp_path / "copy"
    missing.mkdir()
    for f in directory.iterdir():
        (missing / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ConfigError, match=f"{VOCAB_FILE} does not exist"):
        dllm_module.build(cfg, str(missing), target, None, [EOS], torch.device("cpu"), torch.float32)
    from failfast_bench.cli import compose
    from failfast_bench.drafters import resolve_drafter_model

    with pytest.raises(ConfigError, match=f"{VOCAB_FILE} does not exist"):  # refused before any model loads
        resolve_drafter_model(compose(["drafter=failfast", "drafter.draft_vocab=true", f"drafter.model={missing}"]))
    write_draft_vocab(missing, [5, 9, 11], coverage=0.5, source="test")
    assert read_draft_vocab(missing) == [5, 9, 11]
    drafter = dllm_module.build(cfg, str(missing), target, None, [EOS], torch.device("cpu"), torch.float32)
    assert drafter.model.vocab_ids.tolist() == [EOS, 5, 9, 11]  # stop ids always proposable
    (missing / VOCAB_FILE).write_text('{"token_ids": []}')
    with pytest.raises(ConfigError, match="lists no token ids"):
        read_draft_vocab(missing)


def test_config_name_validation_and_hash_compatibility(tmp_path):
    from failfast_bench.cli import compose
    from failfast_bench.runner import config_hash

    assert config_name(compose(["drafter=failfast", "drafter.draft_vocab=true"]).drafter) == "dllm_0.05_df_0.45_60_10_dv"
    assert config_name(compose(["drafter=dllm", "drafter.draft_vocab=true"]).drafter) == "dllm_0.9_sf_8_dv"
    with pytest.raises(ConfigError, match="draft_vocab=true applies to dllm and failfast, not ar"):
        validate(compose(["drafter=ar", "drafter.draft_vocab=true"]))
    off = compose(["drafter=failfast"])
    on = compose(["drafter=failfast", "drafter.draft_vocab=true"])
    assert config_hash(off) != config_hash(on)
    # The default leaves the hash as it was before the option existed (committed runs stay "complete").
    from omegaconf import OmegaConf

    legacy = OmegaConf.to_container(off, resolve=True)
    del legacy["drafter"]["draft_vocab"]
    assert config_hash(OmegaConf.create(legacy)) == config_hash(off)
