"""Run one configuration end to end: questions → (vanilla reference, speculative run) → traces → summary.

Results go to a deterministic directory ``<run.output_dir>/<target>/<dataset>/<config name>__<hash>``.
Each finished question is written atomically under ``partial/`` so a killed run resumes where it stopped;
the final files are written atomically and ``COMPLETE`` is written last.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from . import accuracy, trace, vanilla
from .config import ConfigError, DrafterConfig, validate
from .drafters import config_name, resolve_drafter_model
from .drafters.draft_vocab import VOCAB_FILE
from .latency import HardwareProfile, available_profiles, load_profile
from .sampling import sampling_of

# Keys that do not change results: excluded from the config hash. ``accounting`` and ``load_tolerance`` are
# reporting choices computed from the same trace (both accountings are always stored).
_UNHASHED_RUN_KEYS = ("progress", "output_dir", "skip_if_complete", "threads", "gpus", "accounting", "load_tolerance",
                      "trajectories")  # stored drafter passes give the same trace (trajectory_store.py)
# Options that never change what a run computes (how it reports or refuses), excluded from the hash.
_UNHASHED_KEYS = (("dataset", "fallback"),)
# Options added after runs were committed: at their default they leave the hash (and the run directory) as it was.
_DIFFUSPEC_KEYS = ("adl_k_min", "adl_k_max", "adl_delta", "adl_rho", "cps", "cps_beam", "cps_top_m", "cps_mass", "cps_weight", "cps_order")
_HASHED_ONLY_IF_SET = (
    ("drafter", "draft_vocab", False), ("drafter", "revision", None), ("drafter", "policy", None), ("dataset", "revision", None),
    ("run", "temperature", 0.0), ("run", "top_p", 1.0), ("run", "top_k", 0),
    ("drafter", "tree_k", 3), ("drafter", "tree_threshold", 0.5), ("drafter", "tree_branch_len", 8),
    ("drafter", "tree_branch_passes", 1),
    *(("drafter", key, DrafterConfig.__dataclass_fields__[key].default) for key in _DIFFUSPEC_KEYS),
)
# Values that name the same experiment as another: hashed as the one they equal (drafter.policy=fixed is spec_len).
_HASHED_AS = (("drafter", "policy", "fixed", None),)


def _concrete_dtype_settings(container: dict) -> None:
    """``auto`` dtypes replaced by what they mean on this run's device (in place): a run is identified by
    its numerics, so ``auto`` on a CPU hashes as float32, like every run committed before ``auto`` existed."""
    from .models import resolve_dtype_name

    run = container.get("run", {})
    device = run.get("device", "auto")
    for section in (run, container.get("drafter", {})):
        if section.get("dtype") == "auto":
            section["dtype"] = resolve_dtype_name("auto", device)


def concrete_dtypes(cfg):
    """A copy of ``cfg`` with ``run.dtype`` and ``drafter.dtype`` resolved (see :func:`_concrete_dtype_settings`),
    so the stored config.yaml, the reference caches and the manifest name the dtype that actually ran."""
    from .models import resolve_dtype_name

    if "auto" not in (cfg.run.dtype, OmegaConf.select(cfg, "drafter.dtype", default=None)):
        return cfg
    cfg = copy.deepcopy(cfg)
    if cfg.run.dtype == "auto":
        cfg.run.dtype = resolve_dtype_name("auto", cfg.run.device)  # drafter.dtype=${run.dtype} follows
    if OmegaConf.select(cfg, "drafter.dtype", default=None) == "auto":
        cfg.drafter.dtype = resolve_dtype_name("auto", cfg.run.device)
    return cfg


def config_hash(cfg, legacy_target_drafters: bool = False) -> str:
    """What names a run. The drafter is named by the model it runs (``drafter.model``, else the target's default
    for its family) and the content of its weights, not by the target's whole table of per-family defaults, so
    an explicit ``drafter.model`` equal to the default is the same run, and changing the default drafter of one
    family leaves every other family's runs complete. ``legacy_target_drafters``: the scheme before 2026-11-30,
    which hashed that table (``failfast_bench.rehash`` renames runs recorded under it)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    _concrete_dtype_settings(container)
    if not legacy_target_drafters:
        defaults = container.get("target", {}).pop("drafters", None) or {}
        drafter = container.get("drafter", {})
        if drafter.get("model") is None and drafter.get("name") in defaults:
            drafter["model"] = defaults[drafter["name"]]
    container.pop("logger", None)
    if container.get("drafter", {}).get("policy") != "cost_aware":
        container.pop("hardware", None)  # pricing only: re-priced by report without rerunning
    # (a cost-aware length policy reads the profile to decide draft lengths, so there it names the experiment)
    container.pop("eval", None)  # accuracy is scored from the stored outputs (accuracy.py), also after the fact
    for key in _UNHASHED_RUN_KEYS:
        container.get("run", {}).pop(key, None)
    if "measure_vanilla" in container.get("run", {}):
        # Reused or re-measured, the reference is the same experiment; only "never" changes what a run holds.
        container["run"]["measure_vanilla"] = vanilla.measures(container["run"]["measure_vanilla"])
    for group, key in _UNHASHED_KEYS:
        container.get(group, {}).pop(key, None)
    for group, key, value, same in _HASHED_AS:
        if container.get(group, {}).get(key, same) == value:
            container[group][key] = same
    for group, key, default in _HASHED_ONLY_IF_SET:
        if container.get(group, {}).get(key, default) == default:
            container.get(group, {}).pop(key, None)
    weights = drafter_weights_id(cfg)
    if weights is not None:
        # A retrained drafter under the same config name is a different experiment: never "already complete".
        container["drafter_weights"] = weights
    blob = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def drafter_weights_id(cfg) -> Optional[str]:
    """What identifies the drafter's weights: SHA-256 of a local drafter's weight files, ``hub:<repo>@<commit>``
    for a hub id (the commit its revision resolves to, so an updated hub drafter is a new run), None for vanilla,
    the target itself, or a hub id whose commit cannot be resolved."""
    from . import hub, models
    from .assets import AssetMissing
    from .drafters import drafter_revision

    try:
        model = resolve_drafter_model(cfg)
        src = models.resolve_source(model) if model not in (None, "target") else None
    except (ConfigError, AssetMissing):
        return None
    if src is not None and not src.is_local:
        return hub.hash_id(model, drafter_revision(cfg.drafter))
    if model in (None, "target") or not Path(model).is_dir():
        return None
    files = sorted(p for p in Path(model).iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
    if cfg.drafter.get("draft_vocab") and (Path(model) / VOCAB_FILE).exists():
        files.append(Path(model) / VOCAB_FILE)
    return _files_sha256(tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)) if files else None


