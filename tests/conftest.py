from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Data come only from what the caller set ($FAILFAST_BENCH_DATA), as for a user: tests that need the full
# GSM8K split skip with a reason without it (.ci/run runs the suite both ways).


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    import torch

    # Tiny models run fastest on one thread; integration runs set their own (run.threads).
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of hundreds of tiny forwards (two threads on a shared 2-core machine mostly
    wait on each other); restored afterwards, since integration runs set their own (run.threads)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def smollm2_available() -> bool:
    from failfast_bench import assets

    try:
        assets.require("smollm2-135m")
        return True
    except assets.AssetMissing:
        return False


FULL_DATA_FIXTURES = ("full_gsm8k_test", "full_gsm8k_train")


def _full_gsm8k(split: str) -> Path:
    root = os.environ.get("FAILFAST_BENCH_DATA")
    path = Path(root) / "gsm8k" / f"{split}.jsonl" if root else None
    if path is None or not path.is_file():
        pytest.skip(f"needs the full GSM8K {split} split: set $FAILFAST_BENCH_DATA to a directory holding gsm8k/{split}.jsonl")
    return path


@pytest.fixture
def full_gsm8k_test() -> Path:
    return _full_gsm8k("test")


@pytest.fixture
def full_gsm8k_train() -> Path:
    return _full_gsm8k("train")


def pytest_collection_modifyitems(config, items):
    # One marker for the tests .ci/run's second pass runs with the full split (`-m needs_full_data`).
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in FULL_DATA_FIXTURES):
            item.add_marker(pytest.mark.needs_full_data)


def resolved_question_ids(dataset_cfg) -> list[str]:
    """The ids the data layer picks for a dataset config here (the full split or the packaged sample)."""
    from failfast_bench import data

    return [q.id for q in data.load_questions(dataset_cfg, offline_default=True)[0]]


requires_smollm2 = pytest.mark.skipif(not smollm2_available(), reason="SmolLM2 asset missing: python -m failfast_bench.assets fetch smollm2-135m")


@pytest.fixture(scope="session")
def fake_hub(tmp_path_factory):
    """A fake offline Hugging Face Hub (tests/fake_hub.py): tiny models under the real repo ids, built once."""
    import fake_hub as fh

    return fh.build(tmp_path_factory.mktemp("fake_hf_home"))


@pytest.fixture
def hub_env(fake_hub, monkeypatch):
    """Point this process at the fake hub, offline (huggingface_hub reads its cache path at import time)."""
    from huggingface_hub import constants

    from failfast_bench import hub

    for key, value in fake_hub.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HOME", str(fake_hub.home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(fake_hub.cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.clear_cache()
    yield fake_hub
    hub.clear_cache()
