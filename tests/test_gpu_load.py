"""GPU loading, checked on the CPU: run.dtype=auto, loading straight into the dtype and onto the GPU(s), a
target spread over several GPUs, the one-line out-of-memory refusal, and the engines' tensor-parallel size.
CUDA is mocked where the code only asks torch about devices; weights always stay on the CPU."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from omegaconf import OmegaConf

from failfast_bench import models
from failfast_bench.cli import compose
from failfast_bench.config import ConfigError
from failfast_bench.drafters.ar import ARDrafter
from failfast_bench.engine import generate
from failfast_bench.runner import Runner, config_hash, preflight
from failfast_bench.verify import TargetVerifier

from tiny_models import EOS, save_tiny_target, tiny_model, tiny_run_overrides

ROOT = Path(__file__).resolve().parents[1]
GB = 10**9


def fake_gpus(monkeypatch, count: int, free_bytes: int = 40 * GB) -> None:
    """torch reports ``count`` CUDA devices with ``free_bytes`` free each (no tensor ever goes there)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (free_bytes, 48 * GB))


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_target")
    save_tiny_target(directory, arch="qwen2", layers=4, tie=False)
    return directory


# -- run.dtype=auto ----------------------------------------------------------------------------------
def test_dtype_defaults_to_auto_bf16_on_cuda_float32_on_cpu():
    cfg = compose([])
    assert cfg.run.dtype == "auto" and cfg.drafter.dtype == "auto"
    assert models.pick_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert models.pick_dtype("auto", torch.device("cpu")) is torch.float32
    assert models.pick_dtype("float16", torch.device("cuda")) is torch.float16


def test_auto_hashes_as_the_dtype_it_resolves_to(monkeypatch):
    fake_gpus(monkeypatch, 0)
    assert config_hash(compose(["run.dtype=auto"])) == config_hash(compose(["run.dtype=float32"]))
    assert config_hash(compose(["drafter.dtype=auto"])) == config_hash(compose(["drafter.dtype=float32"]))
    fake_gpus(monkeypatch, 1)
    assert config_hash(compose(["run.dtype=auto"])) == config_hash(compose(["run.dtype=bfloat16"]))
    assert config_hash(compose(["run.dtype=auto", "run.device=cpu"])) == config_hash(compose(["run.dtype=float32", "run.device=cpu"]))


def test_committed_cpu_runs_keep_their_directories_under_auto(monkeypatch):
    """Every committed run, its float32 settings rewritten as auto, still hashes to its own directory."""
    fake_gpus(monkeypatch, 0)
    configs = sorted(ROOT.glob("results/runs*/**/config.yaml"))
    assert configs, "no committed results"
    for path in configs:
        cfg = OmegaConf.load(path)
        for section in (cfg.run, cfg.drafter):
            if section.get("dtype") == "float32":
                section.dtype = "auto"
        assert path.parent.name.endswith("__" + config_hash(cfg)[:10]), path


