"""The training loop shared by every recipe: resumable at any moment, logged, evaluated, exported.

Resumability. ``<run_dir>/checkpoint.pt`` (trainable weights, optimizer, step, counters, eval history)
is replaced atomically every ``checkpoint_minutes``, after every evaluation, at the end, and on
SIGTERM/SIGINT; a killed run loses at most that much work and a rerun of the same command continues
from it. The batch of step s is drawn by an RNG seeded with (seed, s), so a resumed run draws the same
batches as an uninterrupted one would (as long as the data pool is the same). The pool is re-read every
``reload_data_minutes``, so training can start while responses are still being generated.

Outputs in ``run_dir``: ``log.jsonl`` (one line per logged step / evaluation), ``export/`` (the drafter
in its shipped layout, refreshed after every evaluation) and ``checkpoint.pt``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

import torch

from ..trace import dumps_strict
from .card import lineage
from .data import Example, atomic_write_text, iter_examples

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


@dataclass
class LoopSettings:
    steps: int = 6000
    batch_size: int = 8
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    autocast_bf16: bool = True
    checkpoint_minutes: float = 5.0
    eval_every: int = 250
    log_every: int = 10
    time_budget_minutes: Optional[float] = None
    reload_data_minutes: float = 15.0
    min_examples: int = 32
    templates: Optional[Sequence[str]] = None  # train on these templates only (None = all)
    # Sampling weight of each store (same order as the Trainer's store_dirs): a batch slot picks a store by
    # weight, then an example of it. None = uniform over the union of the stores' examples.
    store_weights: Optional[Sequence[float]] = None


class Recipe(Protocol):
    name: str
    model: torch.nn.Module

    def make_batch(self, examples: Sequence[Example], rng: random.Random) -> Any: ...

    def loss(self, batch: Any) -> dict: ...

    def evaluate(self, examples: Sequence[Example]) -> dict: ...

    def export(self, directory: Path, meta: dict) -> Path: ...


def lr_at(step: int, s: LoopSettings) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak at ``steps``."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = min(1.0, (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps))
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_replace_dir(build: Callable[[Path], Any], target: Path) -> None:
    """Build a directory next to ``target`` and swap it in (a reader never sees a half-written one)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


