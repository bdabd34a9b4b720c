"""Loading targets and drafters from a hub id, a local directory, a GGUF file or the offline asset cache,
and the start-up check that drafter and target share a tokenizer.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from . import assets
from .config import ConfigError

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: ``path`` is a hub id or a directory; ``gguf_file`` names a GGUF inside it."""

    path: str
    gguf_file: Optional[str] = None
    revision: Optional[str] = None
    is_local: bool = True


def resolve_source(model: str, gguf_file: Optional[str] = None, revision: Optional[str] = None) -> ModelSource:
    """Turn a config's ``model`` string into a :class:`ModelSource` without loading anything.

    ``asset:<name>`` → the asset cache (clear error with the fetch command if absent);
    an existing path → local (a ``.gguf`` file path is split into directory + file);
    anything else → a hub id.
    """
    if model.startswith("asset:"):
        path = assets.require(model.split(":", 1)[1])
        return ModelSource(str(path), gguf_file, revision, True)
    expanded = Path(os.path.expanduser(model))
    if expanded.is_file() and expanded.suffix == ".gguf":
        return ModelSource(str(expanded.parent), expanded.name, revision, True)
    if expanded.exists():
        if gguf_file and not (expanded / gguf_file).exists():
            raise ConfigError(f"GGUF file {gguf_file!r} not found in {expanded}")
        return ModelSource(str(expanded), gguf_file, revision, True)
    if model.startswith(("/", "./", "../", "~")):
        raise ConfigError(f"model directory {model} does not exist")
    return ModelSource(model, gguf_file, revision, False)


def _hub_kwargs(src: ModelSource) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if src.gguf_file:
        kw["gguf_file"] = src.gguf_file
    if src.revision:
        kw["revision"] = src.revision
    return kw


