#!/usr/bin/env bash
# `make results`: rerun every experiment behind the committed reference results in results/runs/
# (embedded default SmolLM2-135M-Instruct, CPU, float32 target, 1 torch thread per run, the first 30 questions
# of GSM8K test, HumanEval and MT-Bench (first turn) x 256 new tokens: the paper's question count, issue 13).
#
#   bash scripts/make_results.sh            # everything (resumes: finished configs are skipped by config hash)
#   bash scripts/make_results.sh base       # vanilla and the AR drafter runs
#   bash scripts/make_results.sh eagle3     # the EAGLE-3 runs (chain and tree)
#   bash scripts/make_results.sh dllm       # the FailFast / fixed-length dLLM runs and sweeps
#   bash scripts/make_results.sh dtypes     # float32 vs bfloat16 target and drafter, 2 threads (results/runs_dtypes)
#   bash scripts/make_results.sh sampling   # T = 1 vs T = 0 with task accuracy, 1 thread (results/runs_sampling, T1b)
#   bash scripts/make_results.sh drafters   # dLLM drafter designs, GSM8K q0-29 (results/runs_drafters, issue 14)
#   bash scripts/make_results.sh strategies # the dLLM drafting strategies, replayed, 1 thread (results/runs_strategies, T3, F12)
#   LANES=1 bash scripts/make_results.sh    # one run at a time (default: 2 at once, one per core)
#
# What runs (see results/README.md for what each figure uses):
#   live, with vanilla decoding of every question in the same process (measured speedup), GSM8K:
#     FailFast (bfloat16 drafter with the draft vocabulary: the fastest token-exact setting next to a float32
#     target), best AR (fixed), AR dynamic, EAGLE-3 chain and tree
#   trace replay (modeled speedups exact, no measured speedup): vanilla; on GSM8K the AR and fixed-length dLLM
#     spec_len sweeps, FailFast with a float32 drafter, the tau and N_max microbenchmarks and the theta concavity
#     sweep; on HumanEval and MT-Bench (out of domain for every shipped drafter) FailFast, the best fixed-length
#     dLLM, the best AR, AR with 8 tokens and EAGLE-3 chain. Replayed dLLM runs read drafter passes from the
#     trajectory store (run.trajectories=true: identical traces, same run directories; README "Trajectory store").
#   The dLLM runs use the default dLLM drafter of smollm2-135m: the target-conditioned one trained on math, chat and
#   code responses (shipped:dllm_cond_mix4, since 2026-11-30; part drafters replays the earlier defaults).
# A run's directory name holds a hash of its config and of the drafter's weights, so retrained drafters
# rerun instead of being skipped. Wall time on this 2-core CPU: see results/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LANES=${LANES:-2}
PART=${1:-all}
OUT=${OUT:-results/runs}
# The reference results are on the first test lines: the full GSM8K split must come from $FAILFAST_BENCH_DATA
# (a directory holding gsm8k/test.jsonl) or the hub; dataset.fallback=refuse stops instead of using the sample.
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
COMMON="run.output_dir=$OUT run.threads=1 run.progress=false run.max_new_tokens=256 dataset.num_questions=30 dataset.fallback=refuse"
LIVE_FAILFAST="drafter=failfast drafter.dtype=bfloat16 drafter.draft_vocab=true"

run_jobs() {  # one Hydra job per input line, LANES at a time; a failed job fails the script at the end
  grep -v '^\s*$' | xargs -P "$LANES" -I{} sh -c "$PY -m failfast_bench $COMMON {} || exit 255"
}

best() {  # best <dataset> <family> <param>...: drafter.<param>=<value> overrides of the family's best replayed
  # config (pooled modeled speedup, a6000_paper, paper accounting: report.best_configs' default ranking)
  $PY - "$OUT" "$@" <<'EOF'
import sys
from pathlib import Path
from failfast_bench.latency import load_profile
from failfast_bench.report import best_configs, collect
out, dataset, family, *params = sys.argv[1:]
runs, _ = collect([Path(out)], [load_profile("a6000_paper")])
rows = best_configs(runs[(runs.dataset == dataset) & (runs.family == family) & (runs.replay == True)])
print(" ".join(f"drafter.{p}={rows.iloc[0][p]:g}" for p in params))
EOF
}

base() {
  run_jobs <<EOF
dataset=gsm8k drafter=vanilla run.replay=true
dataset=humaneval drafter=vanilla run.replay=true
dataset=mt_bench drafter=vanilla run.replay=true
dataset=gsm8k drafter=ar run.replay=true drafter.spec_len=2,4,6,8 -m
dataset=gsm8k drafter=ar_dynamic
EOF
  local ar_best
  ar_best=$(best gsm8k ar spec_len)
  run_jobs <<EOF
dataset=gsm8k drafter=ar $ar_best
dataset=humaneval drafter=ar $ar_best run.replay=true
dataset=mt_bench drafter=ar $ar_best run.replay=true
dataset=humaneval drafter=ar drafter.spec_len=8 run.replay=true
dataset=mt_bench drafter=ar drafter.spec_len=8 run.replay=true
EOF
}

