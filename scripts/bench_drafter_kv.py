"""Measure the block-diffusion drafter's pass costs at short and long contexts, and what KV reuse saves.

The drafter is the project layout on the real SmolLM2 architecture: a randomly initialised k-layer
SmolLM2-shaped trunk sharing the real SmolLM2-135M-Instruct embeddings and LM head (random weights
change no cost). For each dtype and context length it times, with the block cache holding the context's
complete blocks:

* one denoising pass (32-token block over the cache, logits for the 8 rows of a sub-block),
* one cache-update pass (write one block),
* the prefill of [0, ℓ0) that every round pays when drafter KV reuse is off,
* whole FailFast rounds with reuse on and off, with θ = 0 so each pass commits its whole sub-block as
  the trained drafter does in easy regions: "fail fast" rounds (τ = 0.45; the random trunk's low
  confidences stop the round at the first check) and "win big" rounds (τ = 0: windows grow to the cap).
  Rounds advance the context by two tokens, like a decode with one accepted token per round.

Timings are medians; on a shared machine read them together with the load average printed at the top.

    .venv/bin/python scripts/bench_drafter_kv.py [--threads 1] [--dtypes float32 bfloat16]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default=None, help="SmolLM2 directory (default: the offline asset cache)")
    p.add_argument("--layers", type=int, default=4, help="trunk layers of the drafter")
    p.add_argument("--contexts", type=int, nargs="+", default=[256, 2048])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15, help="timed repeats per single-pass measurement")
    p.add_argument("--rounds", type=int, default=8, help="drafting rounds per round measurement")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def target_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg).expanduser()
    from failfast_bench import assets

    try:
        return assets.require("smollm2-135m")
    except assets.AssetMissing as exc:
        sys.exit(str(exc))


def build_drafter_model(target, layers: int, dtype, seed: int):
    """A random SmolLM2-shaped trunk saved and reloaded through the project layout."""
    from transformers import AutoModel

    from failfast_bench.drafters.blockdiff_model import load_block_diffusion_drafter, save_project_drafter

    torch.manual_seed(seed)
    config = type(target.config).from_dict(target.config.to_dict())
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:layers]
    body = AutoModel.from_config(config)
    vocab = target.get_input_embeddings().weight.shape[0]
    with tempfile.TemporaryDirectory() as tmp:
        save_project_drafter(tmp, body, torch.randn(config.hidden_size) * 0.02, block_size=32, mask_token_id=vocab, target="smollm2-135m")
        return load_block_diffusion_drafter(tmp, target_model=target, dtype=dtype)


def interleaved_ms(fns: dict, repeats: int) -> dict:
    """Time several callables round-robin (so machine load hits all alike); min and median ms of each."""
    for fn in fns.values():
        fn()  # warm-up
    times = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {key: (1000 * min(t), 1000 * statistics.median(t)) for key, t in times.items()}


def context_tokens(n: int, vocab: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n,), generator=g).tolist()


def time_passes(model, contexts: list[int], repeats: int, seed: int) -> dict:
    """Per context: (min, median) ms of a denoising pass, a cache-update pass and the prefill of [0, ℓ0),
    each context on its own handle of the same weights, measured round-robin."""
    handles, denoise, update, prefill = {}, {}, {}, {}
    for ell in contexts:
        handle = model.twin()
        ctx = context_tokens(ell + 32, model.vocab_limit, seed)
        ell0 = ell // 32 * 32
        block = ctx[ell0 : ell0 + 8] + [model.mask_token_id] * 24
        handle.write_blocks(ctx[:ell0])
        handles[ell] = handle

        def one_denoise(h=handle, b=block):
            h.denoise(b, list(range(8, 16)))

        def one_update(h=handle, c=ctx, e=ell0):
            h.write_blocks(c[e : e + 32])
            h.crop(e)

        def one_prefill(c=ctx, e=ell0):
            scratch = model.twin()
            scratch.write_blocks(c[:e])

        denoise[ell], update[ell], prefill[ell] = one_denoise, one_update, one_prefill
    results = {ell: {} for ell in contexts}
    for kind, fns, n in (("denoise", denoise, repeats), ("cache_update", update, repeats), ("prefill", prefill, 3)):
        for ell, value in interleaved_ms(fns, n).items():
            results[ell][kind] = value
    return results


def time_rounds(model, ell: int, tau: float, policy: str, rounds: int, seed: int) -> tuple[float, float, float]:
    """Median drafter ms per round, mean passes per round, mean prefill passes per round."""
    from failfast_bench.drafters.base import Verdict
    from failfast_bench.drafters.dllm import FailFastDrafter

    drafter = FailFastDrafter(model, theta=0.0, tau=tau, n=10, n_max=60, kv_policy=policy, stop_ids=(2,))
    context = context_tokens(ell, model.vocab_limit, seed)
    drafter.start(context)
    times, passes, prefills = [], [], []
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        draft = drafter.propose(context)
        elapsed = time.perf_counter() - t0
        if r > 0:  # the first round always prefills; report steady state
            times.append(elapsed)
            passes.append(draft.total_passes)
            prefills.append(draft.passes["prefill"])
        drafter.observe(draft, Verdict(accepted_len=1, next_token=7, target_tokens=[], bonus=False))
        context = context + draft.tokens[:1] + [7]
    return 1000 * statistics.median(times), statistics.mean(passes), statistics.mean(prefills)


POLICIES = ("exact", "crop", "off")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoModelForCausalLM

    path = target_dir(args.target)
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(f"torch {torch.__version__} | transformers {transformers.__version__} | threads {torch.get_num_threads()} | "
          f"cpu {platform.processor() or platform.machine()} x{os.cpu_count()} | load avg {load[0]:.2f}")
    print(f"drafter: random {args.layers}-layer SmolLM2-shaped trunk + SmolLM2-135M-Instruct embeddings/head ({path})\n")
    header = f"{'dtype':<9}{'ctx':>6}{'denoise min/med':>17}{'c.update min/med':>18}{'prefill':>9} | " + " | ".join(
        f"{kind + ' ' + policy:>22}" for kind in ("fail-fast", "win-big") for policy in POLICIES
    )
    summary = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        target = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).eval()
        target.requires_grad_(False)
        model = build_drafter_model(target, args.layers, dtype, args.seed)
        print(header)
        per_ctx = {}
        contexts = [ell + 5 for ell in args.contexts]  # mid-block, as most rounds are
        pass_ms = time_passes(model, contexts, args.repeats, args.seed)
        for ell in contexts:
            rounds = {}
            for kind, tau, n_rounds in (("fail-fast", 0.45, args.rounds), ("win-big", 0.0, max(2, args.rounds // 2))):
                for policy in POLICIES:
                    rounds[kind, policy] = time_rounds(model, ell, tau, policy, n_rounds, args.seed)
            per_ctx[ell] = (pass_ms[ell], rounds)
            p = pass_ms[ell]
            cells = " | ".join(f"{ms:>9.1f} ms {n:>4.1f} p  " for ms, n, _ in rounds.values())
            print(
                f"{dtype_name:<9}{ell:>6}{p['denoise'][0]:>10.1f}/{p['denoise'][1]:<6.1f}{p['cache_update'][0]:>11.1f}/{p['cache_update'][1]:<6.1f}"
                f"{p['prefill'][0]:>9.1f} | {cells}"
            )
        lo, hi = min(per_ctx), max(per_ctx)
        denoise_ratio = per_ctx[hi][0]["denoise"][0] / per_ctx[lo][0]["denoise"][0]
        median_ratio = per_ctx[hi][0]["denoise"][1] / per_ctx[lo][0]["denoise"][1]
        ff = {ell: per_ctx[ell][1] for ell in per_ctx}
        round_ratio = ff[hi]["fail-fast", "exact"][0] / ff[lo]["fail-fast", "exact"][0]
        saving = 1 - ff[hi]["fail-fast", "exact"][0] / ff[hi]["fail-fast", "off"][0]
        summary.append(
            f"{dtype_name}: denoise pass at ctx {hi} vs {lo}: {denoise_ratio:.2f}x (min; median {median_ratio:.2f}x); "
            f"fail-fast round with reuse (exact) "
            f"{round_ratio:.2f}x; at ctx {hi} reuse saves {100 * saving:.0f}% of a fail-fast round "
            f"({ff[hi]['fail-fast', 'off'][2]:.2f} -> {ff[hi]['fail-fast', 'exact'][2]:.2f} prefill passes per round)"
        )
        print()
        del model, target
    print("\n".join(summary))
    print("pass columns: min/median ms, contexts timed round-robin; round columns: median ms per round and")
    print("p = drafter passes per round (prefill + denoise + cache update);")
    print("exact = paper's reuse rule (cache length must equal ℓ0), crop = keep the matching block prefix, off = prefill every round")


if __name__ == "__main__":
    main()
