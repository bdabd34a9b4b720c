"""``python -m failfast_bench [group=option ...] [key=value ...]``: run one configuration (or ``-m`` a sweep).

Before Hydra starts, the command line is composed and checked once (unknown names, wrong types, impossible
values, missing assets, tokenizer mismatch), so bad input exits with one clear line, before any model loads
and without writing files.
"""
from __future__ import annotations

import sys

from .cli import CONF_DIR, check_command_line, fail


def main() -> None:
    argv = sys.argv[1:]
    problem = check_command_line(argv)
    if problem:
        fail(problem)

    import hydra

    from .config import ConfigError, register_configs

    register_configs()

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def app(cfg) -> float:
        from .assets import AssetMissing
        from .runner import run

        try:
            summary = run(cfg)
        except (ConfigError, AssetMissing) as exc:
            fail(str(exc))
        # Returned for Hydra sweepers that optimise (e.g. Optuna).
        value = summary["metrics"].get("modeled_speedup")  # null in strict JSON when undefined
        return float("nan") if value is None else float(value)

    app()


if __name__ == "__main__":
    main()