@functools.lru_cache(maxsize=64)
def _files_sha256(files: tuple) -> str:
    digest = hashlib.sha256()
    for path, _, _ in files:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def run_dir_for(cfg, run_hash: Optional[str] = None) -> Path:
    name = f"{config_name(cfg.drafter)}__{(run_hash or config_hash(cfg))[:10]}"
    return Path(cfg.run.output_dir) / cfg.target.name / cfg.dataset.name / name


def preflight(cfg) -> dict[str, Any]:
    """Everything checkable without loading a model: values, drafter source, dataset size, assets."""
    from . import assets, data

    validate(cfg)
    if OmegaConf.select(cfg, "run.replay", default=False):
        from .replay import check_replayable

        check_replayable(cfg)
    if OmegaConf.select(cfg, "run.trajectories", default=False):
        from .trajectory_store import check_storable

        check_storable(cfg)
    drafter_model = resolve_drafter_model(cfg)
    # The model first: on a fresh machine its fetch command is the one to show.
    for name in cfg.target.assets:
        assets.require(name)
    size = data.dataset_size(cfg.dataset)
    if cfg.dataset.num_questions is not None and cfg.dataset.num_questions > size and not cfg.dataset.question_ids:
        raise ConfigError(f"dataset.num_questions={cfg.dataset.num_questions} but {cfg.dataset.name} has {size} questions")
    check_revisions(cfg, drafter_model)
    if drafter_model not in (None, "target"):
        if cfg.drafter.name == "eagle3":
            check_eagle3_head(cfg, drafter_model)
        else:
            check_drafter_tokenizer(cfg, drafter_model)
    return {"dataset_size": size}


def _target_source(cfg):
    from . import models

    return models.resolve_source(cfg.target.model, cfg.target.gguf_file, cfg.target.revision)


def check_revisions(cfg, drafter_model: Optional[str]) -> None:
    """A revision pins a hub id; on anything else it would be silently ignored."""
    from . import models
    from .drafters import drafter_revision

    models.check_revision(_target_source(cfg), "target")
    revision = drafter_revision(cfg.drafter)
    if revision and drafter_model in (None, "target"):
        raise ConfigError(f"drafter.revision={revision} pins a hub id, but drafter={cfg.drafter.name} uses {drafter_model or 'no model'}; drop the revision")
    if drafter_model not in (None, "target"):
        models.check_revision(models.resolve_source(drafter_model, revision=revision), "drafter")


def check_drafter_tokenizer(cfg, drafter_model: str) -> None:
    """Load only the two tokenizers (seconds) and refuse a drafter that maps tokens to other ids."""
    from . import models
    from .drafters import drafter_revision

    d_src = models.resolve_source(drafter_model, revision=drafter_revision(cfg.drafter))
    _check_tokenizer_pair(_target_source(cfg), bool(cfg.target.trust_remote_code), d_src, drafter_model)


@functools.lru_cache(maxsize=32)
def _check_tokenizer_pair(t_src, trust_remote_code: bool, d_src, drafter_model: str) -> None:
    # Cached: validating a sweep checks the same pair once per job (18 jobs of a grid = 36 tokenizer loads).
    from . import models
    from .drafters import _maybe_tokenizer

    d_tok = _maybe_tokenizer(d_src, models.load_tokenizer)
    if d_tok is None:
        return  # project drafters share the target's embeddings and tokenizer by construction
    models.check_shared_tokenizer(models.load_tokenizer(t_src, trust_remote_code), d_tok, drafter_model)


def check_eagle3_head(cfg, head_model: str) -> None:
    """EAGLE-3 heads ship no tokenizer (they use the target's): check the head's config against the target's."""
    from . import models
    from .drafters import drafter_revision
    from .drafters.eagle3_head import check_head_for_target

    target_config = models.load_config(_target_source(cfg), cfg.target.trust_remote_code)
    label = f"target {cfg.target.name} ({cfg.target.model})"
    check_head_for_target(head_model, target_config, drafter_revision(cfg.drafter), label)


def _set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _profiles(selected: HardwareProfile, latency_key: str) -> list[HardwareProfile]:
    """The run's own profile first, then every other profile in conf/hardware that was measured for this
    target (priced side by side). Another target's latencies (the CPU profiles' SmolLM2 timings for a Qwen
    run) would price a speedup nobody measured; the run's own profile may still fall back, and is labelled."""
    out = [selected]
    for name in available_profiles():
        if name != selected.name:
            try:
                profile = load_profile(name)
            except Exception:  # noqa: BLE001 - a broken optional profile must not sink a run
                continue
            if latency_key in profile.target_step_ms:
                out.append(profile)
    return out