def _explain_load_error(src: ModelSource, exc: Exception) -> ConfigError:
    if src.is_local:
        return ConfigError(f"could not load model from {src.path}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    from .hub import explain

    return ConfigError(explain(src.path, exc, "hub model", src.revision))


def check_revision(src: ModelSource, key: str) -> None:
    """``<key>.revision`` pins a hub id; on a local directory it would be silently ignored, so refuse it."""
    if src.revision and src.is_local:
        raise ConfigError(f"{key}.revision={src.revision} pins a hub id, but {key}.model is the local path {src.path}; drop the revision")


def load_config(src: ModelSource, trust_remote_code: bool = False):
    """The model's config only (no weights): what preflight checks a drafter against."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(src.path, trust_remote_code=trust_remote_code, **_hub_kwargs(src))
    except Exception as exc:  # noqa: BLE001 - turned into one clear line
        raise _explain_load_error(src, exc) from exc


# transformers reads a checkpoint's config.json to pick the tokenizer class. For Fast-dLLM checkpoints that
# logs a "model of type `Fast_dLLM_Qwen` ..." warning and a deprecation of the legacy `rope_scaling` field:
# both are about a config the harness never instantiates through transformers (blockdiff_model.py reads it).
_CUSTOM_MODEL_TYPES = ("Fast_dLLM",)


class _DropCustomModelTypeNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(name in message for name in _CUSTOM_MODEL_TYPES)


@contextlib.contextmanager
def _quiet_tokenizer_config_notices():
    """Keep the two notices above off the console while a tokenizer loads; every other message passes."""
    config_logger = logging.getLogger("transformers.configuration_utils")
    notice_filter = _DropCustomModelTypeNotices()
    config_logger.addFilter(notice_filter)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`rope_scaling` is deprecated", category=FutureWarning)
            yield
    finally:
        config_logger.removeFilter(notice_filter)


def load_tokenizer(src: ModelSource, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        with _quiet_tokenizer_config_notices():
            return AutoTokenizer.from_pretrained(src.path, trust_remote_code=trust_remote_code, **_hub_kwargs(src))
    except Exception as exc:  # noqa: BLE001 - turned into one clear line
        raise _explain_load_error(src, exc) from exc


def pick_device(device: str) -> "torch.device":  # noqa: F821
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"run.device={device} but this machine has no CUDA device; use run.device=cpu or auto")
    return torch.device(device)


def resolve_dtype_name(dtype: str, device) -> str:
    """A dtype setting with ``auto`` made concrete: bfloat16 on CUDA (the paper's numerics), float32 on CPU
    (token-exact verification; also the dtype every committed CPU run was hashed with). ``device`` is a
    torch device or a ``run.device`` string (``auto`` = CUDA when available)."""
    if dtype != "auto":
        return dtype
    kind = str(device).split(":")[0]
    if kind == "auto":
        import torch

        kind = "cuda" if torch.cuda.is_available() else "cpu"
    return "bfloat16" if kind == "cuda" else "float32"


def pick_dtype(dtype: str, device: "torch.device"):  # noqa: F821
    import torch

    return getattr(torch, DTYPES[resolve_dtype_name(dtype, device)])


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


# -- GPUs and device maps --------------------------------------------------------------------------
# Share of a GPU's free memory the weights may take: the rest holds the KV cache, activations and (on the
# first GPU) the drafter.
WEIGHTS_SHARE = 0.9


def visible_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def chosen_gpus(requested: Optional[int]) -> list[int]:
    """Indices of the CUDA devices a run may use: the first ``run.gpus`` visible ones, all when null."""
    visible = visible_gpu_count()
    if requested is None:
        return list(range(visible))
    if requested > visible:
        raise ConfigError(
            f"run.gpus={requested} but {visible} CUDA device(s) are visible; set run.gpus={visible or 'null'} "
            f"(null = all visible) or make more GPUs visible (CUDA_VISIBLE_DEVICES)"
        )
    return list(range(requested))


def run_gpus(run_device: str, requested: Optional[int], device) -> list[int]:
    """The GPUs the target is spread over: none on CPU, the one named by ``run.device=cuda:N``, else
    ``run.gpus`` of the visible ones. ``run.gpus`` set with ``run.device=auto`` on a machine without CUDA is
    refused rather than silently run on the CPU."""
    if str(run_device) == "cpu":
        return []
    if device.type != "cuda":
        return chosen_gpus(requested) if requested is not None else []
    if device.index is not None:
        return [device.index]
    return chosen_gpus(requested)


def free_gpu_memory(index: int) -> int:
    import torch

    return int(torch.cuda.mem_get_info(index)[0])


def device_map_value(index: int):
    """What a device map stores for GPU ``index`` (tests map every GPU to the CPU here)."""
    return index


def empty_model(src: ModelSource, dtype, trust_remote_code: bool = False):
    """The model built from its config on the meta device: shapes and dtypes, no memory, no weights read."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(src.path, trust_remote_code=trust_remote_code, **_hub_kwargs(src))
    with init_empty_weights():
        return AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)


def model_bytes(src: ModelSource, dtype, trust_remote_code: bool = False) -> Optional[int]:
    """Parameters x bytes per element of ``dtype`` (from the config alone); None when the config cannot be read."""
    import torch

    try:
        model = empty_model(src, dtype, trust_remote_code)
    except Exception:  # noqa: BLE001 - an estimate only: the caller says "unknown"
        return None
    return sum(p.numel() for p in model.parameters()) * torch.empty((), dtype=dtype).element_size()


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def out_of_memory_error(src: ModelSource, dtype, gpus: Sequence[int], trust_remote_code: bool = False) -> ConfigError:
    """One line: what the weights need, what the chosen GPUs have free, and the settings that help."""
    size = model_bytes(src, dtype, trust_remote_code)
    need = f"~{_size(size)}" if size else "an unknown amount"
    where = f"GPU{'s' if len(gpus) > 1 else ''} {','.join(map(str, gpus))}"
    try:
        free = [free_gpu_memory(i) for i in gpus]
        found = f"{_size(sum(free))} free on {where}" + (f" ({' + '.join(_size(f) for f in free)})" if len(free) > 1 else "")
    except Exception:  # noqa: BLE001 - the message must not fail itself
        found = f"not enough free memory on {where}"
    fixes = [f"spread it over more GPUs (run.gpus=N; {visible_gpu_count()} visible)"]
    if dtype_name(dtype) == "float32":
        fixes.append("load it in half the memory (run.dtype=bfloat16)")
    return ConfigError(
        f"out of memory loading {src.path}: its weights need {need} in {dtype_name(dtype)} but there is {found}; " + " or ".join(fixes)
    )


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OOM, or accelerate/transformers refusing a device map that left weights off the GPUs."""
    import torch

    while exc is not None:
        text = str(exc).lower()
        if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "offloaded to the disk" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def plan_device_map(src: ModelSource, dtype, gpus: Sequence[int], trust_remote_code: bool = False) -> dict[str, Any]:
    """Spread the model's layers over ``gpus`` in balanced contiguous groups: embeddings on the first GPU, the
    LM head on the last, decoder layers never split. Planned on the meta-device model, so a model that does
    not fit is refused before a single weight is read."""
    from accelerate.utils import get_balanced_memory, infer_auto_device_map

    model = empty_model(src, dtype, trust_remote_code)
    no_split = sorted(getattr(model, "_no_split_modules", None) or [])
    budget = {i: int(WEIGHTS_SHARE * free_gpu_memory(i)) for i in gpus}
    balanced = get_balanced_memory(model, max_memory=budget, no_split_module_classes=no_split, dtype=dtype)
    plan = infer_auto_device_map(model, max_memory=balanced, no_split_module_classes=no_split, dtype=dtype)
    if any(where in ("cpu", "disk") for where in plan.values()):
        raise out_of_memory_error(src, dtype, gpus, trust_remote_code)
    return {name: device_map_value(index) for name, index in plan.items()}


def _device_map(src: ModelSource, dtype, device, gpus: Sequence[int], trust_remote_code: bool):
    """None (load on the host, then move) for CPU and GGUF; otherwise a map that streams the weights from the
    checkpoint straight onto the GPU(s), so no full host copy of the model is ever made."""
    if device.type != "cuda" or src.gguf_file:
        return None  # transformers dequantises GGUF on the host anyway
    if len(gpus) > 1:
        return plan_device_map(src, dtype, gpus, trust_remote_code)
    index = device.index if device.index is not None else (gpus[0] if gpus else 0)
    return {"": device_map_value(index)}


def load_causal_lm(src: ModelSource, dtype, device, trust_remote_code: bool = False, gpus: Sequence[int] = ()):
    """Load a causal LM for inference (eval mode, no grad) straight into ``dtype``.

    transformers 5 builds the model on the meta device and fills it from the checkpoint tensor by tensor in
    ``dtype`` (``low_cpu_mem_usage`` is always on), so a bf16 checkpoint never becomes a float32 copy. On
    CUDA a device map puts each tensor on its GPU as it is read; with several ``gpus`` the layers are spread
    over them (:func:`plan_device_map`).
    """
    import torch
    from transformers import AutoModelForCausalLM

    device = torch.device(device)
    kw = _hub_kwargs(src)
    try:
        device_map = _device_map(src, dtype, device, gpus, trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            src.path, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code, **kw
        )
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001
        if is_out_of_memory(exc):
            raise out_of_memory_error(src, dtype, list(gpus) or [device.index or 0], trust_remote_code) from exc
        raise _explain_load_error(src, exc) from exc
    if device_map is None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def input_device(model) -> "torch.device":  # noqa: F821
    """Where a model's inputs go: the device of its input embeddings (the first GPU of a device map)."""
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embed, "weight", None)
    return weight.device if weight is not None else next(model.parameters()).device


