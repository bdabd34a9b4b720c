"""The vanilla reference: measured side by side, or reused from an identical earlier measurement."""
from __future__ import annotations

import pytest
import torch

from failfast_bench import vanilla
from failfast_bench.cli import compose
from failfast_bench.config import ConfigError, validate
from failfast_bench.runner import config_hash


@pytest.mark.parametrize("value, device, expected", [
    ("auto", "cuda", "reuse"), ("auto", "cpu", "always"), ("always", "cuda", "always"), ("reuse", "cpu", "reuse"),
    ("never", "cuda", "never"), ("True", "cpu", "always"), ("false", "cuda", "never"), (True, "cuda", "always"),
])
def test_policy(value, device, expected):
    assert vanilla.policy(value, device) == expected


def test_bad_policy_is_refused_before_anything_loads(tmp_path):
    cfg = compose([f"run.output_dir={tmp_path}", "run.measure_vanilla=sometimes"])
    with pytest.raises(ConfigError, match="run.measure_vanilla='sometimes'; valid: auto, always, reuse, never"):
        validate(cfg)


def test_reuse_does_not_change_the_run_hash(tmp_path):
    """Committed runs were hashed with measure_vanilla=true: auto/always/reuse keep their directories."""
    hashes = {v: config_hash(compose([f"run.output_dir={tmp_path}", f"run.measure_vanilla={v}"])) for v in ("auto", "always", "reuse", "true", "never")}
    assert hashes["auto"] == hashes["always"] == hashes["reuse"] == hashes["true"] != hashes["never"]


def test_store_round_trip_and_manifest(tmp_path):
    key, setup = vanilla.setup_key("target123", 64, torch.device("cpu"))
    assert setup["device"]["type"] == "cpu" and setup["torch"] == torch.__version__
    assert vanilla.setup_key("target123", 65, torch.device("cpu"))[0] != key  # another length, another measurement
    store = vanilla.VanillaStore(key, setup, root=tmp_path)
    assert store.get("q0", [1, 2, 3]) is None
    store.put("q0", [1, 2, 3], [4, 5], 1.25, "runs/a")
    again = vanilla.VanillaStore(key, setup, root=tmp_path)
    found = again.get("q0", [1, 2, 3])
    assert (found.output_tokens, found.wall_seconds, found.measured_by) == ([4, 5], 1.25, "runs/a")
    assert again.get("q0", [1, 2, 4]) is None  # another prompt is another question
    manifest = again.manifest("reuse")
    assert manifest["reused_questions"] == 1 and manifest["measured_questions"] == 0
    assert manifest["reused_from"][0].startswith("runs/a (") and manifest["setup_key"] == key