def _question_record_from_dict(d: dict) -> trace.QuestionRecord:
    return trace.QuestionRecord(**d)


def _round_records_from_dicts(rows: list[dict]) -> list[trace.RoundRecord]:
    return [trace.RoundRecord(**r) for r in rows]


@dataclasses.dataclass
class _Tools:
    """What every question of one run needs (built once per run)."""

    tokenizer: Any
    verifier: Any  # TargetVerifier, or ReplayVerifier when run.replay
    vanilla_verifier: Any  # the live target, one token per forward
    drafter: Any
    stop_ids: list[int]
    reference_store: Any
    continuation_store: Any  # replay only
    continuations: dict  # replay only: prompt ids -> the target's cached greedy continuation
    progress: Any  # tqdm
    vanilla_policy: str = "always"  # always | reuse | never (run.measure_vanilla on this device)
    vanilla_store: Any = None


# One loaded target per process: a multirun sweep runs its jobs one after another in one process, and
# reloading the same tokenizer and weights for every job would dominate short (replayed) jobs.
_TARGET_CACHE: dict[tuple, tuple] = {}


def _load_target(t_src, dtype, device, trust_remote_code: bool, gpus: tuple = ()):
    from . import models

    key = (t_src.path, t_src.gguf_file, t_src.revision, str(dtype), str(device), bool(trust_remote_code), tuple(gpus))
    if key not in _TARGET_CACHE:
        _TARGET_CACHE.clear()
        tokenizer = models.load_tokenizer(t_src, trust_remote_code)
        model = models.load_causal_lm(t_src, dtype, device, trust_remote_code, gpus=gpus)
        _TARGET_CACHE[key] = (tokenizer, model)
    return _TARGET_CACHE[key]


# Prompt tokens the warm-up round runs on: enough to exercise every kernel, short enough to cost nothing.
WARM_UP_TOKENS = 16


def _warm_up(target, drafter, question, tools: "_Tools", template: str) -> None:
    """One short untimed round (a drafter proposal and a target verification) before the first timed question:
    CUDA context creation, kernel selection and allocator growth otherwise land in question 0's vanilla time.
    Outputs are discarded; every drafter resets its state when the next question starts."""
    from . import data
    from .engine import generate
    from .verify import TargetVerifier

    prompt = data.render_conversation(tools.tokenizer, question.turns[:1], [], template)[:WARM_UP_TOKENS]
    verifier = TargetVerifier(target, feature_layers=getattr(drafter, "target_feature_layers", ()))
    generate(verifier, drafter, prompt, 1, tools.stop_ids, question_id="warm-up")


def _remove_stray_temporaries(run_dir: Path) -> None:
    """A kill during an atomic write leaves ``.<name>.*.partial`` files; they never count as results."""
    for stray in list(run_dir.glob(".*.partial")) + list((run_dir / "partial").glob(".*.partial")):
        stray.unlink(missing_ok=True)


