"""`make bench`: speed of the harness on the embedded default, every drafter and dtype side by side in one process.

For each target dtype (``--dtypes``, default float32 and bfloat16) and each available drafter (and vanilla)
it decodes the same GSM8K questions, interleaving dtypes and methods per question so machine noise hits
all of them alike, and prints per dtype: vanilla tokens/s, the harness overhead (wall time outside model
forward passes, as a share of wall time), measured speedup against that dtype's vanilla and against the
fastest vanilla of the run, modeled speedups (every profile in conf/hardware), and lossless mismatches
with their first-divergence indices. Drafters that are not available are listed with the reason.
"""
from __future__ import annotations

import argparse
import sys
from typing import NamedTuple

import torch

from failfast_bench import data, metrics, models
from failfast_bench.cli import compose
from failfast_bench.drafters import build_drafter, config_name
from failfast_bench.engine import first_divergence, generate
from failfast_bench.latency import available_profiles, load_profile
from failfast_bench.manifest import cpu_name
from failfast_bench.verify import TargetVerifier

DEFAULT_DRAFTERS = ["vanilla", "ar", "ar_dynamic", "dllm", "failfast", "eagle3"]
DEFAULT_DTYPES = ["float32", "bfloat16"]


def _empty_record() -> dict:
    return {key: [] for key in ("wall", "forward", "n_out", "rounds", "passes", "accepted", "drafted", "divergence")}


class Setup(NamedTuple):
    """One dtype's target and drafters (``drafters``: config name -> (config, drafter))."""

    base: object
    tokenizer: object
    target: object
    stop_ids: list
    drafters: dict
    unavailable: dict


def _load(dtype_name: str, drafter_names, questions: int, overrides) -> Setup:
    base = compose(["drafter=vanilla", f"dataset.num_questions={questions}", f"run.dtype={dtype_name}", *overrides])
    device = models.pick_device(base.run.device)
    dtype = models.pick_dtype(base.run.dtype, device)
    src = models.resolve_source(base.target.model, base.target.gguf_file)
    tok = models.load_tokenizer(src)
    target = models.load_causal_lm(src, dtype, device)
    stop_ids = models.stop_token_ids(tok, target.config, list(base.target.eos_token_ids))
    drafters, unavailable = {}, {}
    for name in drafter_names:
        cfg = compose([f"drafter={name}", f"dataset.num_questions={questions}", f"run.dtype={dtype_name}", *overrides])
        try:
            drafters[config_name(cfg.drafter)] = (cfg, build_drafter(cfg, target, tok, stop_ids, device, dtype))
        except Exception as exc:  # noqa: BLE001 - reported in the table
            unavailable[name] = str(exc).splitlines()[0][:160]
    return Setup(base, tok, target, stop_ids, drafters, unavailable)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--questions", type=int, default=5)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--drafters", nargs="*", default=DEFAULT_DRAFTERS)
    p.add_argument("--dtypes", nargs="+", default=DEFAULT_DTYPES, help="target (and drafter) dtypes, compared in one process")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. target=...")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    setups = {d: _load(d, args.drafters, args.questions, args.overrides) for d in args.dtypes}
    first = next(iter(setups.values()))
    base, tok = first.base, first.tokenizer
    questions, _ = data.load_questions(base.dataset)
    prompts = [data.render_conversation(tok, q.turns[:1], [], base.dataset.template) for q in questions]

    for s in setups.values():
        # Warm-up so the first method measured does not pay for lazy initialisation.
        warm = s.drafters.get("vanilla", (None, None))[1] or next(iter(s.drafters.values()))[1]
        generate(TargetVerifier(s.target), warm, prompts[0], 8, s.stop_ids)
    results = {(d, name): _empty_record() for d, s in setups.items() for name in s.drafters}
    for qi, prompt in enumerate(prompts):
        for d, s in setups.items():
            reference = None
            for name, (_, drafter) in s.drafters.items():
                gen = generate(TargetVerifier(s.target, getattr(drafter, "target_feature_layers", ())), drafter, prompt, args.max_new_tokens, s.stop_ids)
                r = results[(d, name)]
                r["wall"].append(gen.wall_seconds)
                r["forward"].append(gen.forward_seconds)
                r["n_out"].append(len(gen.output_tokens))
                r["rounds"].append(len(gen.rounds))
                r["passes"].append(sum(x.drafter_passes for x in gen.rounds))
                r["accepted"].append(sum(x.accepted_len for x in gen.rounds))
                r["drafted"].append(sum(x.draft_len for x in gen.rounds))
                if name == "vanilla":
                    reference = gen.output_tokens
                elif reference is not None:
                    r["divergence"].append(first_divergence(gen.output_tokens, reference))
        print(f"[bench] question {qi + 1}/{len(prompts)} done", file=sys.stderr, flush=True)

    profiles = [load_profile(n) for n in available_profiles()]
    vanilla_walls = {d: sum(results[(d, "vanilla")]["wall"]) for d in setups if (d, "vanilla") in results}
    fastest = min(vanilla_walls, key=vanilla_walls.get) if vanilla_walls else None
    print(f"\nfailfast-bench bench: target {base.target.name}, {len(prompts)} GSM8K questions x {args.max_new_tokens} tokens, "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}, CPU {cpu_name()}")
    for d, wall in vanilla_walls.items():
        n_out = sum(results[(d, "vanilla")]["n_out"])
        print(f"vanilla {d}: {n_out / wall:.2f} tokens/s{'  (fastest vanilla)' if d == fastest else ''}")
    header = (f"{'dtype':<9} {'config':<26} {'tok/s':>6} {'overhead':>8} {'tau':>5} {'accept':>6} {'measured':>8} {'vs fastest':>10}"
              + "".join(f" {('model:' + pr.name)[:16]:>16}" for pr in profiles) + "  mismatches (first divergence)")
    print(header)
    for (d, name), r in results.items():
        wall = sum(r["wall"])
        overhead = 1 - sum(r["forward"]) / wall
        measured = vanilla_walls[d] / wall if d in vanilla_walls else float("nan")
        vs_fastest = vanilla_walls[fastest] / wall if fastest else float("nan")
        tau = sum(r["n_out"]) / sum(r["rounds"])
        acc = sum(r["accepted"]) / sum(r["drafted"]) if sum(r["drafted"]) else float("nan")
        family = setups[d].drafters[name][0].drafter.name
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
        diverged = [i for i in r["divergence"] if i is not None]
        print(f"{d:<9} {name:<26} {sum(r['n_out']) / wall:>6.2f} {100 * overhead:>7.2f}% {tau:>5.2f} {acc:>6.3f} {measured:>7.2f}x {vs_fastest:>9.2f}x "
              + " ".join(modeled) + f"  {len(diverged)}/{len(r['divergence'])} {diverged if diverged else ''}")
    for d, s in setups.items():
        for name, why in s.unavailable.items():
            print(f"{d:<9} {name:<26} unavailable: {why}")
    print("overhead = share of wall time outside model forward passes (target and drafter); measured = that dtype's vanilla wall / "
          "this wall; vs fastest = the fastest vanilla's wall / this wall; same questions, same process. A mismatch is a question "
          "whose output differs from vanilla decoding in the same dtype (index of the first differing token).")
    worst = max((1 - sum(r["forward"]) / sum(r["wall"])) for r in results.values())
    return 0 if worst < 0.05 else 1


if __name__ == "__main__":
    raise SystemExit(main())
