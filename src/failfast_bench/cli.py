"""Command-line checks that turn bad input into one clear line (exit code 2) before anything loads."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

CONF_DIR = Path(os.environ.get("FAILFAST_BENCH_CONF", Path(__file__).resolve().parents[2] / "conf"))
GROUPS = ("target", "drafter", "dataset", "hardware", "logger", "experiment")


def fail(message: str) -> None:
    print(f"failfast-bench: error: {message}", file=sys.stderr)
    sys.exit(2)


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _unknown_group_option(overrides: list[str]) -> Optional[str]:
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or "," in value or value.startswith(("choice(", "glob(", "range(")):
            continue
        if value not in group_options(key):
            return f"unknown {key} {value!r}; valid: {', '.join(group_options(key))}"
    return None


def compose(overrides: list[str]):
    """Compose the run config as Hydra would, for validation (no output directory, no job)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from .config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return hydra_compose(config_name="config", overrides=overrides)


def _one_line(exc: BaseException) -> str:
    parts = []
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc).strip().splitlines()
        if text:
            first = text[0].strip()
            if first and first not in parts and "$VALUE" not in first:
                parts.append(first)
        exc = exc.__cause__ or exc.__context__
    return ": ".join(parts) or "invalid configuration"


def check_command_line(argv: list[str]) -> Optional[str]:
    """None when the command line composes into a valid config; otherwise the one-line problem."""
    if any(a in ("-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve", "--package", "-p") or a.startswith("--info") for a in argv):
        return None
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if not a.startswith("-")]
    problem = _unknown_group_option(overrides)
    if problem:
        return problem
    if multirun:
        return None  # each job is validated when it starts
    try:
        cfg = compose(overrides)
    except Exception as exc:  # noqa: BLE001 - Hydra/OmegaConf errors become one line
        return _one_line(exc)
    from .assets import AssetMissing
    from .config import ConfigError
    from .runner import preflight

    try:
        preflight(cfg)
    except (ConfigError, AssetMissing, FileNotFoundError) as exc:
        return str(exc)
    return None