class Runner:
    def __init__(self, cfg):
        self.cfg = concrete_dtypes(cfg)
        # Hashed once: a hub drafter's commit is resolved now, before loading can move the cache's refs.
        self.config_hash = config_hash(cfg)
        self.run_dir = run_dir_for(cfg, self.config_hash)
        self.replay = bool(OmegaConf.select(cfg, "run.replay", default=False))

    # ------------------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        if cfg.run.skip_if_complete and trace.is_complete(self.run_dir):
            summary = headline(json.loads((self.run_dir / "summary.json").read_text()),
                               str(OmegaConf.select(cfg, "run.accounting", default="paper")))
            shutil.rmtree(self.run_dir / "partial", ignore_errors=True)  # killed between COMPLETE and clean-up
            print(f"[failfast-bench] complete results exist, skipping: {self.run_dir}")
            if accuracy.requested(cfg) and "accuracy" not in summary:  # scored from the stored outputs
                summary["accuracy"] = accuracy.score_run(self.run_dir, bool(cfg.eval.execute_code), write=True)[1]
            if cfg.logger.name != "none" and cfg.logger.mode != "disabled":
                # e.g. a W&B sweep agent asking for a config that is already done: report the stored results.
                from .loggers import log_run

                log_run(cfg, summary, trace.load_run(self.run_dir)[0], self.run_dir)
            return summary
        import torch

        from . import data, lossless, manifest, models
        from .drafters import build_drafter
        from .verify import TargetVerifier, acceptance_for

        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        questions, source = data.load_questions(cfg.dataset, offline_default=str(cfg.target.model).startswith("asset:"))
        self._questions = questions
        device = models.pick_device(cfg.run.device)
        dtype = models.pick_dtype(cfg.run.dtype, device)
        gpus = tuple(models.run_gpus(cfg.run.device, OmegaConf.select(cfg, "run.gpus", default=None), device))
        t_src = _target_source(cfg)
        if cfg.target.gguf_sha256 and t_src.gguf_file:
            from .assets import sha256_file

            got = sha256_file(Path(t_src.path) / t_src.gguf_file)
            if got != cfg.target.gguf_sha256:
                raise ConfigError(f"{t_src.gguf_file}: SHA-256 {got} != expected {cfg.target.gguf_sha256}; refusing to load")
        load_t0 = time.perf_counter()
        tokenizer, target = _load_target(t_src, dtype, device, cfg.target.trust_remote_code, gpus)
        stop_ids = models.stop_token_ids(tokenizer, target.config, list(cfg.target.eos_token_ids))
        # The drafter sits where the target's inputs go (its first GPU): contexts and borrowed embeddings are there.
        drafter = build_drafter(cfg, target, tokenizer, stop_ids, models.input_device(target), dtype)
        load_seconds = time.perf_counter() - load_t0
        target_id = lossless.target_identity(cfg, target)
        sampling = sampling_of(cfg)
        if not sampling.greedy:
            # Sampled vanilla outputs depend on the warp and the seed: never mix them with greedy references.
            target_id += "-" + hashlib.sha256(json.dumps([sampling.describe(), int(cfg.run.seed)]).encode()).hexdigest()[:8]
        vanilla_verifier = TargetVerifier(target, acceptance=acceptance_for(sampling))
        continuations: dict = {}
        continuation_store = None
        stored_passes = None
        if self.replay:
            from .replay import ContinuationStore, ReplayVerifier

            taps = tuple(getattr(drafter, "target_feature_layers", ()) or ())
            verifier = ReplayVerifier(lambda prompt: continuations[tuple(prompt)], device=vanilla_verifier.device,
                                      features_of=TargetVerifier(target, feature_layers=taps).sequence_features if taps else None,
                                      feature_layers=taps)
            continuation_store = ContinuationStore(target_id)
            if OmegaConf.select(cfg, "run.trajectories", default=False):
                from .drafters.stored_passes import attach
                from .trajectory_store import store_for_run

                stored_passes = attach(drafter, store_for_run(cfg, drafter, target_id))
        else:
            verifier = TargetVerifier(target, feature_layers=getattr(drafter, "target_feature_layers", ()),
                                      acceptance=acceptance_for(sampling))

        self.run_dir.mkdir(parents=True, exist_ok=True)
        partial = self.run_dir / "partial"
        partial.mkdir(exist_ok=True)
        _remove_stray_temporaries(self.run_dir)

        from tqdm.auto import tqdm

        tools = _Tools(
            tokenizer=tokenizer, verifier=verifier, vanilla_verifier=vanilla_verifier, drafter=drafter, stop_ids=stop_ids,
            reference_store=lossless.ReferenceStore(target_id=target_id, max_new_tokens=cfg.run.max_new_tokens),
            continuation_store=continuation_store, continuations=continuations, progress=tqdm,
            vanilla_policy=vanilla.policy(cfg.run.measure_vanilla, vanilla_verifier.device.type),
            vanilla_store=vanilla.VanillaStore(*vanilla.setup_key(target_id, cfg.run.max_new_tokens, vanilla_verifier.device)),
        )
        self._tools = tools
        done = sorted(p.name for p in partial.glob("q*.json"))
        if done:
            print(f"[failfast-bench] resuming {self.run_dir}: {len(done)} of {len(questions)} questions already done")
        q_bar = tqdm(questions, desc=f"{config_name(cfg.drafter)} questions", unit="q", disable=not cfg.run.progress)
        q_records: list[trace.QuestionRecord] = []
        r_records: list[trace.RoundRecord] = []
        warmed_up = False
        for index, question in enumerate(q_bar):
            done_file = partial / f"q{index:05d}.json"
            if done_file.exists():
                saved = json.loads(done_file.read_text())
                q_records.append(_question_record_from_dict(saved["question"]))
                r_records.extend(_round_records_from_dicts(saved["rounds"]))
                continue
            if not warmed_up:
                _warm_up(target, drafter, question, tools, cfg.dataset.template)
                warmed_up = True
            _set_seed(cfg.run.seed)
            q_rec, rounds = self._run_question(index, question, tools)
            trace.write_json({"question": dataclasses.asdict(q_rec), "rounds": [dataclasses.asdict(r) for r in rounds]}, done_file)
            q_records.append(q_rec)
            r_records.extend(rounds)
            q_bar.set_postfix(tau=f"{q_rec.n_out / max(q_rec.n_rounds, 1):.2f}", mismatches=sum(q.lossless_mismatch for q in q_records))

        if stored_passes is not None:
            stored_passes.flush()
            print(f"[failfast-bench] trajectory store {stored_passes.store.root}: {stored_passes.hits} passes reused, "
                  f"{stored_passes.misses} computed")
        return self._finish(q_records, r_records, source, tokenizer, target, drafter, load_seconds, manifest)

    # ------------------------------------------------------------------------------------------
    def _reference_for(self, qid: str, prompt: list[int], tools: _Tools, is_vanilla: bool):
        """(reference output or None, vanilla wall seconds or None) for one turn, before the drafter runs."""
        from .drafters.base import VanillaDrafter
        from .engine import generate

        cfg = self.cfg
        if self.replay:
            from . import replay

            length = replay.continuation_length(cfg)
            made = tools.continuation_store.get_or_make(
                qid, prompt, length, lambda known: replay.greedy_continuation(tools.vanilla_verifier, prompt, length, tools.stop_ids, known)
            )
            tools.continuations[tuple(prompt)] = made.tokens
            # Nothing is timed in replay: the target does not run, so no wall-clock baseline exists.
            return replay.vanilla_output(made.tokens, cfg.run.max_new_tokens, tools.stop_ids), None
        reference = tools.reference_store.get(qid, prompt)
        if tools.vanilla_policy == "never" or is_vanilla:
            return reference, None
        if tools.vanilla_policy == "reuse":
            earlier = tools.vanilla_store.get(qid, prompt)
            if earlier is not None:
                return earlier.output_tokens, earlier.wall_seconds
        van = generate(tools.vanilla_verifier, VanillaDrafter(), prompt, cfg.run.max_new_tokens, tools.stop_ids, question_id=qid,
                       seed=cfg.run.seed)
        tools.reference_store.put(qid, prompt, van.output_tokens)
        tools.vanilla_store.put(qid, prompt, van.output_tokens, van.wall_seconds, str(self.run_dir))
        return van.output_tokens, van.wall_seconds

    def _run_question(self, index, question, tools: _Tools):
        from . import data
        from .engine import first_divergence, generate

        cfg = self.cfg
        tokenizer = tools.tokenizer
        is_vanilla = cfg.drafter.name == "vanilla"
        turns = question.turns if cfg.dataset.turns == "both" else question.turns[:1]
        answers: list[str] = []
        all_rounds: list[trace.RoundRecord] = []
        reused_before = len(tools.vanilla_store.reused) if tools.vanilla_store is not None else 0
        totals = dict(wall=0.0, prefill=0.0, drafter=0.0, verify=0.0, forward=0.0, vanilla=0.0)
        sample_totals: dict = {}  # T > 0: the rejection sampler's sums over the question's turns
        output_all: list[int] = []
        reference_all: list[int] = []
        vanilla_n_out = 0
        stopped = False
        prompt_first: list[int] = []
        for turn_index in range(len(turns)):
            prompt = data.render_conversation(tokenizer, turns[: turn_index + 1], answers, cfg.dataset.template)
            if turn_index == 0:
                prompt_first = prompt
            qid = question.id if len(turns) == 1 else f"{question.id}#turn{turn_index + 1}"
            reference, vanilla_seconds = self._reference_for(qid, prompt, tools, is_vanilla)
            r_bar = tools.progress(total=cfg.run.max_new_tokens, desc=f"  {qid}", unit="tok", leave=False, disable=not cfg.run.progress)
            gen = generate(tools.verifier, tools.drafter, prompt, cfg.run.max_new_tokens, tools.stop_ids, question_id=qid,
                           on_round=lambda r: r_bar.update(r.committed), seed=cfg.run.seed)
            r_bar.close()
            if is_vanilla and not self.replay:
                vanilla_seconds = gen.wall_seconds
                tools.vanilla_store.put(qid, prompt, gen.output_tokens, gen.wall_seconds, str(self.run_dir))
                if reference is None:
                    reference = gen.output_tokens
                    tools.reference_store.put(qid, prompt, reference)
            totals["wall"] += gen.wall_seconds
            totals["prefill"] += gen.prefill_seconds
            totals["drafter"] += gen.drafter_seconds
            totals["verify"] += gen.verify_seconds
            totals["forward"] += gen.forward_seconds
            if vanilla_seconds is not None:
                totals["vanilla"] += vanilla_seconds
            output_all.extend(gen.output_tokens)
            if reference is not None:
                reference_all.extend(reference)
                vanilla_n_out += len(reference)
            all_rounds.extend(gen.rounds)
            for key, value in gen.extra.get("sampling", {}).items():
                sample_totals[key] = sample_totals.get(key, 0) + value
            stopped = gen.stopped_by_eos
            # The next turn continues from the target's own greedy answer (identical when lossless).
            answers.append(tokenizer.decode(reference if reference is not None else gen.output_tokens, skip_special_tokens=True))
        divergence = first_divergence(output_all, reference_all) if reference_all else None
        # T > 0: lossless means equal in distribution; a sampled output differing from the sampled vanilla one is
        # expected, so it is recorded for information and never counted as a mismatch.
        sampled = not sampling_of(cfg).greedy
        have_vanilla = (tools.vanilla_policy != "never" or is_vanilla) and not self.replay
        q_rec = trace.QuestionRecord(
            question_id=question.id,
            question_index=index,
            prompt_len=len(prompt_first),
            prompt_sha256=hashlib.sha256(json.dumps(prompt_first).encode()).hexdigest(),
            output_tokens=output_all,
            n_out=len(output_all),
            n_rounds=len(all_rounds),
            accepted_total=sum(r.accepted_len for r in all_rounds),
            drafted_total=sum(r.draft_len for r in all_rounds),
            drafter_passes=sum(r.drafter_passes for r in all_rounds),
            stopped_by_eos=stopped,
            wall_seconds=totals["wall"],
            prefill_seconds=totals["prefill"],
            drafter_seconds=totals["drafter"],
            verify_seconds=totals["verify"],
            forward_seconds=totals["forward"],
            vanilla_wall_seconds=totals["vanilla"] if have_vanilla else None,
            vanilla_n_out=vanilla_n_out if reference_all else None,
            lossless_mismatch=divergence is not None and not sampled,
            first_divergence=None if sampled else divergence,
            output_text=tokenizer.decode(output_all, skip_special_tokens=False),
            extra={
                "turns": len(turns), "reference_checked": bool(reference_all), **({"replay": True} if self.replay else {}),
                **({"sampling": _sampling_record(sample_totals, divergence)} if sampled else {}),
                **({"vanilla_reused": True} if tools.vanilla_store is not None and len(tools.vanilla_store.reused) > reused_before else {}),
            },
        )
        return q_rec, all_rounds

    # ------------------------------------------------------------------------------------------
    def _finish(self, q_records, r_records, source, tokenizer, target, drafter, load_seconds, manifest) -> dict:
        from . import models

        cfg = self.cfg
        rounds = trace.records_frame(r_records, trace.ROUND_COLUMNS)
        questions = trace.records_frame(q_records, trace.QUESTION_COLUMNS)
        if accuracy.requested(cfg):
            questions = accuracy.score_frame(questions, {q.id: q for q in self._questions}, cfg.dataset.name, cfg.run.max_new_tokens,
                                             tokenizer, bool(cfg.eval.execute_code), accuracy.limits_from(cfg))
        summary, questions = build_summary(
            cfg, questions, rounds, run_dir=self.run_dir, replay=self.replay, load_seconds=load_seconds, config_hash=self.config_hash,
            # null, or one line saying how the questions differ from the requested ones (packaged GSM8K sample).
            extra={"dataset_fallback": getattr(source, "fallback", None)},
        )
        if accuracy.requested(cfg):
            summary["accuracy"] = accuracy.summarize(questions, cfg.dataset.name, cfg.run.max_new_tokens)
        if not sampling_of(cfg).greedy:
            summary["sampling"] = _sampling_summary(cfg, q_records)
        man = manifest.build_manifest(cfg, source=source, target=target, drafter=drafter, run_hash=summary["config_hash"])
        man["target_model"] = models.model_identity(target)
        tools = getattr(self, "_tools", None)
        if tools is not None and not self.replay:
            man["vanilla_reference"] = tools.vanilla_store.manifest(tools.vanilla_policy)
        # The dtypes that ran (auto resolved on this device) and the dtype the target's weights were loaded in.
        man["dtype"] = {"run": cfg.run.dtype, "drafter": cfg.drafter.get("dtype", cfg.run.dtype), "target_weights": man["target_model"]["dtype"]}
        trace.write_parquet(rounds, self.run_dir / "rounds.parquet")
        trace.write_parquet(questions, self.run_dir / "questions.parquet")
        trace.write_text(OmegaConf.to_yaml(cfg, resolve=True), self.run_dir / "config.yaml")
        trace.write_json(man, self.run_dir / "manifest.json")
        trace.write_json(summary, self.run_dir / "summary.json")
        trace.write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n", self.run_dir / trace.COMPLETE_MARKER)
        shutil.rmtree(self.run_dir / "partial", ignore_errors=True)
        from .loggers import log_run

        log_run(cfg, summary, rounds, self.run_dir)
        return summary