@pytest.mark.filterwarnings("ignore:.*is not the canonical gsm8k file")
def test_run_records_the_resolved_dtype(target_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FAILFAST_BENCH_CACHE", str(tmp_path / "cache"))  # reference outputs of a throwaway model
    cfg = compose(tiny_run_overrides(tmp_path, target_dir, "drafter=ar", "drafter.model=target"))
    preflight(cfg)
    runner = Runner(cfg)
    runner.run()
    manifest = json.loads((runner.run_dir / "manifest.json").read_text())
    assert manifest["dtype"] == {"run": "float32", "drafter": "float32", "target_weights": "float32"}
    saved = OmegaConf.load(runner.run_dir / "config.yaml")
    assert (saved.run.dtype, saved.drafter.dtype) == ("float32", "float32")
    assert runner.run_dir == Runner(compose(tiny_run_overrides(tmp_path, target_dir, "drafter=ar", "drafter.model=target",
                                                               "run.dtype=float32"))).run_dir


def test_cuda_load_streams_bf16_weights_straight_onto_the_gpu(monkeypatch, target_dir):
    """No float32 host copy: transformers is asked for bf16 tensors placed on the GPU as they are read."""
    fake_gpus(monkeypatch, 1)
    calls = {}

    def fake_from_pretrained(path, **kw):
        calls.update(kw)
        return tiny_model("qwen2")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    device = models.pick_device("auto")
    dtype = models.pick_dtype("auto", device)
    models.load_causal_lm(models.resolve_source(str(target_dir)), dtype, device, gpus=models.chosen_gpus(None))
    assert calls["dtype"] is torch.bfloat16 and calls["device_map"] == {"": 0}


def test_fast_dllm_drafter_is_filled_in_its_dtype_without_a_float32_model(tmp_path, monkeypatch):
    from transformers import Qwen2ForCausalLM

    from failfast_bench.drafters.blockdiff_model import load_fast_dllm_checkpoint
    from helpers_blockdiff import write_fast_dllm_checkpoint

    directory, _ = write_fast_dllm_checkpoint(tmp_path / "fast_dllm", vocab_size=96, hidden=32)
    placed = []
    real_load = Qwen2ForCausalLM.load_state_dict

    def recording_load(self, state, *args, **kw):
        placed.append({p.device.type for p in self.parameters()})
        return real_load(self, state, *args, **kw)

    monkeypatch.setattr(Qwen2ForCausalLM, "load_state_dict", recording_load)
    drafter = load_fast_dllm_checkpoint(directory, dtype=torch.bfloat16, mask_token_id=95)
    assert placed == [{"meta"}]  # nothing allocated before the checkpoint's own tensors arrive
    assert {p.dtype for p in drafter.body.parameters()} == {torch.bfloat16} and drafter.head.weight.device.type == "cpu"


# -- several GPUs ------------------------------------------------------------------------------------
def test_run_gpus_picks_the_visible_devices(monkeypatch):
    fake_gpus(monkeypatch, 3)
    assert models.chosen_gpus(None) == [0, 1, 2] and models.chosen_gpus(2) == [0, 1]
    assert models.run_gpus("cuda:2", None, torch.device("cuda:2")) == [2]
    assert models.run_gpus("cpu", 2, torch.device("cpu")) == []
    with pytest.raises(ConfigError, match=r"run.gpus=4 but 3 CUDA device\(s\) are visible"):
        models.chosen_gpus(4)
    fake_gpus(monkeypatch, 0)
    with pytest.raises(ConfigError, match="run.gpus=2 but 0 CUDA"):
        models.run_gpus("auto", 2, torch.device("cpu"))
    with pytest.raises(ConfigError, match="run.gpus=0 must be >= 1"):
        preflight(compose(["run.gpus=0"]))


def test_device_map_spreads_layers_over_the_chosen_gpus(monkeypatch, target_dir):
    fake_gpus(monkeypatch, 2)
    plan = models.plan_device_map(models.resolve_source(str(target_dir)), torch.float32, [0, 1])
    assert plan["model.embed_tokens"] == 0 and plan["lm_head"] == 1
    layers = {plan[f"model.layers.{i}"] for i in range(4) if f"model.layers.{i}" in plan}
    assert layers == {0, 1}, plan


def test_split_target_verifies_exactly_like_a_single_device_load(monkeypatch, target_dir):
    """The device-mapped load path (two layer groups, here both on the CPU) gives identical verdicts."""
    fake_gpus(monkeypatch, 2)
    monkeypatch.setattr(models, "device_map_value", lambda index: "cpu")
    maps = []
    real_from_pretrained = transformers.AutoModelForCausalLM.from_pretrained

    def recording_from_pretrained(path, **kw):
        maps.append(kw.get("device_map"))
        return real_from_pretrained(path, **kw)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", recording_from_pretrained)
    src = models.resolve_source(str(target_dir))
    split = models.load_causal_lm(src, torch.float32, torch.device("cuda"), gpus=[0, 1])
    assert "model.layers.0" in maps[0] and "lm_head" in maps[0], maps  # layer groups, not one whole-model entry
    # On real GPUs transformers wraps every group in accelerate's device-moving hooks: run through them too.
    from accelerate import dispatch_model

    dispatch_model(split, device_map=maps[0], force_hooks=True)
    assert hasattr(split.model.layers[0], "_hf_hook")
    single = models.load_causal_lm(src, torch.float32, torch.device("cpu"))
    drafter_model = tiny_model("qwen2", seed=3, layers=1, tie=False)
    prompt = [5, 17, 33, 8, 41, 12, 7]
    runs = [
        generate(TargetVerifier(target), ARDrafter(drafter_model, spec_len=4, stop_ids=(EOS,)), prompt, 24, [EOS])
        for target in (split, single)
    ]
    assert runs[0].output_tokens == runs[1].output_tokens
    assert [r.target_tokens for r in runs[0].rounds] == [r.target_tokens for r in runs[1].rounds]
    assert models.input_device(split) == torch.device("cpu")


def test_model_too_large_for_the_gpus_is_one_line_before_loading(monkeypatch, target_dir):
    fake_gpus(monkeypatch, 2, free_bytes=20_000)
    src = models.resolve_source(str(target_dir))
    with pytest.raises(ConfigError) as caught:
        models.plan_device_map(src, torch.float32, [0, 1])
    message = str(caught.value)
    params = sum(p.numel() for p in tiny_model("qwen2", layers=4, tie=False).parameters())
    assert "\n" not in message and f"~{params * 4 / 1e6:.1f} MB in float32" in message
    assert "0.0 MB free on GPUs 0,1" in message and "run.gpus=N; 2 visible" in message and "run.dtype=bfloat16" in message


@pytest.mark.parametrize("failure", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ValueError("The current `device_map` had weights offloaded to the disk. Please provide an `offload_folder` for them."),
])
def test_out_of_memory_while_loading_is_one_line(monkeypatch, target_dir, failure):
    fake_gpus(monkeypatch, 1, free_bytes=3 * GB)

    def fail(path, **kw):
        raise failure

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fail)
    with pytest.raises(ConfigError) as caught:
        models.load_causal_lm(models.resolve_source(str(target_dir)), torch.bfloat16, torch.device("cuda"), gpus=[0])
    message = str(caught.value)
    assert message.startswith(f"out of memory loading {target_dir}: its weights need ~") and "in bfloat16" in message
    assert "3.0 GB free on GPU 0;" in message and "run.gpus=N" in message and "\n" not in message


