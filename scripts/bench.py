"""`make bench`: speed of the harness on the embedded default, every drafter side by side in one process.

For each available drafter (and vanilla) it decodes the same GSM8K questions, interleaving methods per
question so machine noise hits all of them alike, and prints: vanilla tokens/s, the harness overhead (wall
time outside model forward passes, as a share of wall time), and measured vs modeled speedup (cpu profile
if measured, and the paper's a6000 constants). Drafters that are not available (never trained, missing
weights) are listed with the reason.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from omegaconf import OmegaConf

from failfast_bench import data, metrics, models
from failfast_bench.cli import compose
from failfast_bench.drafters import build_drafter, config_name
from failfast_bench.engine import first_divergence, generate
from failfast_bench.latency import available_profiles, load_profile
from failfast_bench.manifest import cpu_name
from failfast_bench.verify import TargetVerifier

DEFAULT_DRAFTERS = ["vanilla", "ar", "ar_dynamic", "dllm", "failfast", "eagle3"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--questions", type=int, default=5)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--drafters", nargs="*", default=DEFAULT_DRAFTERS)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. target=...")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    base = compose(["drafter=vanilla", f"dataset.num_questions={args.questions}", f"run.dtype={args.dtype}", *args.overrides])
    device = models.pick_device(base.run.device)
    dtype = models.pick_dtype(base.run.dtype, device)
    src = models.resolve_source(base.target.model, base.target.gguf_file)
    tok = models.load_tokenizer(src)
    target = models.load_causal_lm(src, dtype, device)
    stop_ids = models.stop_token_ids(tok, target.config, list(base.target.eos_token_ids))
    questions, source = data.load_questions(base.dataset)
    prompts = [data.render_conversation(tok, q.turns[:1], [], base.dataset.template) for q in questions]

    drafters, unavailable = {}, {}
    for name in args.drafters:
        cfg = compose([f"drafter={name}", f"dataset.num_questions={args.questions}", f"run.dtype={args.dtype}", *args.overrides])
        try:
            drafters[config_name(cfg.drafter)] = (cfg, build_drafter(cfg, target, tok, stop_ids, device, dtype))
        except Exception as exc:  # noqa: BLE001 - reported in the table
            unavailable[name] = str(exc).splitlines()[0][:160]

    # Warm-up so the first method measured does not pay for lazy initialisation.
    generate(TargetVerifier(target), drafters.get("vanilla", (None, None))[1] or next(iter(drafters.values()))[1], prompts[0], 8, stop_ids)
    results = {name: {"wall": [], "forward": [], "n_out": [], "rounds": [], "passes": [], "accepted": [], "drafted": [], "verified": [], "mismatch": 0} for name in drafters}
    reference = {}
    for qi, prompt in enumerate(prompts):
        for name, (cfg, drafter) in drafters.items():
            gen = generate(TargetVerifier(target, getattr(drafter, "target_feature_layers", ())), drafter, prompt, args.max_new_tokens, stop_ids)
            r = results[name]
            r["wall"].append(gen.wall_seconds)
            r["forward"].append(gen.forward_seconds)
            r["n_out"].append(len(gen.output_tokens))
            r["rounds"].append(len(gen.rounds))
            r["passes"].append(sum(x.drafter_passes for x in gen.rounds))
            r["accepted"].append(sum(x.accepted_len for x in gen.rounds))
            r["drafted"].append(sum(x.draft_len for x in gen.rounds))
            r["verified"].append([x.verified_tokens for x in gen.rounds])
            if name == "vanilla":
                reference[qi] = gen.output_tokens
            elif qi in reference and first_divergence(gen.output_tokens, reference[qi]) is not None:
                r["mismatch"] += 1
        print(f"[bench] question {qi + 1}/{len(prompts)} done", file=sys.stderr, flush=True)

    profiles = [load_profile(n) for n in available_profiles()]
    van = results.get("vanilla")
    print(f"\nfailfast-bench bench: target {base.target.name}, {len(prompts)} GSM8K questions x {args.max_new_tokens} tokens, "
          f"dtype {str(dtype).replace('torch.', '')}, threads {torch.get_num_threads()}, torch {torch.__version__}, CPU {cpu_name()}")
    if van:
        print(f"vanilla: {sum(van['n_out']) / sum(van['wall']):.2f} tokens/s")
    header = f"{'config':<28} {'tok/s':>6} {'overhead':>8} {'tau':>5} {'accept':>6} {'measured':>8}" + "".join(f" {('model:' + pr.name)[:16]:>16}" for pr in profiles) + f" {'mismatch':>8}"
    print(header)
    for name, r in results.items():
        wall = sum(r["wall"])
        overhead = 1 - sum(r["forward"]) / wall
        measured = (sum(van["wall"]) / wall) if van else float("nan")
        tau = sum(r["n_out"]) / sum(r["rounds"])
        acc = sum(r["accepted"]) / sum(r["drafted"]) if sum(r["drafted"]) else float("nan")
        family = drafters[name][0].drafter.name
        modeled = []
        for pr in profiles:
            try:
                vals = [
                    metrics.modeled_speedup(n, rd, ps, pr.pass_ms(family), pr.step_ms(base.target.latency_key))
                    for n, rd, ps in zip(r["n_out"], r["rounds"], r["passes"])
                ]
                modeled.append(f"{sum(vals) / len(vals):>15.2f}x")
            except KeyError:
                modeled.append(f"{'n/a':>16}")
        print(f"{name:<28} {sum(r['n_out']) / wall:>6.2f} {100 * overhead:>7.2f}% {tau:>5.2f} {acc:>6.3f} {measured:>7.2f}x " + " ".join(modeled) + f" {r['mismatch']:>8d}")
    for name, why in unavailable.items():
        print(f"{name:<28} unavailable: {why}")
    print("overhead = share of wall time outside model forward passes (target and drafter); measured = vanilla wall / this wall, same questions, same process.")
    worst = max((1 - sum(r["forward"]) / sum(r["wall"])) for r in results.values())
    return 0 if worst < 0.05 else 1


if __name__ == "__main__":
    raise SystemExit(main())
