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

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "FAILFAST_BENCH_DATA" not in os.environ and SHARED_DATA.exists():
    os.environ["FAILFAST_BENCH_DATA"] = str(SHARED_DATA)


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    import torch

    # Tiny models run fastest on one thread; integration runs set their own (run.threads).
    torch.set_num_threads(1)


def smollm2_available() -> bool:
    from failfast_bench import assets

    try:
        assets.require("smollm2-135m")
        return True
    except assets.AssetMissing:
        return False


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