def model_devices(model) -> list:
    """Every device holding the model's weights, the input device first (a device-mapped model spans several)."""
    first = input_device(model)
    return [first, *sorted({p.device for p in model.parameters()} - {first}, key=str)]


def device_identity(model) -> str:
    """The hardware a model's numerics depend on: the device type, plus the GPU model(s) on CUDA (bf16
    kernels differ between GPU generations, so an A6000's greedy output is not an H100's)."""
    devices = model_devices(model)
    if devices[0].type != "cuda":
        return devices[0].type
    import torch

    return "cuda:" + "+".join(sorted({torch.cuda.get_device_name(d) for d in devices if d.type == "cuda"}))


def check_shared_tokenizer(target_tok, drafter_tok, drafter_name: str) -> None:
    """Refuse a drafter whose tokenizer maps any of the target's tokens to a different id.

    Vocabulary *sizes* may differ (padded embeddings, an added mask token); ids may not.
    """
    if drafter_tok is None or drafter_tok is target_tok:
        return
    t_vocab = target_tok.get_vocab()
    d_vocab = drafter_tok.get_vocab()
    mismatched = [tok for tok, idx in t_vocab.items() if d_vocab.get(tok) != idx]
    if mismatched:
        example = mismatched[0]
        raise ConfigError(
            f"drafter {drafter_name!r} does not share the target's tokenizer: {len(mismatched)} of {len(t_vocab)} target "
            f"tokens have other ids (e.g. {example!r}: target {t_vocab[example]}, drafter {d_vocab.get(example)}); "
            f"pick a drafter from the target's model family"
        )


def stop_token_ids(tokenizer, model_config, extra: list[int]) -> list[int]:
    ids: list[int] = list(extra)
    for candidate in (getattr(tokenizer, "eos_token_id", None), getattr(model_config, "eos_token_id", None)):
        if isinstance(candidate, int):
            ids.append(candidate)
        elif isinstance(candidate, (list, tuple)):
            ids.extend(int(c) for c in candidate)
    return sorted(set(ids))


def model_identity(model) -> dict[str, Any]:
    cfg = model.config
    return {
        "class": type(model).__name__,
        "name_or_path": getattr(cfg, "_name_or_path", ""),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "num_hidden_layers": getattr(cfg, "num_hidden_layers", None),
        "hidden_size": getattr(cfg, "hidden_size", None),
        "vocab_size": getattr(cfg, "vocab_size", None),
        "devices": [str(d) for d in model_devices(model)],
        # Module -> device when loaded with a device map (CUDA); several GPUs when the target is spread over them.
        "device_map": {k: str(v) for k, v in (getattr(model, "hf_device_map", None) or {}).items()} or None,
    }
