"""Pass cost of block-diffusion drafter designs side by side, in one process, on the embedded default.

For each drafter directory (project layout: plain or target-conditioned, any depth) and dtype, with the
block cache holding a real GSM8K-style context of ``--context`` tokens (the target's taps of it set for a
conditioned drafter), times the median of ``--repeats``:

* one denoising pass (32-token block over the cache, logits of one 8-row sub-block), full vocabulary and
  with the drafter's draft vocabulary when it ships one;
* one cache-update pass (write one block);
* the target's verification forward of 1 + 10 tokens over the same context (the unit of the ratio).

    .venv/bin/python scripts/bench_drafter_designs.py DIR [DIR ...] [--threads 1] [--dtypes float32 bfloat16]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("drafters", nargs="+", help="drafter directories (e.g. src/failfast_bench/shipped/smollm2-135m/dllm)")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    return p.parse_args()


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    from failfast_bench import assets
    from failfast_bench.drafters.blockdiff_model import load_block_diffusion_drafter
    from failfast_bench.drafters.draft_vocab import read_draft_vocab
    from failfast_bench.verify import TargetVerifier

    print(f"torch {torch.__version__}, threads {args.threads}, {platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.2f}")
    source = assets.require("smollm2-135m")
    context = [1] + [(37 * i + 11) % 40000 + 100 for i in range(args.context - 1)]
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        target = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).eval()
        verifier = TargetVerifier(target)

        verifier.start(context)

        def verify():  # 11 tokens over the context's cache, then back to the context
            verifier._forward(context[-1:] + context[:10])
            verifier.cache.crop(-11)

        verify_ms = median_ms(verify, args.repeats)
        for directory in args.drafters:
            model = load_block_diffusion_drafter(directory, target_model=target, dtype=dtype)
            taps = getattr(model, "feature_layers", ())
            if taps:
                model.set_features(TargetVerifier(target, feature_layers=taps).sequence_features(context)[:-1])
            ell0 = args.context // 32 * 32
            model.reset()
            model.write_blocks(context[:ell0])
            block = context[ell0:] + [model.mask_token_id] * (ell0 + 32 - args.context)
            sub = list(range(args.context - ell0, min(32, args.context - ell0 + 8)))
            denoise_ms = median_ms(lambda: model.denoise(block, sub), args.repeats)
            update_ms = median_ms(lambda: (model.write_blocks(block), model.crop(ell0)), args.repeats)
            vocab_ms = None
            if (Path(directory) / "draft_vocab.json").exists():
                model.restrict_vocab(read_draft_vocab(Path(directory)))
                vocab_ms = median_ms(lambda: model.denoise(block, sub), args.repeats)
            rows.append({
                "drafter": str(directory), "dtype": dtype_name, "layers": model.describe()["num_hidden_layers"], "conditioned": list(taps),
                "denoise_ms": round(denoise_ms, 2), "denoise_draft_vocab_ms": None if vocab_ms is None else round(vocab_ms, 2),
                "cache_update_ms": round(update_ms, 2), "target_verify_11_ms": round(verify_ms, 2),
                "denoise_over_verify": round(denoise_ms / verify_ms, 3),
            })
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
