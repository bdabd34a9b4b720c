"""What a multirun sweep will launch, and how far it got.

    python -m failfast_bench.sweeps experiment=micro_tau [overrides ...]

lists every job of ``python -m failfast_bench -m <same overrides>`` (the preset's ``hydra.sweeper.params``
combined with sweeps given on the command line, as Hydra's basic sweeper does) with its run directory and
state: ``complete`` (skipped when the sweep is rerun), ``partial k/n`` (resumes from k checkpointed
questions) or ``missing``. Nothing is loaded and nothing is written.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import trace


@dataclass
class Job:
    overrides: list[str]  # the sweep's own overrides for this job (as Hydra prints them)
    config_name: str
    run_dir: Path
    state: str  # complete | partial | missing
    questions_done: int
    questions: Optional[int]
    config: Any = None  # the job's composed config


def _split(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    return fixed, sweeps


def job_overrides(overrides: list[str]) -> list[list[str]]:
    """Per job, the overrides Hydra's basic sweeper adds to the command line's fixed (non-sweep) ones."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    from .cli import CONF_DIR
    from .config import register_configs

    fixed, _ = _split(overrides)
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        base = compose(config_name="config", overrides=fixed, return_hydra_config=True)
    params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
    # As Hydra does: command-line overrides come after the preset's params and replace same-key entries.
    parsed = OverridesParser.create().parse_overrides(params + list(overrides))
    return [[o for o in job if o not in fixed] for job in BasicSweeper.split_arguments(parsed, None)[0]]


def jobs(overrides: list[str]) -> list[Job]:
    from .cli import compose
    from .drafters import config_name
    from .runner import run_dir_for

    fixed, _ = _split(overrides)
    out = []
    for extra in job_overrides(overrides):
        cfg = compose(fixed + list(extra))
        run_dir = run_dir_for(cfg)
        done = len(list((run_dir / "partial").glob("q*.json")))
        state = "complete" if trace.is_complete(run_dir) else ("partial" if done else "missing")
        out.append(Job(list(extra), config_name(cfg.drafter), run_dir, state, done, cfg.dataset.num_questions, cfg))
    return out


def format_jobs(found: list[Job]) -> str:
    lines = [f"{len(found)} jobs: " + ", ".join(f"{sum(j.state == s for j in found)} {s}" for s in ("complete", "partial", "missing"))]
    for j in found:
        state = f"partial {j.questions_done}/{j.questions if j.questions is not None else '?'}" if j.state == "partial" else j.state
        lines.append(f"  {state:<13} {j.config_name:<28} {' '.join(j.overrides):<40} {j.run_dir}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    from .cli import _one_line, _unknown_group_option, fail

    overrides = [a for a in argv if a not in ("-m", "--multirun")]
    problem = _unknown_group_option(overrides)
    if problem:
        fail(problem)
    try:
        found = jobs(overrides)
    except Exception as exc:  # noqa: BLE001 - Hydra/OmegaConf errors become one line
        fail(_one_line(exc))
    print(format_jobs(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
