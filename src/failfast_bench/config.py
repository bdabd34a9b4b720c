"""Structured (typed) configuration of a run and its validation.

Hydra composes ``conf/`` into :class:`RunConfig`; OmegaConf refuses unknown keys and wrong types at
composition time. :func:`validate` then refuses impossible values (τ outside [0, 1], N_max < N, ...)
before any model or dataset is loaded, raising :class:`ConfigError` with one line that says what to do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class ConfigError(ValueError):
    """A configuration value that cannot work; the message is meant for the user as is."""


@dataclass
class TargetConfig:
    """The autoregressive target (verifier).

    ``model`` is a hub id (``Qwen/Qwen2.5-7B-Instruct``), a local directory, or ``asset:<name>`` for a
    model from the offline asset cache (see :mod:`failfast_bench.assets`).
    """

    name: str = MISSING
    model: str = MISSING
    gguf_file: Optional[str] = None
    revision: Optional[str] = None
    # Extra stop ids besides the tokenizer's eos (SmolLM2: <|im_end|> = 2; Qwen2.5: 151645).
    eos_token_ids: List[int] = field(default_factory=list)
    # Key of this target in hardware profiles' per-target tables.
    latency_key: str = "${.name}"
    trust_remote_code: bool = False
    # Optional SHA-256 of a GGUF that must match before loading (third-party repackagings).
    gguf_sha256: Optional[str] = None
    # Which assets feed this target (``python -m failfast_bench.assets fetch <names>``).
    assets: List[str] = field(default_factory=list)
    # Default drafter model per drafter family when ``drafter.model`` is null.
    drafters: Dict[str, Optional[str]] = field(default_factory=dict)


@dataclass
class DrafterConfig:
    """One schema for every drafter family; ``name`` picks the implementation.

    Fields unused by a family are ignored by it (they keep their defaults in the resolved config).
    """

    name: str = "vanilla"  # vanilla | ar | dllm | failfast | eagle3
    # Hub id / local dir / ``asset:<name>`` / ``shipped:<name>`` / ``target`` (the target itself).
    model: Optional[str] = None
    # Hub ids only: branch, tag or commit to load (null = the default branch). The resolved commit is recorded
    # in the manifest and hashed into the run directory either way.
    revision: Optional[str] = None
    # Fixed speculation length (ar, dllm, eagle3 chain).
    spec_len: int = 8
    # Dynamic length (FailFast, dynamic AR): initial window and step N, cap N_max, stop threshold τ.
    dynamic: bool = False
    tau: float = 0.45
    n: int = 10
    n_max: int = 60
    # dLLM parallel-unmasking threshold θ and block geometry.
    theta: float = 0.9
    block_size: int = 32
    sub_block_size: int = 8
    mask_token_id: Optional[int] = None
    # Max new tokens one drafter call may generate (paper: 3 blocks = 96).
    budget: int = 96
    # FailFast semantics: "faithful" (authors' code) or "clean" (own-token confidences, cap on length).
    # dllm and failfast: at a block-aligned context with a cache ending there, faithful re-prefills like the
    # authors' code; clean reuses the cache and the token its last cache update predicted (one pass fewer).
    mode: str = "faithful"
    reuse_kv: bool = True
    # How a reused drafter KV cache is matched to the new context: "exact" (paper: reuse only when the
    # cached length equals the complete-block prefix, else re-prefill from 0), "crop" (keep the longest
    # matching block prefix), "off". null = exact when reuse_kv else off.
    kv_policy: Optional[str] = None
    reuse_drafts: bool = False
    # dllm only: the length policy that stops a draft (drafters/length_policies/). null = the family's own rule
    # (spec_len for dllm; "fixed" names it explicitly and hashes like null); "cost_aware" widens by n up to n_max
    # while the expected gain pays for the extension under the run's hardware profile; "adaptive" is DiffuSpec's ADL.
    # This and every key below up to the EAGLE-3 ones are hashed only when set, so earlier runs keep their directories.
    policy: Optional[str] = None
    # policy=adaptive: DiffuSpec's adaptive draft length (drafters/length_policies/adaptive.py): the next length is
    # clip(floor(EMA of generated length) + delta if EMA accepted >= EMA generated, adl_k_min, adl_k_max), EMAs
    # with weight adl_rho on the newest round. Defaults are the paper's (Appendix A).
    adl_k_min: int = 20
    adl_k_max: int = 30
    adl_delta: int = 10
    adl_rho: float = 0.5
    # dllm and failfast: DiffuSpec's causal-consistency path search (drafters/path_search.py): each denoising pass
    # takes the best left-to-right path through its per-position candidates (the top tokens up to probability
    # cps_mass, at most cps_top_m) by beam search (width cps_beam), scored cps_weight x drafter log-probability +
    # (1 - cps_weight) x a cps_order-gram proxy counted over the committed context. T = 0 only. Paper defaults.
    cps: bool = False
    cps_beam: int = 3
    cps_top_m: int = 15
    cps_mass: float = 0.8
    cps_weight: float = 0.5
    cps_order: int = 3
    # EAGLE-3: chain of spec_len tokens, or an EAGLE-2 style dynamic tree.
    # dllm / failfast: tree=true branches the chain into a confidence-guided prefix tree (drafters/prefix_tree.py):
    # tree_k alternative tokens at the first position whose confidence is below tree_threshold, each re-drafted
    # for up to tree_branch_len tokens in tree_branch_passes batched passes. The tree_* keys are hashed only when
    # changed from these defaults, so earlier runs keep their directories.
    tree: bool = False
    depth: int = 8
    top_k: int = 10
    total_tokens: int = 60
    tree_k: int = 3
    tree_threshold: float = 0.5
    tree_branch_len: int = 8
    tree_branch_passes: int = 1
    # The drafter's own weights and compute (float32 | bfloat16 | float16 | auto); the target keeps run.dtype,
    # so a float32 target (token-exact verification) can be drafted for in bfloat16. Borrowed embeddings and
    # LM head are copied into this dtype when it differs from the target's.
    dtype: str = "${run.dtype}"
    # dllm / failfast: propose only the tokens of the drafter's draft_vocab.json (its ship stage writes the
    # most frequent target tokens of the training responses); the head then runs over those rows only.
    draft_vocab: bool = False


@dataclass
class DatasetConfig:
    name: str = MISSING  # gsm8k | humaneval | mt_bench | math500 | aime | gpqa
    # Explicit data file; otherwise $FAILFAST_BENCH_DATA, the HF hub/cache, then packaged sources.
    path: Optional[str] = None
    split: str = "test"
    num_questions: Optional[int] = 10
    question_ids: Optional[List[int]] = None
    # Prompt template: math | code | mt_bench | gpqa (gpqa only) | chat (plain question). See data.py.
    template: str = "math"
    # MT-Bench: "first" turn only (paper) or "both" turns.
    turns: str = "first"
    # MT-Bench row selection: "standard" (all 80 in file order) or "paper" (rows 60 + id).
    selection: str = "standard"
    # Try Hugging Face ``datasets`` (hub or its local cache) before packaged sources.
    use_hf: bool = True
    hf_id: Optional[str] = None
    hf_config: Optional[str] = None
    # Hub dataset revision (branch, tag or commit) for the Hugging Face source; the resolved commit is recorded.
    revision: Optional[str] = None
    # When the questions differ from the requested ones (GSM8K's packaged 100-question sample instead of the
    # test split): auto (note it for the offline embedded default, warn otherwise) | warn | refuse | allow.
    fallback: str = "auto"


@dataclass
class HardwareConfig:
    """A latency profile: what one drafter pass and one target step cost, in milliseconds.

    ``target_step_ms`` and ``verify_ms`` are keyed by the target's ``latency_key``; a target missing
    from the table is priced as ``fallback_target`` (recorded in the results).
    ``verify_ms[target][k]`` is the time of one target forward over k new tokens on a warm cache.
    """

    name: str = MISSING
    description: str = ""
    drafter_pass_ms: Dict[str, float] = field(default_factory=dict)
    target_step_ms: Dict[str, float] = field(default_factory=dict)
    verify_ms: Dict[str, Dict[int, float]] = field(default_factory=dict)
    fallback_target: Optional[str] = None
    # GPUs one run uses on this hardware (the Slurm launcher requests this many per job; 0 = CPU only).
    gpus: int = 1
    measured: Dict[str, Any] = field(default_factory=dict)


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "failfast-bench"
    entity: Optional[str] = None
    mode: str = "disabled"  # disabled | offline | online
    tags: List[str] = field(default_factory=list)


@dataclass
class RunSettings:
    max_new_tokens: int = 256
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda
    # float32 | bfloat16 | float16 | auto (= bfloat16 on CUDA, as the paper ran; float32 on CPU, token-exact).
    # Resolved before the config is hashed, so auto on a CPU names the same run as float32.
    dtype: str = "auto"
    # CUDA devices the target is spread over: the first N visible ones; null = all visible. (The hardware
    # profile's ``gpus`` is what a Slurm job requests.) The engine backends use it as their tensor-parallel size.
    gpus: Optional[int] = None
    threads: int = 2
    # The vanilla reference (measured-speedup baseline and losslessness reference), see vanilla.py:
    # auto (reuse an earlier identical measurement on CUDA, measure in this process on CPU) | always | reuse | never.
    measure_vanilla: str = "auto"
    progress: bool = True
    output_dir: str = "${hydra:runtime.output_dir}"
    # Reuse complete results of an identical config (by config hash) instead of rerunning.
    skip_if_complete: bool = True
    replay: bool = False
    # Replay only, block-diffusion drafters: answer drafter passes from the trajectory store (trajectory_store.py)
    # and run the drafter model only for passes no earlier run stored. Traces are identical; not hashed.
    trajectories: bool = False
    # Reporting only (not hashed: the same trace serves both): which output accounting the summary headlines,
    # "paper" (last-round overshoot counts, nominal draft lengths) or "strict" (cut at max_new_tokens, tokens
    # actually drafted). Both are always stored side by side (summary.json "accounting"); see metrics.py.
    accounting: str = "paper"
    # Load guard: flag the run's measured numbers when vanilla tokens/s varies by more than this fraction
    # within the run (CV) or differs that much from the hardware profile's measured decode step.
    load_tolerance: float = 0.15

    # Decoding: 0 = greedy (token-exact against vanilla); > 0 = speculative sampling, lossless in distribution.
    # top_p (1 = off) and top_k (0 = off) warp the target's and the drafter's distributions alike; T > 0 only.
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0


@dataclass
class EvalConfig:
    """Task accuracy, scored after generation from the outputs (see accuracy.py); never part of the config hash."""

    # Per-question correctness in questions.parquet and the summary (gsm8k, math500, aime, gpqa, humaneval).
    accuracy: bool = False
    # HumanEval runs the model's program against the tests: allowed only with this set (sandboxed subprocess).
    execute_code: bool = False
    # Sandbox limits of one HumanEval program: wall-clock seconds and address space in MiB.
    timeout_s: float = 10.0
    memory_mb: int = 1024


@dataclass
class RunConfig:
    target: TargetConfig = MISSING
    drafter: DrafterConfig = MISSING
    dataset: DatasetConfig = MISSING
    hardware: HardwareConfig = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    run: RunSettings = field(default_factory=RunSettings)
    eval: EvalConfig = field(default_factory=EvalConfig)


DRAFTER_NAMES = ("vanilla", "ar", "dllm", "failfast", "eagle3")
# drafter.policy values (dllm): null and "fixed" both mean spec_len.
POLICIES = (None, "fixed", "adaptive", "cost_aware")
DATASET_NAMES = ("gsm8k", "humaneval", "mt_bench", "math500", "aime", "gpqa")
TEMPLATES = ("math", "code", "mt_bench", "gpqa", "chat")


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="target", name="target_schema", node=TargetConfig)
    cs.store(group="drafter", name="drafter_schema", node=DrafterConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)
    cs.store(group="hardware", name="hardware_schema", node=HardwareConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _validate_prefix_tree(d: Any, temperature: float) -> None:
    """The prefix tree of diffusion drafts (drafter.tree=true on dllm / failfast)."""
    _check(d.tree_k >= 1, f"drafter.tree_k={d.tree_k} must be >= 1 (alternative tokens at the boundary)")
    _check(0.0 <= d.tree_threshold <= 1.0, f"drafter.tree_threshold={d.tree_threshold} is outside [0, 1]")
    _check(d.tree_branch_len >= 0, f"drafter.tree_branch_len={d.tree_branch_len} must be >= 0")
    _check(d.tree_branch_passes >= 1, f"drafter.tree_branch_passes={d.tree_branch_passes} must be >= 1")
    if not (d.tree and d.name in ("dllm", "failfast")):
        return
    _check(temperature == 0.0, f"drafter.tree=true with drafter={d.name} (a prefix tree of diffusion drafts) needs run.temperature=0, "
                               f"got {temperature:g}: its branches carry no sampling distributions")
    _check(not d.reuse_drafts, "drafter.tree=true cannot be combined with drafter.reuse_drafts=true (draft reuse rewrites the trunk)")


def validate(cfg: Any) -> None:
    """Refuse impossible values before anything is loaded. ``cfg`` is a resolved RunConfig-like object."""
    d, ds, run = cfg.drafter, cfg.dataset, cfg.run
    _check(d.name in DRAFTER_NAMES, f"drafter.name={d.name!r} is not a drafter; valid: {', '.join(DRAFTER_NAMES)}")
    _check(0.0 <= d.tau <= 1.0, f"drafter.tau={d.tau} is outside [0, 1]")
    _check(0.0 <= d.theta <= 1.0, f"drafter.theta={d.theta} is outside [0, 1]")
    _check(d.spec_len >= 1, f"drafter.spec_len={d.spec_len} must be >= 1")
    _check(d.n >= 1, f"drafter.n={d.n} must be >= 1")
    _check(d.n_max >= d.n, f"drafter.n_max={d.n_max} must be >= drafter.n={d.n}")
    _check(d.block_size >= 1 and d.sub_block_size >= 1, "drafter.block_size and drafter.sub_block_size must be >= 1")
    _check(
        d.block_size % d.sub_block_size == 0,
        f"drafter.block_size={d.block_size} must be a multiple of drafter.sub_block_size={d.sub_block_size}",
    )
    _check(d.budget >= 1, f"drafter.budget={d.budget} must be >= 1")
    _check(d.mode in ("faithful", "clean"), f"drafter.mode={d.mode!r}; valid: faithful, clean")
    policy = getattr(d, "policy", None)
    _check(policy in POLICIES, f"drafter.policy={policy!r}; valid: null, {', '.join(p for p in POLICIES if p)}")
    _check(policy is None or d.name == "dllm", f"drafter.policy={policy} applies to drafter=dllm, not {d.name}")
    if policy == "adaptive":
        _check(1 <= d.adl_k_min <= d.adl_k_max, f"drafter.adl_k_min={d.adl_k_min} and adl_k_max={d.adl_k_max} need 1 <= adl_k_min <= adl_k_max")
        _check(d.adl_k_max <= d.budget, f"drafter.adl_k_max={d.adl_k_max} exceeds drafter.budget={d.budget}: no draft can be that long")
        _check(d.adl_delta >= 0, f"drafter.adl_delta={d.adl_delta} must be >= 0")
        _check(0.0 < d.adl_rho <= 1.0, f"drafter.adl_rho={d.adl_rho} is outside (0, 1]")
    if getattr(d, "cps", False):
        _check(d.name in ("dllm", "failfast"), f"drafter.cps=true applies to dllm and failfast, not {d.name}")
        _check(d.cps_beam >= 1 and d.cps_top_m >= 1 and d.cps_order >= 1, "drafter.cps_beam, cps_top_m and cps_order must be >= 1")
        _check(0.0 < d.cps_mass <= 1.0, f"drafter.cps_mass={d.cps_mass} is outside (0, 1]")
        _check(0.0 <= d.cps_weight <= 1.0, f"drafter.cps_weight={d.cps_weight} is outside [0, 1]")
    _check(d.kv_policy in (None, "exact", "crop", "off"), f"drafter.kv_policy={d.kv_policy!r}; valid: exact, crop, off")
    _check(d.depth >= 1 and d.top_k >= 1 and d.total_tokens >= 1, "drafter.depth, top_k, total_tokens must be >= 1")
    _validate_prefix_tree(d, float(getattr(run, "temperature", 0.0) or 0.0))
    _check(ds.name in DATASET_NAMES, f"dataset.name={ds.name!r}; valid: {', '.join(DATASET_NAMES)}")
    _check(ds.template in TEMPLATES, f"dataset.template={ds.template!r}; valid: {', '.join(TEMPLATES)}")
    _check(ds.turns in ("first", "both"), f"dataset.turns={ds.turns!r}; valid: first, both")
    _check(ds.selection in ("standard", "paper"), f"dataset.selection={ds.selection!r}; valid: standard, paper")
    _check(ds.fallback in ("auto", "warn", "refuse", "allow"), f"dataset.fallback={ds.fallback!r}; valid: auto, warn, refuse, allow")
    _check(ds.num_questions is None or ds.num_questions >= 1, f"dataset.num_questions={ds.num_questions} must be >= 1")
    _check(run.accounting in ("paper", "strict"), f"run.accounting={run.accounting!r}; valid: paper, strict")
    _check(run.load_tolerance > 0, f"run.load_tolerance={run.load_tolerance} must be > 0 (a fraction, e.g. 0.15)")
    _check(run.max_new_tokens >= 1, f"run.max_new_tokens={run.max_new_tokens} must be >= 1")
    _check(
        str(run.measure_vanilla).lower() in ("auto", "always", "reuse", "never", "true", "false"),
        f"run.measure_vanilla={run.measure_vanilla!r}; valid: auto, always, reuse, never",
    )
    gpus = getattr(run, "gpus", None)
    _check(gpus is None or gpus >= 1, f"run.gpus={gpus} must be >= 1 (or null for every visible GPU)")
    temperature = float(getattr(run, "temperature", 0.0) or 0.0)
    top_p, top_k = float(getattr(run, "top_p", 1.0)), int(getattr(run, "top_k", 0) or 0)
    _check(temperature >= 0.0, f"run.temperature={temperature} must be >= 0 (0 = greedy)")
    _check(0.0 < top_p <= 1.0, f"run.top_p={top_p} must be in (0, 1] (1 = off)")
    _check(top_k >= 0, f"run.top_k={top_k} must be >= 0 (0 = off)")
    _check(
        temperature > 0.0 or (top_p == 1.0 and top_k == 0),
        "run.top_p and run.top_k shape sampling and need run.temperature > 0 (at temperature 0 decoding is greedy)",
    )
    _check(
        temperature == 0.0 or not getattr(d, "cps", False),
        "drafter.cps=true needs run.temperature=0: a searched path token reads the candidates right of it, so it is "
        "not drawn from any distribution speculative sampling could be given (drafters/path_search.py)",
    )
    _check(
        temperature == 0.0 or not (d.name == "failfast" and d.reuse_drafts),
        "drafter.reuse_drafts=true needs run.temperature=0: draft reuse picks tokens by their drawn values, "
        "which speculative sampling cannot verify",
    )
    _check(run.threads >= 0, f"run.threads={run.threads} must be >= 0 (0 = torch default)")
    _check(run.device in ("auto", "cpu", "cuda") or run.device.startswith("cuda:"), f"run.device={run.device!r}; valid: auto, cpu, cuda")
    _check(
        run.dtype in ("float32", "bfloat16", "float16", "auto"),
        f"run.dtype={run.dtype!r}; valid: float32, bfloat16, float16, auto",
    )
    _check(
        not d.draft_vocab or d.name in ("dllm", "failfast"),
        f"drafter.draft_vocab=true applies to dllm and failfast, not {d.name} (EAGLE-3 heads carry their own draft vocabulary)",
    )
    _check(
        d.dtype in ("float32", "bfloat16", "float16", "auto"),
        f"drafter.dtype={d.dtype!r}; valid: float32, bfloat16, float16, auto",
    )
    _check(cfg.logger.mode in ("disabled", "offline", "online"), f"logger.mode={cfg.logger.mode!r}; valid: disabled, offline, online")
    ev = getattr(cfg, "eval", None)
    if ev is not None and ev.accuracy:
        from .accuracy import refusal

        reason = refusal(ds.name, bool(ev.execute_code))
        _check(reason is None, reason or "")
        _check(ev.timeout_s > 0 and ev.memory_mb >= 64, f"eval.timeout_s={ev.timeout_s} must be > 0 and eval.memory_mb={ev.memory_mb} >= 64")
    if run.device.startswith("cuda"):
        import torch

        _check(torch.cuda.is_available(), f"run.device={run.device} but this machine has no CUDA device; use run.device=cpu or auto")