# -- engine backends ---------------------------------------------------------------------------------
def test_engines_take_tensor_parallel_from_run_gpus_and_refuse_too_few(monkeypatch, capsys):
    from failfast_bench import backends
    from failfast_bench.backends import EngineUnavailable, base, vllm
    from failfast_bench.backends.__main__ import main as backends_main

    head = "org/Qwen2.5-7B-Instruct_EAGLE3"
    monkeypatch.setattr(base.importlib.util, "find_spec", lambda name: object())
    fake_gpus(monkeypatch, 4)
    cfg = compose(["drafter=eagle3", "target=qwen2.5-7b", f"drafter.model={head}"])
    assert backends.settings_from_config(cfg).tensor_parallel == 4  # null: every visible GPU
    fake_gpus(monkeypatch, 1)
    settings = backends.settings_from_config(compose(["drafter=eagle3", "target=qwen2.5-7b", f"drafter.model={head}", "run.gpus=2"]))
    assert settings.tensor_parallel == 2 and vllm.server_command(settings, False)[-9] == "2"
    with pytest.raises(EngineUnavailable, match=r"tensor parallel size 2 \(run.gpus\) needs 2 GPUs but 1 are visible"):
        vllm.require(settings.tensor_parallel)
    assert backends_main(["--engine", "sglang", "target=qwen2.5-7b", f"drafter.model={head}", "run.gpus=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs 2 GPUs but 1 are visible; set run.gpus=1" in err
