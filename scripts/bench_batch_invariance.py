"""Is the target's greedy choice the same when it scores k tokens at once as when it decodes one at a time?

Speculative decoding is lossless in exact arithmetic; on real kernels the verifier's k-token forward pass
rounds differently from the one-token decode step. This measures, per dtype, how often that flips the
target's argmax: it decodes each GSM8K prompt greedily one token at a time (the vanilla reference,
logits kept), then re-scores the same tokens in chunks of k on a KV cache built the same way (teacher
forcing, as verification does) and compares argmaxes. Printed per dtype and k: positions scored, argmax
flips, the top-1/top-2 logit margin of the one-token pass at each flip, and the largest |Δlogit|.

    python scripts/bench_batch_invariance.py --questions 5 --tokens 128 --ks 8 16
"""
from __future__ import annotations

import argparse

import torch
from transformers import DynamicCache

from failfast_bench import data, models
from failfast_bench.cli import compose
from failfast_bench.manifest import cpu_name


@torch.inference_mode()
def _decode(model, prompt: list[int], n: int, stop_ids: set[int]):
    cache = DynamicCache(config=model.config)
    logits = model(input_ids=torch.tensor([prompt]), past_key_values=cache, use_cache=True).logits[0, -1].float()
    tokens, rows = [], []
    for _ in range(n):
        rows.append(logits)
        tokens.append(int(logits.argmax()))
        if tokens[-1] in stop_ids:
            break
        logits = model(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=cache, use_cache=True).logits[0, -1].float()
    return tokens, torch.stack(rows)


@torch.inference_mode()
def _chunked(model, prompt: list[int], tokens: list[int], k: int) -> torch.Tensor:
    """Logits predicting tokens[i] for every i, scored k tokens per forward pass (row i from the pass that holds tokens[i-1])."""
    cache = DynamicCache(config=model.config)
    rows = [model(input_ids=torch.tensor([prompt]), past_key_values=cache, use_cache=True).logits[0, -1:].float()]
    for start in range(0, len(tokens) - 1, k):
        chunk = tokens[start : min(start + k, len(tokens) - 1)]
        rows.append(model(input_ids=torch.tensor([chunk]), past_key_values=cache, use_cache=True).logits[0].float())
    return torch.cat(rows)[: len(tokens)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=5)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--ks", type=int, nargs="+", default=[8, 16])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = compose(["drafter=vanilla", f"dataset.num_questions={args.questions}"])
    src = models.resolve_source(cfg.target.model, cfg.target.gguf_file)
    tok = models.load_tokenizer(src)
    questions, _ = data.load_questions(cfg.dataset)
    prompts = [data.render_conversation(tok, q.turns[:1], [], cfg.dataset.template) for q in questions]
    print(f"target {cfg.target.name}, {len(prompts)} GSM8K prompts x {args.tokens} tokens, threads {args.threads}, "
          f"torch {torch.__version__}, CPU {cpu_name()}")
    print(f"{'dtype':<9} {'k':>3} {'positions':>9} {'flips':>5} {'max|dlogit|':>11}  margins of the 1-token pass at flips")
    for dtype_name in args.dtypes:
        model = models.load_causal_lm(src, models.pick_dtype(dtype_name, torch.device("cpu")), torch.device("cpu"))
        stop_ids = set(models.stop_token_ids(tok, model.config, list(cfg.target.eos_token_ids)))
        decoded = [_decode(model, prompt, args.tokens, stop_ids) for prompt in prompts]
        for k in args.ks:
            positions = flips = 0
            worst, margins = 0.0, []
            for prompt, (tokens, ref) in zip(prompts, decoded):
                got = _chunked(model, prompt, tokens, k)
                positions += len(tokens)
                worst = max(worst, float((got - ref).abs().max()))
                for i in torch.nonzero(got.argmax(-1) != ref.argmax(-1)).flatten().tolist():
                    top2 = ref[i].topk(2).values
                    flips += 1
                    margins.append(round(float(top2[0] - top2[1]), 4))
            print(f"{dtype_name:<9} {k:>3} {positions:>9} {flips:>5} {worst:>11.4f}  {margins}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
