"""Drafter training: the project's own drafters, distilled from a target on its greedy responses.

``python -m failfast_bench.train recipe=<dllm|ar> target=<name> [stage=data|train|ship|eval|all]``
(config: ``conf/train/``). Modules, one job each:

* :mod:`.data` - training prompts (GSM8K train, never evaluation questions), the target's greedy
  responses with top-k log-probs, generated shard by shard (atomic, resumable), the committable compact
  copy, and :func:`.data.iter_examples`, the data interface of every recipe (EAGLE-3 included);
* :mod:`.trunk` - a trunk initialised from target layers, sharing the target's embedding and head;
* :mod:`.dllm_recipe` / :mod:`.ar_recipe` - the block-diffusion and autoregressive recipes;
* :mod:`.batching` - packing rows with per-row attention patterns, the distillation loss;
* :mod:`.loop` - the resumable training loop; :mod:`.evaluate` - held-out draft quality;
* :mod:`.card` - the shipped drafter's model card.
"""
from .data import Example, iter_examples

__all__ = ["Example", "iter_examples"]
