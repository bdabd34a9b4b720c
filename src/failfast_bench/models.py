"""Loading targets and drafters from a hub id, a local directory, a GGUF file or the offline asset cache,
and the start-up check that drafter and target share a tokenizer.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import assets
from .config import ConfigError

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@dataclass
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


def load_tokenizer(src: ModelSource, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
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


def pick_dtype(dtype: str, device: "torch.device"):  # noqa: F821
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, DTYPES[dtype])


def load_causal_lm(src: ModelSource, dtype, device, trust_remote_code: bool = False):
    """Load a causal LM for inference (eval mode, no grad)."""
    from transformers import AutoModelForCausalLM

    kw = _hub_kwargs(src)
    try:
        model = AutoModelForCausalLM.from_pretrained(src.path, dtype=dtype, trust_remote_code=trust_remote_code, **kw)
    except Exception as exc:  # noqa: BLE001
        raise _explain_load_error(src, exc) from exc
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


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
    }