def build_summary(cfg, questions, rounds, *, run_dir, replay: bool, load_seconds, config_hash: str,
                  profiles: Optional[list[HardwareProfile]] = None, extra: Optional[dict] = None):
    """(summary, questions with their derived columns) of a finished run, from its trace alone.

    Every profile prices the trace under both accountings (``summary["accounting"]["paper" | "strict"]``,
    keyed by profile); ``metrics`` / ``metrics_by_profile`` repeat the one ``run.accounting`` headlines.
    Degenerate questions and the load guard are computed here too. No model is needed, so stored traces
    can be summarised again (:mod:`failfast_bench.resummarize`). Undefined values are ``None`` (strict JSON).
    """
    from . import metrics

    selected = HardwareProfile.from_mapping(OmegaConf.to_container(cfg.hardware, resolve=True))
    profiles = profiles if profiles is not None else _profiles(selected, cfg.target.latency_key)
    headline = str(OmegaConf.select(cfg, "run.accounting", default="paper") or "paper")
    tolerance = float(OmegaConf.select(cfg, "run.load_tolerance", default=metrics.DEFAULT_LOAD_TOLERANCE))
    max_new = int(cfg.run.max_new_tokens)
    questions = metrics.with_question_flags(questions, max_new)
    by_mode: dict[str, dict] = {}
    for mode in metrics.ACCOUNTING_MODES:
        by_profile = {}
        for profile in profiles:
            try:
                by_profile[profile.name] = metrics.summarize(questions, rounds, profile, cfg.target.latency_key,
                                                             cfg.drafter.name, mode, max_new)
            except KeyError as exc:
                by_profile[profile.name] = {"error": str(exc)}
        by_mode[mode] = by_profile
    degenerate = questions[questions["degenerate"]]
    summary = {
        "run_dir": str(run_dir),
        "config_name": config_name(cfg.drafter),
        "config_hash": config_hash,
        "target": cfg.target.name,
        "latency_key": cfg.target.latency_key,
        "dataset": cfg.dataset.name,
        "drafter": cfg.drafter.name,
        "primary_profile": selected.name,
        "replay": bool(replay),
        "max_new_tokens": max_new,
        "headline_accounting": headline,
        "metrics": by_mode[headline][selected.name],
        "metrics_by_profile": by_mode[headline],
        "accounting": {
            "headline": headline,
            "definitions": ACCOUNTING_DEFINITIONS,
            **by_mode,
        },
        "degenerate": {
            "rule": (f"target output ends in a loop: smallest period p <= {metrics.LOOP_MAX_PERIOD} such that the last "
                     f">= max({metrics.LOOP_MIN_TOKENS}, {metrics.LOOP_MIN_FRACTION:g} x length) output tokens repeat "
                     f"with period p (metrics.loop_period)"),
            "count": int(len(degenerate)),
            "questions": [{"question_id": str(q), "loop_period": int(p)}
                          for q, p in zip(degenerate["question_id"], degenerate["loop_period"])],
        },
        "load_guard": metrics.load_guard(questions, profiles, cfg.target.latency_key, str(cfg.run.dtype),
                                         int(cfg.run.threads) if cfg.run.threads else None, tolerance),
        "stop_reasons": rounds["stop_reason"].value_counts().to_dict() if len(rounds) else {},
        "draft_len": _distribution(rounds["draft_len"]) if len(rounds) else {},
        "load_seconds": load_seconds,
        **(extra or {}),
    }
    return trace.strict_json_value(summary), questions


