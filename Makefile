# failfast-bench: every target does its own idempotent setup first (scripts/setup.sh).
PY := .venv/bin/python
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test test-fast bench profile figures results drafters clean-runs

setup:
	@bash scripts/setup.sh

## The main job: FailFast on GSM8K with the embedded default target (SmolLM2-135M-Instruct, CPU).
run: setup
	$(PY) -m failfast_bench drafter=failfast dataset=gsm8k

## The whole test suite (unit tests on tiny random models + integration tests on the real SmolLM2).
test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

## Unit tests only (seconds).
test-fast: setup
	$(PY) -m pytest -q -m "not integration"

## Vanilla tokens/s, harness overhead, measured vs modeled speedup and lossless mismatches of every available
## drafter, float32 and bfloat16 side by side (~13 min on 2 cores).
bench: setup
	$(PY) scripts/bench.py --questions 5 --max-new-tokens 128

## Measure this machine's latency profile (writes conf/hardware/cpu.yaml).
profile: setup
	$(PY) -m failfast_bench.profile

## Regenerate every figure and table from the committed results (no model runs).
SMOLLM2_TOKENIZER := $(wildcard $(or $(FAILFAST_BENCH_CACHE),$(HOME)/.cache/failfast-bench)/models/smollm2-135m-instruct)
figures: setup
	$(PY) -m failfast_bench.plots --results results/runs $(if $(wildcard results/runs_sampling),--results results/runs_sampling) \
		$(if $(wildcard results/runs_strategies),--strategies results/runs_strategies) \
		--training-curve results/training/curves.csv --out results/figures \
		$(if $(SMOLLM2_TOKENIZER),--tokenizer $(SMOLLM2_TOKENIZER))

## Rerun the experiments behind results/ (long; see results/README.md for wall time).
results: setup
	bash scripts/make_results.sh

## Retrain every shipped drafter (long; resumable; see the model cards for wall time).
drafters: setup
	bash scripts/make_drafters.sh

clean-runs:
	rm -rf runs
