"""python -m failfast_bench.backends --engine vllm|sglang [--tp N --port P --enforce-eager --out FILE] [overrides]

The target's tensor-parallel size is ``run.gpus`` (null = every visible GPU); ``--tp N`` is the same as
``run.gpus=N``.

Example (the paper's Qwen2.5-7B chain): ``python -m failfast_bench.backends --engine vllm target=qwen2.5-7b
drafter.model=<EAGLE-3 head> dataset=gsm8k dataset.num_questions=30 run.max_new_tokens=1024``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..trace import dumps_strict
from . import ENGINES, EngineUnavailable, compare, engine_module, settings_from_config


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m failfast_bench.backends", description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=ENGINES, required=True)
    parser.add_argument("--tp", type=int, default=None, help="tensor parallel size of the target (= run.gpus; paper: 2)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--enforce-eager", action="store_true", default=None)
    parser.add_argument("--log-dir", default="runs/engine_logs")
    parser.add_argument("--out", default=None, help="write the result JSON here too")
    args, overrides = parser.parse_known_args(argv)
    try:
        engine_module(args.engine).require()
    except EngineUnavailable as exc:
        print(f"failfast-bench: error: {exc}", file=sys.stderr)
        return 2
    from .. import data, models
    from ..cli import compose

    cfg = compose(["drafter=eagle3", *overrides, *([f"run.gpus={args.tp}"] if args.tp is not None else [])])
    settings = settings_from_config(cfg, port=args.port, dtype=args.dtype, enforce_eager=args.enforce_eager)
    try:
        engine_module(args.engine).require(settings.tensor_parallel)  # before questions and tokenizers load
    except EngineUnavailable as exc:
        print(f"failfast-bench: error: {exc}", file=sys.stderr)
        return 2
    questions, _ = data.load_questions(cfg.dataset)
    tokenizer = models.load_tokenizer(models.resolve_source(settings.target), cfg.target.trust_remote_code)
    prompts = [data.render_prompt(tokenizer, q, cfg.dataset.template) for q in questions]
    result = compare(args.engine, settings, prompts, cfg.run.max_new_tokens, Path(args.log_dir))
    result.update(target=cfg.target.name, dataset=cfg.dataset.name)
    text = dumps_strict(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