def headline(summary: dict, accounting: str) -> dict:
    """``summary`` with ``metrics`` / ``metrics_by_profile`` taken from ``accounting`` (both are stored, so a
    complete run asked for under the other accounting is reported without rerunning; the file is unchanged)."""
    stored = summary.get("accounting", {})
    if accounting == summary.get("headline_accounting", "paper") or accounting not in stored:
        return summary
    by_profile = stored[accounting]
    primary = summary.get("primary_profile")
    return {**summary, "headline_accounting": accounting, "metrics_by_profile": by_profile,
            "metrics": by_profile.get(primary, summary["metrics"]), "accounting": {**stored, "headline": accounting}}


ACCOUNTING_DEFINITIONS = {
    "paper": ("N_out counts every token of the last round, including those past max_new_tokens (the authors' "
              "code); acceptance denominator = the draft's nominal length (draft_len)"),
    "strict": ("N_out cut at max_new_tokens per turn; acceptance denominator = tokens actually drafted "
               "(len(draft_tokens)); the last round's modeled time (its drafter passes and verification) is "
               "charged in full; wall-clock times are as measured"),
}


def _sampling_record(totals: dict, divergence: Optional[int]) -> dict:
    """Per-question statistics of speculative sampling (questions.parquet ``extra``)."""
    n = int(totals.get("examined", 0))
    return {
        "examined": n,  # draft candidates the rejection sampler examined (chain positions, tree siblings)
        "mean_accept_prob": totals["accept_prob_sum"] / n if n else None,  # mean of min(1, p(x)/q(x))
        "mean_overlap": totals["overlap_sum"] / n if n else None,  # mean of sum_y min(p(y), q(y))
        "first_difference_from_vanilla_sample": divergence,  # information only: not a failure at T > 0
    }