eagle3() {
  run_jobs <<EOF
dataset=gsm8k drafter=eagle3
dataset=gsm8k drafter=eagle3 drafter.tree=true
dataset=humaneval drafter=eagle3 run.replay=true
dataset=mt_bench drafter=eagle3 run.replay=true
EOF
}

dllm() {  # Fast-dLLM's spec_len sweep at theta = 0.05 (its best theta, F1); at the paper's theta = 0.9 a pass commits
  # few tokens, so spec_len 4 and 8 (concavity) only: 30 questions x 256 tokens at spec_len 8 took 25 min of one core.
  # The live FailFast runs come last, so that they are timed after the replays have freed the cores (N = 4: the best
  # N of experiment=micro_n for this drafter, beside the paper's N = 10).
  run_jobs <<EOF
dataset=gsm8k drafter=dllm run.replay=true run.trajectories=true drafter.theta=0.05 drafter.spec_len=4,8,12,16 -m
dataset=gsm8k drafter=dllm run.replay=true run.trajectories=true drafter.spec_len=4
EOF
  dllm_sweeps
  LANES=1 run_jobs <<EOF
dataset=gsm8k $LIVE_FAILFAST
dataset=gsm8k $LIVE_FAILFAST drafter.n=4
EOF
}

dllm_sweeps() {  # micro_tau's tau = 0.45 is FailFast's default config with a float32 drafter, replayed; micro_n's N = 10 too
  run_jobs <<EOF
dataset=gsm8k experiment=micro_tau -m
dataset=gsm8k experiment=micro_nmax drafter.n_max=10,30,70 -m
dataset=gsm8k experiment=micro_n drafter.n=2,4,6,8 -m
dataset=gsm8k experiment=micro_tau drafter.n=4 drafter.tau=0.05,0.25,0.65,0.85 -m
dataset=gsm8k experiment=concavity drafter.theta=0.05,0.5,0.9 -m
EOF
  local dllm_best
  dllm_best=$(best gsm8k dllm theta spec_len)
  run_jobs <<EOF
dataset=humaneval drafter=failfast run.replay=true run.trajectories=true
dataset=mt_bench drafter=failfast run.replay=true run.trajectories=true
dataset=humaneval drafter=failfast drafter.n=4 run.replay=true run.trajectories=true
dataset=mt_bench drafter=failfast drafter.n=4 run.replay=true run.trajectories=true
dataset=humaneval drafter=dllm $dllm_best run.replay=true run.trajectories=true
dataset=mt_bench drafter=dllm $dllm_best run.replay=true run.trajectories=true
EOF
}

dtypes() {  # target x drafter dtype on GSM8K (and FailFast out of domain), 2 threads, live, one run at a time
  local COMMON="run.output_dir=${OUT_DTYPES:-results/runs_dtypes} run.threads=2 run.progress=false run.max_new_tokens=256 dataset.num_questions=10"
  LANES=1 run_jobs <<EOF
run.dtype=bfloat16 dataset=gsm8k drafter=failfast
run.dtype=float32 dataset=gsm8k drafter=failfast
run.dtype=float32 drafter.dtype=bfloat16 dataset=gsm8k drafter=failfast
run.dtype=float32 drafter.dtype=bfloat16 dataset=gsm8k drafter=eagle3
run.dtype=float32 drafter.dtype=bfloat16 dataset=humaneval drafter=failfast
run.dtype=float32 drafter.dtype=bfloat16 dataset=mt_bench drafter=failfast
run.dtype=bfloat16 dataset=gsm8k drafter=eagle3
run.dtype=bfloat16 dataset=gsm8k drafter=failfast drafter.draft_vocab=true
run.dtype=float32 drafter.dtype=bfloat16 dataset=gsm8k drafter=failfast drafter.draft_vocab=true
EOF
}

sampling() {  # T1b: speculative sampling at T = 1 next to greedy, with task accuracy, live, one run at a time
  local COMMON="run.output_dir=${OUT_SAMPLING:-results/runs_sampling} run.threads=1 run.progress=false run.max_new_tokens=256 dataset.num_questions=10 dataset.fallback=refuse eval.accuracy=true"
  LANES=1 run_jobs <<EOF
dataset=gsm8k drafter=failfast run.temperature=1.0
dataset=gsm8k drafter=failfast
dataset=gsm8k drafter=eagle3 run.temperature=1.0
dataset=gsm8k drafter=eagle3
EOF
}

