#!/usr/bin/env bash
# `make drafters`: retrain every shipped drafter of the embedded default (smollm2-135m) from scratch or from
# where a killed run stopped. Every step resumes: rerun this script after an interruption.
#
#   1. data   the target's greedy responses to GSM8K-train prompts (math, code and chat templates), cached
#             under ~/.cache/failfast-bench/train_data (never the evaluation questions; a test checks it)
#   2. dllm   block-diffusion drafter (FailFast and the fixed-length dLLM baseline), 4 layers
#   3. ar     small autoregressive drafter (AR baseline), 2 layers
#   4. eagle3 EAGLE-3 head (training-time test), target features cached once
#   5. ship   copy each export + model card into src/failfast_bench/shipped/smollm2-135m/<kind> (int8-packed)
#
# Wall time on 2 CPU cores (see each model card for what the shipped drafters actually got): data ~3 h for
# all 22k prompts (stop earlier with data.time_budget_minutes; training reloads new shards as they arrive),
# dllm ~5 s/step, ar ~3 s/step, eagle3 ~4 s/step at 1 thread with bf16 autocast. Override any key, e.g.
#   bash scripts/make_drafters.sh train.steps=4000 threads=2
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export FAILFAST_BENCH_DATA=${FAILFAST_BENCH_DATA:-$(cd .. && pwd)/shared/data}
TARGET=${TARGET:-smollm2-135m}

$PY -m failfast_bench.assets fetch "$TARGET"
$PY -m failfast_bench.train recipe=dllm target="$TARGET" stage=data "$@"
for recipe in dllm ar eagle3; do
  $PY -m failfast_bench.train recipe=$recipe target="$TARGET" stage=train "$@"
  $PY -m failfast_bench.train recipe=$recipe target="$TARGET" stage=ship "$@"
done
