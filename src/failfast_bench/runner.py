"""Run one configuration end to end: questions → (vanilla reference, speculative run) → traces → summary.

Results go to a deterministic directory ``<run.output_dir>/<target>/<dataset>/<config name>__<hash>``.
Each finished question is written atomically under ``partial/`` so a killed run resumes where it stopped;
the final files are written atomically and ``COMPLETE`` is written last.
"""
from __future__ import annotations

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

from . import trace, vanilla
from .config import ConfigError, validate
from .drafters import config_name, resolve_drafter_model
from .drafters.draft_vocab import VOCAB_FILE
from .latency import HardwareProfile, available_profiles, load_profile
from .sampling import sampling_of

# Keys that do not change results: excluded from the config hash.
_UNHASHED_RUN_KEYS = ("progress", "output_dir", "skip_if_complete", "threads")
# Options that never change what a run computes (how it reports or refuses), excluded from the hash.
_UNHASHED_KEYS = (("dataset", "fallback"),)
# Options added after runs were committed: at their default they leave the hash (and the run directory) as it was.
_HASHED_ONLY_IF_SET = (
    ("drafter", "draft_vocab", False), ("dataset", "revision", None),
    ("run", "temperature", 0.0), ("run", "top_p", 1.0), ("run", "top_k", 0),
)


def config_hash(cfg) -> str:
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("logger", None)
    container.pop("hardware", None)  # pricing only: re-priced by report without rerunning
    for key in _UNHASHED_RUN_KEYS:
        container.get("run", {}).pop(key, None)
    if "measure_vanilla" in container.get("run", {}):
        # Reused or re-measured, the reference is the same experiment; only "never" changes what a run holds.
        container["run"]["measure_vanilla"] = vanilla.measures(container["run"]["measure_vanilla"])
    for group, key in _UNHASHED_KEYS:
        container.get(group, {}).pop(key, None)
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
    """SHA-256 of a local drafter's weight files (None for vanilla, the target itself, or a hub id)."""
    try:
        model = resolve_drafter_model(cfg)
    except ConfigError:
        return None
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


def run_dir_for(cfg) -> Path:
    name = f"{config_name(cfg.drafter)}__{config_hash(cfg)[:10]}"
    return Path(cfg.run.output_dir) / cfg.target.name / cfg.dataset.name / name


def preflight(cfg) -> dict[str, Any]:
    """Everything checkable without loading a model: values, drafter source, dataset size, assets."""
    from . import assets, data

    validate(cfg)
    if OmegaConf.select(cfg, "run.replay", default=False):
        from .replay import check_replayable

        check_replayable(cfg)
    drafter_model = resolve_drafter_model(cfg)
    # The model first: on a fresh machine its fetch command is the one to show.
    for name in cfg.target.assets:
        assets.require(name)
    size = data.dataset_size(cfg.dataset)
    if cfg.dataset.num_questions is not None and cfg.dataset.num_questions > size and not cfg.dataset.question_ids:
        raise ConfigError(f"dataset.num_questions={cfg.dataset.num_questions} but {cfg.dataset.name} has {size} questions")
    if drafter_model not in (None, "target"):
        check_drafter_tokenizer(cfg, drafter_model)
    return {"dataset_size": size}


def check_drafter_tokenizer(cfg, drafter_model: str) -> None:
    """Load only the two tokenizers (seconds) and refuse a drafter that maps tokens to other ids."""
    from . import models
    from .drafters import _maybe_tokenizer

    d_src = models.resolve_source(drafter_model)
    d_tok = _maybe_tokenizer(d_src, models.load_tokenizer)
    if d_tok is None:
        return  # project drafters share the target's embeddings and tokenizer by construction
    t_src = models.resolve_source(cfg.target.model, cfg.target.gguf_file, cfg.target.revision)
    models.check_shared_tokenizer(models.load_tokenizer(t_src, cfg.target.trust_remote_code), d_tok, drafter_model)