drafters() {  # issue 14: the earlier default dLLM drafters on GSM8K q0-29 (results/runs_drafters); the default's
  # (shipped:dllm_cond_mix4) rows are results/runs' (part dllm). First the plain 2-layer drafter, replayed and live,
  # one run at a time; then the conditioned drafters trained on GSM8K responses only (shipped:dllm_cond, the default
  # until the mixed-data one) and on math, chat and code (shipped:dllm_cond_mix, the default until 2026-11-30's
  # continuation on four sources), replayed in and out of domain (LANES at a time), and live.
  # The table's rows for earlier conditioned checkpoints were made with weights that git history holds (results/README).
  local COMMON="run.output_dir=${OUT_DRAFTERS:-results/runs_drafters} run.threads=1 run.progress=false run.max_new_tokens=256 dataset.num_questions=30 dataset.fallback=refuse"
  LANES=1 run_jobs <<EOF
dataset=gsm8k drafter=failfast drafter.model=shipped:dllm run.replay=true
dataset=gsm8k drafter=failfast drafter.model=shipped:dllm drafter.dtype=bfloat16 drafter.draft_vocab=true
EOF
  run_jobs <<EOF
dataset=gsm8k drafter=failfast drafter.model=shipped:dllm_cond run.replay=true run.trajectories=true
dataset=humaneval drafter=failfast drafter.model=shipped:dllm_cond run.replay=true run.trajectories=true
dataset=mt_bench drafter=failfast drafter.model=shipped:dllm_cond run.replay=true run.trajectories=true
dataset=gsm8k drafter=failfast drafter.model=shipped:dllm_cond_mix run.replay=true run.trajectories=true
dataset=humaneval drafter=failfast drafter.model=shipped:dllm_cond_mix run.replay=true run.trajectories=true
dataset=mt_bench drafter=failfast drafter.model=shipped:dllm_cond_mix run.replay=true run.trajectories=true
EOF
  LANES=1 run_jobs <<EOF
dataset=gsm8k drafter=failfast drafter.model=shipped:dllm_cond drafter.dtype=bfloat16 drafter.draft_vocab=true
dataset=gsm8k drafter=failfast drafter.model=shipped:dllm_cond_mix drafter.dtype=bfloat16 drafter.draft_vocab=true
EOF
}

strategies() {  # T3/F12: every dLLM drafting strategy on GSM8K; on HumanEval and MT-Bench (out of domain for the
  # shipped drafter) the full methods only, no ablations (FailFast clean, ADL only, CPS only) and no prefix trees:
  # there one run took 2-8.5 min against 1-5 min on GSM8K, and all 30 did not fit the session's hour of one core.
  local COMMON="run.output_dir=${OUT_STRATEGIES:-results/runs_strategies} run.threads=1 run.progress=false run.max_new_tokens=128 dataset.num_questions=10 dataset.fallback=refuse run.replay=true"
  LANES=1 run_jobs <<EOF
dataset=gsm8k drafter=failfast
dataset=gsm8k drafter=failfast drafter.mode=clean
dataset=gsm8k drafter=dllm
dataset=gsm8k drafter=diffuspec
dataset=gsm8k drafter=diffuspec drafter.cps=false
dataset=gsm8k drafter=diffuspec drafter.policy=fixed
dataset=gsm8k drafter=dllm_tree
dataset=gsm8k drafter=failfast drafter.tree=true
dataset=gsm8k drafter=dllm_cost hardware=a6000_paper
dataset=gsm8k drafter=dllm_cost hardware=cpu
EOF
  local dataset
  for dataset in humaneval mt_bench; do
    LANES=1 run_jobs <<EOF
dataset=$dataset drafter=failfast
dataset=$dataset drafter=dllm
dataset=$dataset drafter=diffuspec
dataset=$dataset drafter=dllm_cost hardware=a6000_paper
dataset=$dataset drafter=dllm_cost hardware=cpu
EOF
  done
}

start=$(date +%s)
case "$PART" in
  base) base ;;
  eagle3) eagle3 ;;
  dllm) dllm ;;
  dllm_sweeps) dllm_sweeps ;;
  dtypes) dtypes ;;
  sampling) sampling ;;
  drafters) drafters ;;
  strategies) strategies ;;
  all) base; eagle3; dllm; dtypes; sampling; strategies ;;
  *) echo "usage: $0 [all|base|eagle3|dllm|dllm_sweeps|dtypes|sampling|strategies|drafters]" >&2; exit 2 ;;
esac
echo "[make_results] $PART finished in $(( ($(date +%s) - start) / 60 )) min; figures: make figures"