class _StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint and return instead of dying mid-step."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: dict = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread (e.g. some test runners)
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.raised:  # second signal: give up at once
            raise KeyboardInterrupt
        self.raised = True
        log.warning("signal %s: checkpointing and stopping after this step", signum)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(
        self,
        recipe: Recipe,
        run_dir: Path,
        store_dirs: Path | Sequence[Path],
        settings: LoopSettings,
        heldout: Callable[[], list[Example]],
        describe: dict,
        progress: bool = True,
        wandb_run: Any = None,
        init_from: Optional[Path] = None,
    ):
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        # One response store per prompt source; the pool is their union (sources without a store yet are skipped).
        self.store_dirs = [Path(store_dirs)] if isinstance(store_dirs, (str, Path)) else [Path(p) for p in store_dirs]
        self.s = settings
        self.heldout = heldout
        self.describe = describe
        self.progress = progress
        self.wandb = wandb_run
        params = [p for p in recipe.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, betas=(0.9, 0.95))
        self.state = {"step": 0, "train_seconds": 0.0, "eval_seconds": 0.0, "examples_seen": 0, "input_tokens": 0, "loss_targets": 0, "evals": [], "pool_size": 0}
        self.pool: list[Example] = []
        self.pools: list[list[Example]] = []  # per store, in store_dirs order
        if settings.store_weights is not None and len(settings.store_weights) != len(self.store_dirs):
            raise ValueError(f"{len(settings.store_weights)} store weights for {len(self.store_dirs)} stores")
        self._pool_loaded_at = 0.0
        self.init_from = init_from

    # -- persistence -----------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    def resume(self) -> bool:
        if not self.checkpoint_path.exists():
            if self.init_from is not None:
                self._warm_start(Path(self.init_from))
            return False
        ckpt = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        if ckpt.get("recipe") != self.recipe.name:
            raise ValueError(f"{self.checkpoint_path} belongs to recipe {ckpt.get('recipe')!r}, not {self.recipe.name!r}; use another train.run_dir")
        self.recipe.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state.update(ckpt["state"])
        log.info("resumed %s at step %d (%.0f s of training so far)", self.checkpoint_path, self.state["step"], self.state["train_seconds"])
        return True

    def _warm_start(self, directory: Path) -> None:
        """No checkpoint: start from an exported drafter's weights and carry its training counters over."""
        config = json.loads((directory / "config.json").read_text())
        meta = config.get("failfast_bench") or {}
        previous = meta.get("training") or {}
        if previous.get("recipe") not in (None, self.recipe.name):
            # Another recipe's drafter (e.g. the AR trunk under a block-diffusion run): its counters
            # describe that training, recorded as such, not carried over.
            self.recipe.model.load_exported(directory)
            self.state["warm_start"] = {"from": str(directory), "recipe": previous.get("recipe"), "steps": previous.get("steps", 0), "train_seconds": previous.get("train_seconds", 0), "examples_seen": previous.get("examples_seen", 0)}
            log.info("warm start from the %s drafter %s", previous.get("recipe"), directory)
            return
        self.recipe.model.load_exported(directory)
        for key, source in (("examples_seen", "examples_seen"), ("input_tokens", "input_tokens_seen"), ("loss_targets", "loss_targets_seen"), ("train_seconds", "train_seconds")):
            self.state[key] = previous.get(source, 0) or 0
        chain = lineage(previous)  # recorded here so that later exports name the whole chain without this one
        self.state["warm_start"] = {"from": str(directory), "steps": previous.get("steps", 0), "steps_total": chain["steps_total"],
                                    "runs": chain["runs"], "base": chain["base"]}
        log.info("warm start from %s (%s earlier steps; optimizer state starts fresh)", directory, previous.get("steps", 0))

    def save(self) -> None:
        atomic_torch_save(
            {"recipe": self.recipe.name, "model": self.recipe.model.state_dict(), "optimizer": self.optimizer.state_dict(), "state": self.state, "describe": self.describe, "settings": asdict(self.s)},
            self.checkpoint_path,
        )

    def log_line(self, record: dict) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(dumps_strict(record) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record.get("step"))

    # -- data ------------------------------------------------------------------------------------
    def refresh_pool(self, force: bool = False) -> None:
        if not force and time.time() - self._pool_loaded_at < 60 * self.s.reload_data_minutes:
            return
        templates = set(self.s.templates) if self.s.templates else None
        self.pools = [
            [ex for ex in iter_examples(store_dir, split="train") if templates is None or ex.template in templates]
            if (store_dir / "meta.json").exists() or k == 0
            else []
            for k, store_dir in enumerate(self.store_dirs)
        ]
        self.pool = [ex for pool in self.pools for ex in pool]
        self._pool_loaded_at = time.time()
        if len(self.pool) != self.state["pool_size"]:
            log.info("training pool: %d examples (%s)", len(self.pool), ", ".join(f"{p.name} {len(x)}" for p, x in zip(self.store_dirs, self.pools)))
        self.state["pool_size"] = len(self.pool)

    def batch_for(self, step: int):
        rng = random.Random(f"{self.s.seed}:{step}")
        if self.s.store_weights is None:
            chosen = rng.sample(range(len(self.pool)), min(self.s.batch_size, len(self.pool)))
            examples = [self.pool[i] for i in chosen]
        else:
            live = [(pool, w) for pool, w in zip(self.pools, self.s.store_weights) if pool and w > 0]
            picks = rng.choices(range(len(live)), weights=[w for _, w in live], k=self.s.batch_size)
            examples = [live[k][0][rng.randrange(len(live[k][0]))] for k in picks]
        return examples, self.recipe.make_batch(examples, rng)

    # -- evaluation and export ---------------------------------------------------------------------
    def evaluate(self) -> dict:
        t0 = time.time()
        model = self.recipe.model
        was_training = model.training
        model.eval()
        try:
            metrics = self.recipe.evaluate(self.heldout())
        finally:
            model.train(was_training)
        seconds = time.time() - t0
        self.state["eval_seconds"] += seconds
        record = {"kind": "eval", "step": self.state["step"], "train_seconds": round(self.state["train_seconds"], 1), "eval_seconds": round(seconds, 1), **metrics}
        self.state["evals"].append(record)
        self.log_line(record)
        log.info("eval at step %d: %s", self.state["step"], {k: v for k, v in metrics.items() if not isinstance(v, list)})
        return record

    def export_meta(self) -> dict:
        last = self.state["evals"][-1] if self.state["evals"] else {}
        return {
            "training": {
                "recipe": self.recipe.name,
                "steps": self.state["step"],
                "examples_seen": self.state["examples_seen"],
                "input_tokens_seen": self.state["input_tokens"],
                "loss_targets_seen": self.state["loss_targets"],
                "train_seconds": round(self.state["train_seconds"], 1),
                "pool_size": self.state["pool_size"],
                "warm_start": self.state.get("warm_start"),
                "heldout": {k: v for k, v in last.items() if k not in ("kind",)},
                **self.describe,
            }
        }

    def export(self) -> Path:
        target = self.run_dir / "export"
        atomic_replace_dir(lambda d: self.recipe.export(d, self.export_meta()), target)
        return target

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> dict:
        from tqdm.auto import tqdm

        self.resume()
        self.refresh_pool(force=True)
        while len(self.pool) < self.s.min_examples:
            log.info("waiting for training data: %d of %d examples so far", len(self.pool), self.s.min_examples)
            time.sleep(60)
            self.refresh_pool(force=True)
        started = time.time()
        last_ckpt = time.time()
        model = self.recipe.model
        model.train()
        bar = tqdm(total=self.s.steps, initial=self.state["step"], desc=f"train {self.recipe.name}", disable=not self.progress, dynamic_ncols=True, mininterval=10)
        with _StopFlag() as stop:
            if self.state["step"] == 0 and not self.state["evals"]:
                self.evaluate()
            while self.state["step"] < self.s.steps and not stop.raised:
                if self.s.time_budget_minutes is not None and time.time() - started > 60 * self.s.time_budget_minutes:
                    log.info("time budget of %.1f min reached at step %d", self.s.time_budget_minutes, self.state["step"])
                    break
                self.refresh_pool()
                step = self.state["step"]
                t0 = time.time()
                examples, batch = self.batch_for(step)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr_at(step, self.s)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.s.autocast_bf16):
                    out = self.recipe.loss(batch)
                self.optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                grad_norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], self.s.grad_clip)
                self.optimizer.step()
                seconds = time.time() - t0
                self.state["step"] = step + 1
                self.state["train_seconds"] += seconds
                self.state["examples_seen"] += len(examples)
                self.state["input_tokens"] += int(batch.input_ids.numel())
                self.state["loss_targets"] += int(out["targets"])
                bar.update(1)
                if (step + 1) % self.s.log_every == 0:
                    record = {"kind": "train", "step": step + 1, "loss": round(float(out["loss"].detach()), 4), "ce": round(out["ce"], 4), "accuracy": round(out["accuracy"], 4), "lr": lr_at(step, self.s), "grad_norm": round(float(grad_norm), 3), "seconds_per_step": round(seconds, 3), "pool": len(self.pool)}
                    self.log_line(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}", s_step=f"{seconds:.2f}")
                if (step + 1) % self.s.eval_every == 0:
                    self.evaluate()
                    self.save()
                    self.export()
                    last_ckpt = time.time()
                elif time.time() - last_ckpt > 60 * self.s.checkpoint_minutes:
                    self.save()
                    last_ckpt = time.time()
        bar.close()
        if not self.state["evals"] or self.state["evals"][-1]["step"] != self.state["step"]:
            if not stop.raised:
                self.evaluate()
        self.save()
        self.export()
        return self.state