def _set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _profiles(selected: HardwareProfile) -> list[HardwareProfile]:
    """The run's own profile first, then every other profile in conf/hardware (priced side by side)."""
    out = [selected]
    for name in available_profiles():
        if name != selected.name:
            try:
                out.append(load_profile(name))
            except Exception:  # noqa: BLE001 - a broken optional profile must not sink a run
                continue
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


def _load_target(t_src, dtype, device, trust_remote_code: bool):
    from . import models

    key = (t_src.path, t_src.gguf_file, t_src.revision, str(dtype), str(device), bool(trust_remote_code))
    if key not in _TARGET_CACHE:
        _TARGET_CACHE.clear()
        tokenizer = models.load_tokenizer(t_src, trust_remote_code)
        model = models.load_causal_lm(t_src, dtype, device, trust_remote_code)
        _TARGET_CACHE[key] = (tokenizer, model)
    return _TARGET_CACHE[key]


def _remove_stray_temporaries(run_dir: Path) -> None:
    """A kill during an atomic write leaves ``.<name>.*.partial`` files; they never count as results."""
    for stray in list(run_dir.glob(".*.partial")) + list((run_dir / "partial").glob(".*.partial")):
        stray.unlink(missing_ok=True)


class Runner:
    def __init__(self, cfg):
        self.cfg = cfg
        self.run_dir = run_dir_for(cfg)
        self.replay = bool(OmegaConf.select(cfg, "run.replay", default=False))

    # ------------------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        if cfg.run.skip_if_complete and trace.is_complete(self.run_dir):
            summary = json.loads((self.run_dir / "summary.json").read_text())
            shutil.rmtree(self.run_dir / "partial", ignore_errors=True)  # killed between COMPLETE and clean-up
            print(f"[failfast-bench] complete results exist, skipping: {self.run_dir}")
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
        device = models.pick_device(cfg.run.device)
        dtype = models.pick_dtype(cfg.run.dtype, device)
        t_src = models.resolve_source(cfg.target.model, cfg.target.gguf_file, cfg.target.revision)
        if cfg.target.gguf_sha256 and t_src.gguf_file:
            from .assets import sha256_file

            got = sha256_file(Path(t_src.path) / t_src.gguf_file)
            if got != cfg.target.gguf_sha256:
                raise ConfigError(f"{t_src.gguf_file}: SHA-256 {got} != expected {cfg.target.gguf_sha256}; refusing to load")
        load_t0 = time.perf_counter()
        tokenizer, target = _load_target(t_src, dtype, device, cfg.target.trust_remote_code)
        stop_ids = models.stop_token_ids(tokenizer, target.config, list(cfg.target.eos_token_ids))
        drafter = build_drafter(cfg, target, tokenizer, stop_ids, device, dtype)
        load_seconds = time.perf_counter() - load_t0
        target_id = lossless.target_identity(cfg, target)
        sampling = sampling_of(cfg)
        if not sampling.greedy:
            # Sampled vanilla outputs depend on the warp and the seed: never mix them with greedy references.
            target_id += "-" + hashlib.sha256(json.dumps([sampling.describe(), int(cfg.run.seed)]).encode()).hexdigest()[:8]
        vanilla_verifier = TargetVerifier(target, acceptance=acceptance_for(sampling))
        continuations: dict = {}
        continuation_store = None
        if self.replay:
            from .replay import ContinuationStore, ReplayVerifier, check_replayable_drafter

            check_replayable_drafter(drafter)
            verifier = ReplayVerifier(lambda prompt: continuations[tuple(prompt)], device=vanilla_verifier.device)
            continuation_store = ContinuationStore(target_id)
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
        for index, question in enumerate(q_bar):
            done_file = partial / f"q{index:05d}.json"
            if done_file.exists():
                saved = json.loads(done_file.read_text())
                q_records.append(_question_record_from_dict(saved["question"]))
                r_records.extend(_round_records_from_dicts(saved["rounds"]))
                continue
            _set_seed(cfg.run.seed)
            q_rec, rounds = self._run_question(index, question, tools)
            trace.write_json({"question": dataclasses.asdict(q_rec), "rounds": [dataclasses.asdict(r) for r in rounds]}, done_file)
            q_records.append(q_rec)
            r_records.extend(rounds)
            q_bar.set_postfix(tau=f"{q_rec.n_out / max(q_rec.n_rounds, 1):.2f}", mismatches=sum(q.lossless_mismatch for q in q_records))

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
        from . import metrics, models

        cfg = self.cfg
        rounds = trace.records_frame(r_records, trace.ROUND_COLUMNS)
        questions = trace.records_frame(q_records, trace.QUESTION_COLUMNS)
        selected = HardwareProfile.from_mapping(OmegaConf.to_container(cfg.hardware, resolve=True))
        by_profile = {}
        for profile in _profiles(selected):
            try:
                by_profile[profile.name] = metrics.summarize(questions, rounds, profile, cfg.target.latency_key, cfg.drafter.name)
            except KeyError as exc:
                by_profile[profile.name] = {"error": str(exc)}
        summary = {
            "run_dir": str(self.run_dir),
            "config_name": config_name(cfg.drafter),
            "config_hash": config_hash(cfg),
            "target": cfg.target.name,
            "dataset": cfg.dataset.name,
            "drafter": cfg.drafter.name,
            "primary_profile": selected.name,
            "replay": self.replay,
            "metrics": by_profile[selected.name],
            "metrics_by_profile": by_profile,
            "stop_reasons": rounds["stop_reason"].value_counts().to_dict() if len(rounds) else {},
            "draft_len": _distribution(rounds["draft_len"]) if len(rounds) else {},
            "load_seconds": load_seconds,
            # null, or one line saying how the questions differ from the requested ones (packaged GSM8K sample).
            "dataset_fallback": getattr(source, "fallback", None),
        }
        if not sampling_of(cfg).greedy:
            summary["sampling"] = _sampling_summary(cfg, q_records)
        man = manifest.build_manifest(cfg, source=source, target=target, drafter=drafter, run_hash=summary["config_hash"])
        man["target_model"] = models.model_identity(target)
        tools = getattr(self, "_tools", None)
        if tools is not None and not self.replay:
            man["vanilla_reference"] = tools.vanilla_store.manifest(tools.vanilla_policy)
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


