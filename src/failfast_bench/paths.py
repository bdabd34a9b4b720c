"""Where the Hydra configs are, in a source checkout and in an installed wheel.

``conf/`` stays at the repository root (the visible source of truth); ``pyproject.toml`` maps it to the package
``failfast_bench.conf``, so a wheel carries it as ``failfast_bench/conf/`` and an editable install maps it with
an import hook. A source tree on ``PYTHONPATH`` has neither and finds ``conf/`` next to ``src/``.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Iterator

CONF_ENV = "FAILFAST_BENCH_CONF"
_PACKAGE_DIR = Path(__file__).resolve().parent


def _candidates() -> Iterator[Path]:
    yield _PACKAGE_DIR / "conf"  # wheel install
    try:
        spec = importlib.util.find_spec("failfast_bench.conf")  # editable install (import-hook mapping)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        yield Path(location)
    yield _PACKAGE_DIR.parents[1] / "conf"  # source checkout: <repo>/src/failfast_bench -> <repo>/conf


def conf_dir() -> Path:
    """The config root (``config.yaml`` and one folder per group); ``$FAILFAST_BENCH_CONF`` overrides it."""
    if os.environ.get(CONF_ENV):
        return Path(os.environ[CONF_ENV])
    candidates = list(_candidates())
    for candidate in candidates:
        if (candidate / "config.yaml").is_file():
            return candidate
    return candidates[-1]  # nothing found: errors then name the source-tree location