def _sampling_summary(cfg, q_records) -> dict:
    stats = [q.extra.get("sampling", {}) for q in q_records]
    examined = sum(int(s.get("examined", 0)) for s in stats)

    def pooled(key: str) -> Optional[float]:
        return sum((s.get(key) or 0.0) * int(s.get("examined", 0)) for s in stats) / examined if examined else None

    return {
        **sampling_of(cfg).describe(),
        "seed": int(cfg.run.seed),
        "lossless_check": "distributional: at T > 0 outputs are not expected to equal vanilla's tokens; "
                          "token mismatches are not counted (tests/test_sampling.py checks the distribution)",
        "examined": examined,
        "mean_accept_prob": pooled("mean_accept_prob"),
        "mean_overlap": pooled("mean_overlap"),
        "questions_differing_from_vanilla_sample": sum(s.get("first_difference_from_vanilla_sample") is not None for s in stats),
    }


def _distribution(series) -> dict:
    return {
        "min": int(series.min()),
        "median": float(series.median()),
        "max": int(series.max()),
        "mean": float(series.mean()),
    }


def _num(value) -> Optional[float]:
    """A stored metric as a float, or None when undefined (null in strict JSON, NaN in memory, absent)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def _times(value) -> str:
    value = _num(value)
    return "n/a" if value is None else f"{value:.2f}x"  # undefined: not measured (replay, or no vanilla run)


def _ci(m: dict, key: str) -> str:
    lo, hi = _num(m.get(f"{key}_pooled_ci_low")), _num(m.get(f"{key}_pooled_ci_high"))
    return "[n/a]" if lo is None or hi is None else f"[{lo:.2f}, {hi:.2f}]"


def _fixed(value, fmt: str) -> str:
    value = _num(value)
    return "n/a" if value is None else format(value, fmt)


def _aggregate_line(m: dict, key: str, suffix: str = "") -> str:
    """mean / median / pooled [95% CI of pooled] of one metric, labelled."""
    get = lambda stat: m.get(f"{key}{stat}{suffix}")  # noqa: E731
    lo, hi = _num(get("_pooled_ci_low")), _num(get("_pooled_ci_high"))
    ci = "n/a" if lo is None or hi is None else f"{lo:.2f}-{hi:.2f}"
    return f"mean {_times(get(''))}, median {_times(get('_median'))}, pooled {_times(get('_pooled'))} (95% CI {ci})"


def format_summary(summary: dict) -> str:
    """The table printed at the end of a run.

    Modeled speedups per profile in three aggregate forms (mean over questions = the paper's convention;
    median; pooled = total modeled vanilla time / total modeled time, with its 95 % bootstrap CI); the
    measured wall-clock numbers on one labelled line (per-question mean, median, pooled wall-time ratio
    and throughput ratio side by side, so no single one is read as the result); the other accounting;
    degenerate questions and the headline without them; the load guard.
    """
    headline = summary.get("headline_accounting", "paper")
    lines = [
        f"run: {summary['target']} / {summary['dataset']} / {summary['config_name']}",
        f"results: {summary['run_dir']}",
    ]
    if summary.get("replay"):
        lines.append("replay: verdicts from the target's cached greedy continuation (measured speedup n/a; modeled exact)")
    if summary.get("sampling"):
        s = summary["sampling"]
        rate = "" if s.get("mean_accept_prob") is None else (
            f"; per drafted token: mean min(1, p/q) {s['mean_accept_prob']:.3f}, mean overlap sum min(p, q) {s['mean_overlap']:.3f}")
        lines.append(f"sampling: T={s['temperature']:g} top_p={s['top_p']:g} top_k={s['top_k']} seed={s['seed']}: lossless in "
                     f"distribution, not token for token (equality with vanilla's sampled tokens is not expected; mismatch is not a check){rate}")
    lines.append(f"accounting: {headline} ({summary.get('accounting', {}).get('definitions', {}).get(headline, 'paper convention')})")
    lines.append("modeled speedup: mean over questions (paper) | median | pooled = total modeled vanilla time / total "
                 "modeled time, with its 95% bootstrap CI over questions")
    header = (f"{'profile':<14} {'accept':>7} {'tau':>6} {'passes/rd':>9} | {'mean':>7} {'median':>7} {'pooled':>7} "
              f"{'95% CI':>14} | {'refined':>8} {'pooled':>7} | {'mismatch':>8}")
    lines.append(header)
    key = summary.get("latency_key", summary["target"])
    fallbacks = []
    for name, m in summary["metrics_by_profile"].items():
        if "error" in m:
            lines.append(f"{name:<14} (not priced: {m['error']})")
            continue
        priced_as = m.get("priced_as_target", key)
        if priced_as != key:
            if name != summary.get("primary_profile"):
                continue  # another target's latencies (summaries written before such rows were dropped)
            fallbacks.append(f"* {name} has no {key} latencies: priced as its fallback target {priced_as}")
            name += "*"
        lines.append(
            f"{name:<14} {_fixed(m.get('acceptance_rate'), '.3f'):>7} {_fixed(m.get('tokens_per_round'), '.2f'):>6} "
            f"{_fixed(m.get('drafter_passes_per_round'), '.2f'):>9} | {_times(m.get('modeled_speedup')):>7} "
            f"{_times(m.get('modeled_speedup_median')):>7} {_times(m.get('modeled_speedup_pooled')):>7} "
            f"{_ci(m, 'modeled_speedup'):>14} | {_times(m.get('modeled_speedup_refined')):>8} "
            f"{_times(m.get('modeled_speedup_refined_pooled')):>7} | {int(m.get('lossless_mismatches', 0)):>8d}"
        )
    lines.extend(fallbacks)
    m = summary["metrics"]
    if _num(m.get("measured_speedup")) is None and _num(m.get("measured_speedup_pooled")) is None:
        lines.append("measured (wall clock): n/a (no vanilla timings in this run)")
    else:
        lines.append(
            f"measured (wall clock, this machine): per-question mean {_times(m.get('measured_speedup'))} | median "
            f"{_times(m.get('measured_speedup_median'))} | pooled (total vanilla wall / total wall) "
            f"{_times(m.get('measured_speedup_pooled', m.get('measured_speedup_total')))} {_ci(m, 'measured_speedup')} | "
            f"throughput ratio {_times(m.get('throughput_ratio_pooled'))} ({_fixed(m.get('tokens_per_second'), '.1f')} tok/s "
            f"vs vanilla {_fixed(m.get('vanilla_tokens_per_second'), '.1f')} tok/s)"
        )
    accounting = summary.get("accounting", {})
    primary = summary.get("primary_profile")
    for mode in ("paper", "strict"):
        other = accounting.get(mode, {}).get(primary) if mode != headline else None
        if other and "error" not in other:
            lines.append(
                f"{mode} accounting ({primary}): modeled {_aggregate_line(other, 'modeled_speedup')}; "
                f"tau mean {_fixed(other.get('tokens_per_round'), '.2f')} pooled {_fixed(other.get('tokens_per_round_pooled'), '.2f')}; "
                f"acceptance mean {_fixed(other.get('acceptance_rate'), '.3f')} pooled {_fixed(other.get('acceptance_rate_pooled'), '.3f')}"
            )
    degenerate = summary.get("degenerate")
    if degenerate is not None:
        if degenerate.get("count"):
            which = ", ".join(f"{d['question_id']} (period {d['loop_period']})" for d in degenerate["questions"])
            lines.append(f"degenerate questions (target output loops; kept in every number above): "
                         f"{degenerate['count']} of {m.get('n_questions', '?')}: {which}")
            suffix = "_excluding_degenerate"
            text = f"  without them ({primary}): modeled {_aggregate_line(m, 'modeled_speedup', suffix)}"
            if _num(m.get(f"measured_speedup_pooled{suffix}")) is not None:
                text += (f"; measured mean {_times(m.get(f'measured_speedup{suffix}'))}, pooled "
                         f"{_times(m.get(f'measured_speedup_pooled{suffix}'))}, throughput ratio "
                         f"{_times(m.get(f'throughput_ratio_pooled{suffix}'))}")
            lines.append(text)
        else:
            lines.append("degenerate questions (target output loops): none")
    guard = summary.get("load_guard")
    if guard and guard.get("applicable"):
        state = "FLAGGED: " + "; ".join(guard["reasons"]) if guard.get("flagged") else "ok"
        expected = _num(guard.get("expected_tokens_per_second"))
        lines.append(
            f"load guard: {state} (vanilla {_fixed(guard.get('vanilla_tokens_per_second_pooled'), '.1f')} tok/s, "
            f"CV {_fixed(100 * (_num(guard.get('vanilla_tokens_per_second_cv')) or 0.0), '.0f')}% across questions; "
            + (f"profile expects {expected:.1f} tok/s" if expected else guard.get("expected_note", "no profile expectation"))
            + f"; tolerance {100 * float(guard.get('tolerance', 0.15)):.0f}%)"
        )
    lines.append(f"questions: {m['n_questions']}  harness overhead: {_fixed(100 * (_num(m.get('harness_overhead_share')) or float('nan')), '.1f')}% of wall time")
    if summary.get("stop_reasons"):
        lines.append("draft stop reasons: " + ", ".join(f"{k}={v}" for k, v in sorted(summary["stop_reasons"].items())))
    if summary.get("draft_len"):
        d = summary["draft_len"]
        lines.append(f"draft length: min {d['min']} / median {d['median']:g} / max {d['max']} / mean {d['mean']:.2f}")
    if summary.get("accuracy"):
        lines.append(accuracy.format_line(summary["accuracy"]))
    return "\n".join(lines)


def run(cfg) -> dict:
    preflight(cfg)
    summary = Runner(cfg).run()
    print(format_summary(summary))
    return summary
