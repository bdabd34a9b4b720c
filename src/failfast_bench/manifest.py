"""The environment fingerprint written with every run: what ran, where, with which versions."""
from __future__ import annotations

import dataclasses
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

PACKAGES = ("torch", "transformers", "tokenizers", "hydra-core", "omegaconf", "pandas", "pyarrow", "numpy", "datasets", "wandb", "failfast-bench")
REPO_ROOT = Path(__file__).resolve().parents[2]


def git_sha() -> str:
    # An installed wheel has no repository of its own; a git repository above site-packages is not this code.
    if not (REPO_ROOT / "pyproject.toml").is_file() or not (REPO_ROOT / "src" / "failfast_bench").is_dir():
        return "installed"
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "") if sha else "unknown"
    except Exception:  # noqa: BLE001
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_facts() -> dict[str, Any]:
    import os

    import torch

    facts: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        facts["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        facts["cuda"] = torch.version.cuda
    return facts


def build_manifest(cfg, source=None, target=None, drafter=None, run_hash: str = "") -> dict[str, Any]:
    return {
        "git_sha": git_sha(),
        "config_hash": run_hash,
        "packages": package_versions(),
        "hardware": hardware_facts(),
        "dataset_source": dataclasses.asdict(source) if dataclasses.is_dataclass(source) else source,
        "hub": hub_records(cfg, source),
        "drafter": drafter.describe() if drafter is not None and hasattr(drafter, "describe") else None,
        "replay": bool(OmegaConf.select(cfg, "run.replay", default=False)),
    }


def hub_records(cfg, source=None) -> dict[str, Any]:
    """The resolved commit of every hub model and HF dataset the run read (local paths: their path)."""
    from . import hub, models
    from .config import ConfigError
    from .drafters import drafter_revision, resolve_drafter_model

    t_src = models.resolve_source(cfg.target.model, cfg.target.gguf_file, cfg.target.revision)
    out: dict[str, Any] = {"target": hub.record(t_src.path, t_src.revision, local=t_src.is_local)}
    try:
        d_model = resolve_drafter_model(cfg)
    except ConfigError:
        d_model = None
    if d_model not in (None, "target"):
        d_src = models.resolve_source(d_model, revision=drafter_revision(cfg.drafter))
        out["drafter"] = hub.record(d_src.path, d_src.revision, local=d_src.is_local)
    if getattr(source, "kind", None) == "hf":
        out["dataset"] = dataset_record(cfg.dataset, getattr(source, "revision", None))
    return out


def dataset_record(ds, loaded_commit: Optional[str] = None) -> dict[str, Any]:
    """Repo, config, requested revision and resolved commit of a dataset read through ``datasets``: the commit of
    the copy the data layer read (``loaded_commit``, from its cache path) when known, else what the revision
    resolves to now."""
    from . import hub
    from .data import HF_SOURCES

    repo, config, _ = HF_SOURCES[ds.name]
    repo = getattr(ds, "hf_id", None) or repo
    config = getattr(ds, "hf_config", None) or config
    revision = getattr(ds, "revision", None)
    commit = loaded_commit or hub.resolve_commit(repo, revision, "dataset") or hub.datasets_cache_commit(repo, config)
    return {"repo": repo, "config": config, "revision": revision, "commit": commit}
