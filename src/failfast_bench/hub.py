"""Hugging Face Hub facts a run depends on: which commit a hub id resolves to, and why a hub load failed.

Commits are resolved the way the loaders will resolve them: by asking the hub unless ``HF_HUB_OFFLINE`` is
set, and from the cache's ``refs/<revision>`` file otherwise (or when the hub cannot be reached). So the commit
recorded in a manifest or hashed into a run directory is the one whose files the run loads.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Optional

COMMIT = re.compile(r"[0-9a-f]{40}")
_SNAPSHOT = re.compile(r"[\\/]snapshots[\\/]([0-9a-f]{40})(?:[\\/]|$)")


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_commit(repo_id: str, revision: Optional[str] = None, repo_type: str = "model",
                   local_only: Optional[bool] = None) -> Optional[str]:
    """The commit ``revision`` (default: the main branch) of ``repo_id`` points to; None when unknown.

    ``local_only`` (default: the process's offline mode) answers from the cache's refs without asking the hub.
    Asked once per process for each (repo, revision, cache, offline): hashing and listing a sweep's jobs call
    this for every job.
    """
    return _resolve(repo_id, revision, repo_type, str(cache_dir()), offline() if local_only is None else local_only)


@functools.lru_cache(maxsize=256)
def _resolve(repo_id: str, revision: Optional[str], repo_type: str, cache: str, local_only: bool) -> Optional[str]:
    if revision and COMMIT.fullmatch(revision):
        return revision  # already pinned to a commit
    from huggingface_hub import HfApi

    try:
        resolved = HfApi().resolve_revision(repo_id, repo_type=repo_type, revision=revision, cache_dir=cache, local_files_only=local_only)
    except Exception:  # noqa: BLE001 - not cached and hub unreachable, unknown repo or revision: the load will say why
        return None
    return str(resolved.resolved)


def clear_cache() -> None:
    """Forget resolved commits (after a download or a test that rewrites a cache)."""
    _resolve.cache_clear()


def snapshot_commit(path: Any) -> Optional[str]:
    """The commit of an HF cache snapshot path (``.../snapshots/<commit>/...``), else None."""
    found = _SNAPSHOT.search(str(path))
    return found.group(1) if found else None


def record(model: Optional[str], revision: Optional[str] = None, *, local: bool, repo_type: str = "model") -> Optional[dict]:
    """What the manifest says about one model or dataset: the id, the requested revision, the resolved commit."""
    if model is None:
        return None
    if local:
        return {"path": str(model), "commit": snapshot_commit(model)}
    return {"repo": model, "revision": revision, "commit": resolve_commit(model, revision, repo_type)}


def datasets_cache_commit(repo_id: str, config: Optional[str] = None) -> Optional[str]:
    """The commit of the newest copy of ``repo_id`` prepared in the ``datasets`` cache, else None.

    Offline, ``datasets`` reads that copy; its directory ``<org>___<name>/<config>/<version>/<commit>`` is
    named after the hub commit it was built from.
    """
    try:
        from datasets import config as datasets_config

        root = Path(datasets_config.HF_DATASETS_CACHE) / repo_id.replace("/", "___") / (config or "default")
    except Exception:  # noqa: BLE001 - no datasets package, no cache
        return None
    found = [p for p in root.glob("*/*") if p.is_dir() and COMMIT.fullmatch(p.name)]
    return max(found, key=lambda p: p.stat().st_mtime).name if found else None


def hash_id(repo_id: str, revision: Optional[str] = None) -> Optional[str]:
    """``hub:<repo>@<commit>`` for the run hash; None when the commit cannot be resolved."""
    commit = resolve_commit(repo_id, revision)
    return f"hub:{repo_id}@{commit}" if commit else None


def explain(repo_id: str, exc: BaseException, what: str = "model", revision: Optional[str] = None) -> str:
    """One line naming the real reason a hub load failed (not cached offline, no such repo, gated, no revision...)."""
    from huggingface_hub import errors

    name = f"{what} {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    chain = _chain(exc)
    if any(isinstance(e, errors.GatedRepoError) for e in chain):
        return f"{name} is gated: accept its terms on huggingface.co and log in (`hf auth login`)"
    if any(isinstance(e, errors.RevisionNotFoundError) for e in chain):
        return f"{name}: the Hugging Face Hub has no such revision (a branch, tag or 40-hex commit of {repo_id})"
    if any(isinstance(e, errors.RepositoryNotFoundError) for e in chain):
        return f"{name} does not exist on the Hugging Face Hub (or is private: log in with `hf auth login`); check the id"
    not_cached = (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, errors.RevisionResolutionError)
    if any(isinstance(e, not_cached) for e in chain) or _mentions_cache(chain):
        why = "HF_HUB_OFFLINE=1" if offline() else "the Hugging Face Hub could not be reached"
        return (
            f"{name} is not in the local Hugging Face cache ({cache_dir()}) and {why}: download it where the hub is "
            f"reachable (`hf download {repo_id}{' --revision ' + revision if revision else ''}`) into this cache (HF_HOME), "
            f"or set the config to a local directory"
        )
    if any(isinstance(e, errors.EntryNotFoundError) for e in chain):
        return f"{name} lacks a file it needs ({_first_line(exc)})"
    return f"could not load {name}: {type(exc).__name__}: {_first_line(exc)}"


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _mentions_cache(chain: list[BaseException]) -> bool:
    # transformers turns a cache miss into a plain OSError; its wording is the only signal left.
    return any(isinstance(e, OSError) and ("cached files" in str(e) or "offline mode" in str(e).lower()) for e in chain)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