def _times(value: float) -> str:
    return "n/a" if value != value else f"{value:.2f}x"  # NaN: not measured (replay, or no vanilla run)


def format_summary(summary: dict) -> str:
    """The table printed at the end of a run."""
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
    header = f"{'profile':<14} {'accept':>7} {'tau':>6} {'passes/rd':>9} {'modeled':>8} {'refined':>8} {'measured':>9} {'mismatch':>8}"
    lines.append(header)
    for name, m in summary["metrics_by_profile"].items():
        if "error" in m:
            lines.append(f"{name:<14} (not priced: {m['error']})")
            continue
        lines.append(
            f"{name:<14} {m['acceptance_rate']:>7.3f} {m['tokens_per_round']:>6.2f} {m['drafter_passes_per_round']:>9.2f} "
            f"{m['modeled_speedup']:>7.2f}x {m['modeled_speedup_refined']:>7.2f}x {_times(m['measured_speedup']):>9} "
            f"{m['lossless_mismatches']:>8d}"
        )
    m = summary["metrics"]
    lines.append(
        f"questions: {m['n_questions']}  tokens/s: {m['tokens_per_second']:.1f} (vanilla {m['vanilla_tokens_per_second']:.1f})  "
        f"harness overhead: {100 * m['harness_overhead_share']:.1f}% of wall time"
    )
    if summary.get("stop_reasons"):
        lines.append("draft stop reasons: " + ", ".join(f"{k}={v}" for k, v in sorted(summary["stop_reasons"].items())))
    if summary.get("draft_len"):
        d = summary["draft_len"]
        lines.append(f"draft length: min {d['min']} / median {d['median']:g} / max {d['max']} / mean {d['mean']:.2f}")
    return "\n".join(lines)


def run(cfg) -> dict:
    preflight(cfg)
    summary = Runner(cfg).run()
    print(format_summary(summary))
    return summary
