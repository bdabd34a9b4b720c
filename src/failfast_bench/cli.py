"""Command-line checks that turn bad input into one clear line (exit code 2) before anything loads."""
from __future__ import annotations

import sys
from typing import Optional

from .paths import conf_dir

CONF_DIR = conf_dir()
GROUPS = ("target", "drafter", "dataset", "hardware", "logger", "experiment")


def fail(message: str) -> None:
    print(f"failfast-bench: error: {message}", file=sys.stderr)
    sys.exit(2)


def group_options(group: str) -> list[str]:
    # A leading underscore marks a building block other options include (experiment/_paper_scale), not a choice.
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


def _unknown_group_option(overrides: list[str]) -> Optional[str]:
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or "," in value or value.startswith(("choice(", "glob(", "range(")):
            continue
        if value not in group_options(key):
            return f"unknown {key} {value!r}; valid: {', '.join(group_options(key))}"
    return None


def compose(overrides: list[str], with_hydra: bool = False):
    """Compose the run config as Hydra would, for validation (no output directory, no job)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from .config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=with_hydra)


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
        return check_sweep(overrides)
    return _check_job(overrides)


def _check_job(overrides: list[str]) -> Optional[str]:
    problem = _unknown_group_option(overrides)
    if problem:
        return problem
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


MAX_PREFLIGHT_JOBS = 512


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The override lists of every job a ``-m`` run launches, as Hydra's basic sweeper expands them.

    Sweeps come from the command line (``a=1,2``, ``range``, ``choice``) and from the composed config's
    ``hydra.sweeper.params`` (experiment presets); a command-line sweep of the same key replaces the preset's.
    """
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    swept = {o.get_key_element(): list(o.sweep_string_iterator()) for o in parsed if o.is_sweep_override()}
    # The preset's own sweep is known only after composing with one value of each command-line sweep.
    first = fixed + [f"{k}={v[0]}" for k, v in swept.items()]
    hydra_cfg = _compose_hydra(first)
    preset = dict(hydra_cfg.hydra.sweeper.get("params") or {}) if hydra_cfg is not None else {}
    axes: dict[str, list[str]] = {}
    for key, value in preset.items():
        if key in swept or key.lstrip("+~") in {k.lstrip("+~") for k in swept}:
            continue
        (o,) = parser.parse_overrides([f"{key}={value}"])
        axes[o.get_key_element()] = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
    axes.update(swept)
    keys = list(axes)
    return [fixed + [f"{k}={v}" for k, v in zip(keys, combo)] for combo in itertools.product(*(axes[k] for k in keys))]


def _compose_hydra(overrides: list[str]):
    try:
        return compose(overrides, with_hydra=True)
    except Exception:  # noqa: BLE001 - the per-job check reports the problem in one line
        return None


def check_sweep(overrides: list[str]) -> Optional[str]:
    """Validate every job of a multirun before the first one starts; the first bad job is named."""
    try:
        jobs = sweep_jobs(overrides)
    except Exception as exc:  # noqa: BLE001 - a malformed sweep string
        return _one_line(exc)
    if len(jobs) > MAX_PREFLIGHT_JOBS:
        jobs = jobs[:MAX_PREFLIGHT_JOBS]  # larger grids: the rest are validated when they start
    seen: set[tuple[str, ...]] = set()
    for job in jobs:
        key = tuple(sorted(job))
        if key in seen:
            continue
        seen.add(key)
        problem = _check_job(job)
        if problem:
            swept = " ".join(a for a in job if a not in overrides)
            return f"sweep job [{swept}]: {problem}" if swept else problem
    return None
