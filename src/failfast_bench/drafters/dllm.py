"""Block-diffusion drafters: the fixed-length Fast-dLLM baseline and FailFast (paper Algorithm 1).

One drafting round (paper-reference §4.4), shared by both drafters:

1. **Prefix KV.** The drafter needs the KV of the complete blocks of the context, [0, ℓ₀) with
   ℓ₀ = ⌊ℓ/B⌋·B. It reuses its block cache from earlier rounds or runs one *prefill* pass. When ℓ is a
   block multiple, the logit at the last prefix position yields the token at ℓ (see "Block-aligned ℓ").
2. **Block loop** (at most ``budget // B`` blocks): pad the block holding the frontier with masks and walk
   its sub-blocks left to right; each *denoising* pass runs the whole block over the cache, reads the
   shifted logits of the active sub-block, and commits every masked position whose top-1 probability
   exceeds θ, plus always the single most confident one. After a pass that leaves the whole window
   [ℓ, ℓ+L) committed, the drafter's stopping rule decides: stop, or widen the window. A complete
   block costs one more *cache-update* pass, which writes it into the cache and yields the first token
   of the next block.
3. The draft is the first L committed tokens, cut after a stop token.

*What* is drafted (this module: passes, commits, confidences, KV) is separate from *when to stop*: the drafter
composes a length policy (``drafters/length_policies/``) that it asks at every check. :class:`DllmDrafter`
composes ``FixedLength`` and :class:`FailFastDrafter` ``FailFastPolicy``; any other policy goes through
:class:`BlockDiffusionDrafter` directly. *What shape the draft takes* is a third, optional part: with a path
search (``drafters/path_search.py``, DiffuSpec's CPS) each denoising pass takes its tokens from the best
left-to-right path through the pass's candidate lattice instead of the per-position argmax.

:class:`DllmDrafter` stops as soon as the first ``spec_len`` positions are committed.
:class:`FailFastDrafter` starts with L = N and, at every check, (a) stops if any recorded confidence is
below τ, (b) stops at the cap, (c) otherwise widens L by N. ``mode="faithful"`` copies the authors' code
(paper-reference §4.6): the record C gets the confidence of every position that was masked before a
pass (positions that stay masked and positions past the window inside the sub-block included; prefill
and cache-update tokens never), and the cap tests |C| ≥ N_max, which lets drafts reach ~70 tokens.
``mode="clean"`` tests the commit-time confidences of the window's own tokens and caps L itself.
:class:`DllmDrafter` takes the same ``mode``; for both drafters it also selects the block-aligned rule below.

Drafter KV reuse across rounds (``kv_policy``): ``"exact"`` (paper §7, the default) reuses the block
cache only when its length equals the new ℓ₀, otherwise re-prefills [0, ℓ₀) and counts a pass; the
cache is never cropped. Like the authors' code it may then reuse a block whose last token the verifier
corrected (the round's ``extra["stale_kv"]`` says so). ``"crop"`` keeps the longest block prefix whose
tokens match the context and prefills only what is missing (one counted pass). ``"off"`` re-prefills
every round.

Block-aligned ℓ (ℓ = ℓ₀ > 0) under ``"exact"``: in a generation the cache can only end exactly at ℓ
when the previous round's last cache-writing pass was a cache update that completed the block ending
at ℓ. The authors' code decides reuse by the length of the logits stored with that pass; at a block
boundary the test fails, so it runs a fresh prefill over [0, ℓ₀) whose last logit yields the token at
ℓ (one counted prefill pass; issue 13). The verifier's token at ℓ-1 is then part of the prefix even
when it corrected the drafter's. ``mode="faithful"`` does this (``boundary_reuse=False``). ``mode="clean"`` keeps a shortcut instead (``boundary_reuse=True``):
reuse the cache and take the token at ℓ from the logit stored by that cache update, saving the pass;
that logit was computed from the drafter's own block, whose last token the verifier may have corrected
(``extra["stale_kv"]``). ``boundary_reuse`` can also be passed explicitly to override the mode.
``"crop"`` always takes the stored logit (its matched blocks equal the context); ``"off"`` always prefills.

Deviation kept on purpose: the authors skip the prefix pass whenever ℓ ≤ 32, which for ℓ = 32 exactly
drops the context from every pass; here any complete prefix block (ℓ₀ > 0) is prefilled.

Sampling (T > 0, ``sampling``). Speculative sampling is exact only if every draft token x_i is, given what
the verifier has seen before it (the tokens left of i and their verdicts), distributed as the q_i reported
for it, and if whether x_i is in the draft does not depend on x_i itself. Parallel unmasking needs three
choices for that:

* **q_i** is the warped softmax (temperature T, the run's top-k / top-p, the mask id and ids past the
  verifier's vocabulary removed) of the pass that commits position i, at position i; the token is drawn from
  it. A token that a cache-writing pass yields (prefill or cache update) is drawn from that pass's row, and
  the row stays with the token until it is drafted (possibly next round, from a reused cache). Tokens
  committed by one pass are drawn independently given the block state before the pass. q never reaches a
  trace.
* **The commit decision reads distributions, never drawn values**: the confidence of a masked position is the
  T = 0 quantity, the maximum untempered probability over proposable ids (its softmax still counting the
  mask id, as at T = 0). θ, τ, the records C and the cap therefore read exactly the confidences they read at
  T = 0; only the tokens differ.
* **Commits go left to right**: a pass commits the leftmost masked position of the active sub-block, then
  each following masked position while its confidence exceeds θ, and stops at the first one that does not
  (at T = 0: every position above θ, plus the most confident one). Deciding from the distribution is not
  enough on its own: if position b is committed before a position a < b, x_a is drawn conditioned on x_b,
  so x_a and its verdict carry information about x_b, and x_b given the verifier's history is no longer
  distributed as q_b (take q_a(·|x_b) a point mass on f(x_b): once x_a is accepted, x_b is known). Recording
  the distribution such a rule really induces would need x_b's posterior, which nothing computes. With left
  to right commits every q_i conditions only on tokens left of i, and ``tests/test_sampling.py`` shows the
  T = 0 order failing the distribution test on a model built to expose it.
* FailFast's stopping check, when it widens the window and the widened window is already fully committed,
  decides again at once from the same records (at T = 0 the next check waits for the next pass). Otherwise
  tokens committed past the window would be kept or dropped by a decision reading a pass conditioned on them.

Draft reuse (Appendix E) selects tokens by matching drawn values, so it is refused at T > 0. Pass counts
at T > 0 can differ from T = 0 (left-to-right commits may need more passes in a sub-block).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch

from ..sampling import Sampling, draw, sampling_of
from ..verify import ForwardTimer
from .base import STOP_BUDGET, STOP_TOKEN, Draft, Drafter, Verdict
from .context_ngram import ContextNgram
from .length_policies import AdaptiveLength, CostAware, FailFastPolicy, FixedLength, LengthPolicy, rejected_overlap  # noqa: F401 (re-exported)
from .passes import ModelPasses, Picks
from .path_search import CausalPathSearch

KV_POLICIES = ("exact", "crop", "off")
MODES = ("faithful", "clean")
FAILFAST_MODES = MODES  # the name older callers import


@dataclass
class _Round:
    """State of one drafting round; positions are absolute, ``None`` marks a masked position."""

    ell: int
    seq: list
    window_end: int
    conf: dict = field(default_factory=dict)  # position -> probability of the committed token
    q: dict = field(default_factory=dict)  # T > 0: position -> the distribution its token was drawn from
    # position -> the pass's best proposable (token, probability) pairs there, best first (``keep_alternatives``)
    ranked: dict = field(default_factory=dict)
    recorded: list = field(default_factory=list)  # C: per-pass records of masked positions
    passes: dict = field(default_factory=lambda: {"prefill": 0, "denoise": 0, "cache_update": 0})
    kv_reused: bool = False
    stale_kv: bool = False
    reused_draft: bool = False

    def commit(self, pos: int, token: int, confidence: float, q=None, ranked=None) -> None:
        if pos == len(self.seq):
            self.seq.append(token)
        else:
            self.seq[pos] = token
        self.conf[pos] = confidence
        if q is not None:
            self.q[pos] = q
        if ranked is not None:
            self.ranked[pos] = ranked

    def window_complete(self) -> bool:
        if self.window_end > len(self.seq):
            return False
        return all(self.seq[p] is not None for p in range(self.ell, self.window_end))

    def window_confidences(self) -> list[float]:
        return [self.conf[p] for p in range(self.ell, min(self.window_end, len(self.seq))) if self.seq[p] is not None]


class BlockDiffusionDrafter(Drafter):
    """Shared machinery: block cache, denoising passes, parallel unmasking, pass accounting.

    ``model`` is a :class:`~failfast_bench.drafters.blockdiff_model.BlockDiffusionLM` (or anything with
    its ``block_size``, ``mask_token_id``, ``vocab_limit``, ``cache_len``, ``reset``, ``crop``,
    ``write_blocks`` and ``denoise``).
    """

    name = "dllm"

    def __init__(
        self,
        model,
        *,
        theta: float,
        policy: LengthPolicy,
        sub_block_size: int = 8,
        budget: int = 96,
        stop_ids: Sequence[int] = (),
        reuse_kv: bool = True,
        kv_policy: Optional[str] = None,
        mode: str = "faithful",
        boundary_reuse: Optional[bool] = None,
        sampling: Optional[Sampling] = None,
        path_search: Optional[CausalPathSearch] = None,
    ):
        self.sampling = sampling
        self.path_search = path_search
        if path_search is not None and self.sampling_on:
            raise ValueError("causal-consistency path search needs temperature 0 (drafters/path_search.py)")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; valid: {', '.join(MODES)}")
        self.mode = mode
        self.policy = policy
        # Block-aligned ℓ with an exactly matching cache: reuse it and take the token at ℓ from the stored
        # cache-update logit (clean shortcut), or re-prefill like the authors' code (faithful).
        self.boundary_reuse = (mode == "clean") if boundary_reuse is None else bool(boundary_reuse)
        self.model = model
        self.block_size = int(model.block_size)
        if self.block_size % sub_block_size:
            raise ValueError(f"block size {self.block_size} is not a multiple of sub-block size {sub_block_size}")
        # A target-conditioned model (drafters/conditioned_model.py) reads the target's taps of the context.
        self.target_feature_layers = tuple(getattr(model, "feature_layers", ()) or ())
        # Its cache-update blocks hold draft rows without features, so they are re-written (with features)
        # once verified: "crop" re-writes only those blocks, "exact" would re-prefill the whole context.
        kv = kv_policy or (("crop" if self.target_feature_layers else "exact") if reuse_kv else "off")
        if kv not in KV_POLICIES:
            raise ValueError(f"kv_policy={kv!r}; valid: {', '.join(KV_POLICIES)}")
        self.theta = float(theta)
        self.sub_block_size = int(sub_block_size)
        self.budget = int(budget)
        self.n_blocks = max(1, self.budget // self.block_size)
        self.stop_ids = frozenset(int(s) for s in stop_ids)
        self.kv_policy = kv
        self.mask_token_id = int(model.mask_token_id)
        self.timer = ForwardTimer()
        self._device = getattr(model, "device", torch.device("cpu"))
        # Every model call and the block cache go through the pass source: the model itself, or stored passes
        # (replay with run.trajectories=true, see failfast_bench.trajectory_store).
        self.passes = ModelPasses(model, self._timed, self._reduce)
        self._cache_tokens: list[int] = []  # tokens whose KV the model's block cache holds
        # position -> (token, confidence, q or None, ranked or None) predicted there by a cache write
        self._boundary: dict[int, tuple[int, float, Optional[torch.Tensor], Optional[list]]] = {}
        # Greedy only: keep each committed position's best this many (token, probability) pairs in the round
        # (``_Round.ranked``) for a draft shape that branches (drafters/prefix_tree.py); 0 = keep none.
        self.keep_alternatives = 0
        self.last_round: Optional[_Round] = None  # the state of the latest propose(), for a shape built on it
        policy.check_sampling(self.sampling_on)

    # -- per question ----------------------------------------------------------------------------
    def start(self, prompt_ids: list[int]) -> None:
        self.passes.start(prompt_ids)
        self._cache_tokens = []
        self._boundary = {}
        self.policy.start()
        if self.path_search is not None:
            self.path_search.start()

    def describe(self) -> dict:
        info = {
            "name": self.name,
            "theta": self.theta,
            "block_size": self.block_size,
            "sub_block_size": self.sub_block_size,
            "budget": self.budget,
            "kv_policy": self.kv_policy,
            "mode": self.mode,
            "boundary_reuse": self.boundary_reuse,
            "mask_token_id": self.mask_token_id,
        }
        describe_model = getattr(self.model, "describe", None)
        if callable(describe_model):
            info["model"] = describe_model()
        if self.path_search is not None:
            info.update(self.path_search.describe())
        return {**info, **self.policy.describe()}

    # -- when to stop: the length policy ----------------------------------------------------------
    def _initial_window(self) -> int:
        return self.policy.initial_window()

    def _decide(self, st: _Round) -> Union[str, int]:
        """Called after a denoising pass that completed the window: a stop reason, or how far to widen it."""
        return self.policy.decide(st)

    def _on_stop(self, st: _Round, reason: str) -> None:
        """Hook run when ``_decide`` stops the round (FailFast's draft reuse lives in its policy)."""
        self.policy.on_stop(st, reason)

    def _recorded(self, st: _Round) -> Optional[list[float]]:
        return self.policy.recorded(st)

    def observe(self, draft: Draft, verdict: Verdict) -> None:
        self.policy.observe(draft, verdict)
        if self.target_feature_layers:
            if verdict.hidden_states is None:
                raise RuntimeError("a target-conditioned drafter needs the verifier's tap features (TargetVerifier(feature_layers=...))")
            # Rows: the round's last context token (position ℓ-1), then the accepted draft tokens.
            self.model.extend_features(int(draft.extra["ell"]) - 1, verdict.hidden_states)

    def observe_prompt_features(self, features) -> None:
        """Target taps of prompt[:-1] (the engine hands them over after the verifier's prefill)."""
        self.model.set_features(features)

    # -- model calls -----------------------------------------------------------------------------
    def _timed(self, fn, *args, **kwargs):
        with self.timer.measure(self._device):
            return fn(*args, **kwargs)

    def _proposable(self, logits: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Per row, the softmax with the ids a draft may not hold set to -1, and the token id of each column
        (``None``: columns are token ids). The mask id and ids past the verifier's vocabulary are refused but
        still count in the softmax, as in the authors' code; a draft vocabulary's rows are all proposable
        (its softmax runs over them only)."""
        probs = torch.softmax(logits.float(), dim=-1)
        vocab_ids = getattr(self.model, "vocab_ids", None)
        if vocab_ids is not None:
            return probs, vocab_ids
        vocab = probs.shape[-1]
        limit = getattr(self.model, "vocab_limit", None)
        if self.mask_token_id < vocab or (limit is not None and limit < vocab):
            probs = probs.clone()
            if self.mask_token_id < vocab:
                probs[:, self.mask_token_id] = -1.0
            if limit is not None and limit < vocab:
                probs[:, limit:] = -1.0
        return probs, None

    def _pick(self, logits: torch.Tensor) -> tuple[list[int], list[float]]:
        """Greedy token and its probability per row (see :meth:`_proposable` for the ids never chosen)."""
        choose, vocab_ids = self._proposable(logits)
        rows = choose.argmax(dim=-1)
        conf = choose.gather(-1, rows[:, None])[:, 0]
        tokens = rows if vocab_ids is None else vocab_ids.index_select(0, rows)
        return [int(t) for t in tokens.tolist()], [float(c) for c in conf.tolist()]

    def ranked(self, logits: torch.Tensor, k: int) -> list[list[tuple[int, float]]]:
        """Per row, the ``k`` most probable proposable (token, probability) pairs, best first (greedy drafting:
        the first pair is :meth:`_pick`'s choice up to ties)."""
        choose, vocab_ids = self._proposable(logits)
        top = torch.topk(choose, min(int(k), choose.shape[-1]), dim=-1)
        ids = top.indices if vocab_ids is None else vocab_ids[top.indices]
        return [[(int(t), float(p)) for t, p in zip(row_ids, row_p) if p >= 0.0] for row_ids, row_p in zip(ids.tolist(), top.values.tolist())]

    def _kept_alternatives(self, picks: Picks) -> list:
        return self.ranked(picks.logits, self.keep_alternatives) if self.keep_alternatives else [None] * len(picks.tokens)

    def _reduce(self, logits: torch.Tensor, top_k: int) -> Picks:
        """What the round reads from a pass's logits (the logits stay with it for sampling, CPS and alternatives)."""
        tokens, confs = self._pick(logits)
        return Picks(tokens, confs, self.ranked(logits, top_k) if top_k else None, logits)

    def _q_rows(self, logits: torch.Tensor) -> torch.Tensor:
        """T > 0: per row, the warped distribution over the ids a draft may hold, indexed by token id."""
        logits = logits.float()
        vocab_ids = getattr(self.model, "vocab_ids", None)
        limit = getattr(self.model, "vocab_limit", None)
        if vocab_ids is not None:  # rows are draft-vocabulary entries: scatter them to their token ids
            q = self.sampling.probs(logits)
            width = int(limit) if limit is not None else int(vocab_ids.max()) + 1
            out = torch.zeros(q.shape[0], width, dtype=q.dtype, device=q.device)
            return out.index_copy_(1, vocab_ids.to(q.device), q)
        if limit is not None and limit < logits.shape[-1]:
            logits = logits[:, :limit]
        if self.mask_token_id < logits.shape[-1]:
            logits = logits.clone()
            logits[:, self.mask_token_id] = float("-inf")
        return self.sampling.probs(logits)

    def _draw_rows(self, logits: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        q = self._q_rows(logits)
        return [draw(row, self.generator) for row in q], q

    def _sampled_commits(self, confs: list[float]) -> list[int]:
        """T > 0: which of a pass's masked positions (in order) to commit: the leftmost, then each next one
        while its confidence exceeds θ (left to right; see the module docstring)."""
        n = 1
        while n < len(confs) and confs[n] > self.theta:
            n += 1
        return list(range(n))

    def _write(self, st: _Round, tokens: list[int], kind: str) -> None:
        """A cache-writing pass (prefill or cache update) over whole blocks at the cache end."""
        start = self.passes.cache_len
        every = self.kv_policy == "crop"
        picks = self.passes.write(tokens, every)
        st.passes[kind] += 1
        self._cache_tokens.extend(int(t) for t in tokens)
        picked_tokens, picked_conf = picks.tokens, picks.confidences
        picked_q: list = [None] * len(picked_tokens)
        picked_ranked = self._kept_alternatives(picks)
        if self.sampling_on:
            picked_tokens, q = self._draw_rows(picks.logits)
            picked_q = list(q)
        ends = range(start + self.block_size, start + len(tokens) + 1, self.block_size) if every else [start + len(tokens)]
        for pos, tok, conf, q_row, ranked in zip(ends, picked_tokens, picked_conf, picked_q, picked_ranked):
            self._boundary[pos] = (tok, conf, q_row, ranked)

    def _drop_cache_after(self, keep: int) -> None:
        if keep == 0:
            self.passes.reset()
        elif self.passes.cache_len > keep:
            self.passes.crop(keep)
        del self._cache_tokens[keep:]
        self._boundary = {p: v for p, v in self._boundary.items() if p <= keep}

    # -- the round -------------------------------------------------------------------------------
    def _prepare_prefix(self, context: list[int], st: _Round) -> None:
        B = self.block_size
        ell = len(context)
        ell0 = ell // B * B
        if self.target_feature_layers:
            valid = self.passes.valid_cache_rows // B * B  # blocks written before their features were known go
            if len(self._cache_tokens) > valid:
                self._drop_cache_after(valid)
        cached = len(self._cache_tokens)
        aligned = ell0 == ell  # the token at ℓ comes from a cache-writing pass, not from denoising
        if self.kv_policy == "exact" and cached == ell0 and (not aligned or self.boundary_reuse):
            st.kv_reused = ell0 > 0
            st.stale_kv = self._cache_tokens != context[:ell0]
        elif self.kv_policy == "crop":
            keep = 0
            limit = min(cached, ell0)
            while keep + B <= limit and self._cache_tokens[keep : keep + B] == context[keep : keep + B]:
                keep += B
            self._drop_cache_after(keep)
            st.kv_reused = keep > 0
            if keep < ell0:
                self._write(st, context[keep:ell0], "prefill")
        else:
            self._drop_cache_after(0)
            if ell0 > 0:
                self._write(st, context[:ell0], "prefill")
        if aligned:
            st.commit(ell, *self._boundary[ell0])

    def _stop_token_reached(self, st: _Round) -> bool:
        """A stop token is committed with no masked position before it (the authors' stop check)."""
        for pos in range(st.ell, len(st.seq)):
            tok = st.seq[pos]
            if tok is None:
                return False
            if tok in self.stop_ids:
                return True
        return False

    def _denoise(self, st: _Round, block_start: int, masked: list[int]) -> None:
        block = [self.mask_token_id if t is None else t for t in st.seq[block_start : block_start + self.block_size]]
        picks = self.passes.denoise(block, [p - block_start for p in masked])
        st.passes["denoise"] += 1
        tokens, confs = picks.tokens, picks.confidences
        st.recorded.extend(confs)
        if self.sampling_on:
            chosen = self._sampled_commits(confs)
            drawn, q = self._draw_rows(picks.logits[chosen])
            for i, tok, q_row in zip(chosen, drawn, q):
                st.commit(masked[i], tok, confs[i], q_row)
            return
        if self.path_search is not None:
            tokens, confs = self._searched(st, masked, picks.logits)
        best = max(range(len(confs)), key=confs.__getitem__)  # first maximum, like torch.argmax
        ranked = self._kept_alternatives(picks)
        for i, pos in enumerate(masked):
            if confs[i] > self.theta or i == best:
                st.commit(pos, tokens[i], confs[i], ranked=ranked[i])

    def _searched(self, st: _Round, masked: list[int], logits: torch.Tensor) -> tuple[list[int], list[float]]:
        """CPS: the tokens of the best path through the active sub-block's lattice, each with the probability
        the pass gave it (the commit rule then reads those; ``st.recorded`` keeps the argmax confidences)."""
        b = self.sub_block_size
        sub_start = masked[0] // b * b
        proposable, vocab_ids = self._proposable(logits)
        row_of = {pos: i for i, pos in enumerate(masked)}
        columns = [self.path_search.column(proposable[row_of[p]], vocab_ids) if p in row_of else int(st.seq[p])
                   for p in range(sub_start, sub_start + b)]
        path = self.path_search.search(st.seq[:sub_start], columns)
        tokens = [path[p - sub_start] for p in masked]
        return tokens, [dict(columns[p - sub_start])[t] for p, t in zip(masked, tokens)]

    def _run_round(self, context: list[int]) -> tuple[_Round, str]:
        if not context:
            raise ValueError("cannot draft from an empty context")
        B, b = self.block_size, self.sub_block_size
        st = _Round(ell=len(context), seq=list(context), window_end=len(context) + self._initial_window())
        self._prepare_prefix(context, st)
        for _ in range(self.n_blocks):
            if self._stop_token_reached(st):
                return st, STOP_TOKEN
            block_start = len(st.seq) // B * B
            st.seq.extend([None] * (block_start + B - len(st.seq)))
            for sub_start in range(block_start, block_start + B, b):
                while True:
                    masked = [p for p in range(sub_start, sub_start + b) if st.seq[p] is None]
                    if not masked:
                        break
                    if self._stop_token_reached(st):
                        return st, STOP_TOKEN
                    self._denoise(st, block_start, masked)
                    if st.window_complete():
                        decision = self._decide(st)
                        while not isinstance(decision, str):
                            st.window_end += int(decision)
                            if not (self.sampling_on and st.window_complete()):
                                break
                            decision = self._decide(st)  # T > 0: decide again now, from the same records
                        if isinstance(decision, str):
                            self._on_stop(st, decision)
                            return st, decision
            if self._stop_token_reached(st):
                return st, STOP_TOKEN
            self._write(st, st.seq[block_start : block_start + B], "cache_update")
            st.commit(block_start + B, *self._boundary[block_start + B])
        if self._stop_token_reached(st):  # the budget's last cache update produced the stop token
            return st, STOP_TOKEN
        return st, STOP_BUDGET

    def propose(self, context: list[int]) -> Draft:
        if self.path_search is not None:
            self.path_search.learn(context)
        st, reason = self._run_round(list(context))
        self.last_round = st
        window = st.window_end - st.ell
        tokens: list[int] = []
        for tok in st.seq[st.ell :]:
            if tok is None or len(tokens) == window:
                break
            tokens.append(int(tok))
            if tok in self.stop_ids:
                break
        confidences = [float(st.conf[st.ell + i]) for i in range(len(tokens))]
        q = torch.stack([st.q[st.ell + i] for i in range(len(tokens))]) if self.sampling_on and tokens else None
        return Draft(
            tokens=tokens,
            confidences=confidences,
            passes=dict(st.passes),
            stop_reason=reason,
            reported_len=window if len(tokens) < window else None,
            recorded_confidences=self._recorded(st),
            extra={
                "ell": st.ell,
                "window": window,
                "kv_reused": st.kv_reused,
                "stale_kv": st.stale_kv,
                "reused_draft": st.reused_draft,
                "records": len(st.recorded),
            },
            q=q,
        )


class DllmDrafter(BlockDiffusionDrafter):
    """Fast-dLLM with a fixed speculation length (the paper's naive dLLM baseline, θ = 0.9)."""

    name = "dllm"

    def __init__(self, model, *, spec_len: int = 8, theta: float = 0.9, **kwargs):
        super().__init__(model, theta=theta, policy=FixedLength(spec_len), **kwargs)

    @property
    def spec_len(self) -> int:
        return self.policy.spec_len


class FailFastDrafter(BlockDiffusionDrafter):
    """FailFast: dynamic speculation length over a block-diffusion drafter (paper Algorithm 1)."""

    name = "failfast"

    def __init__(
        self,
        model,
        *,
        theta: float = 0.05,
        tau: float = 0.45,
        n: int = 10,
        n_max: int = 60,
        mode: str = "faithful",
        reuse_drafts: bool = False,
        **kwargs,
    ):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; valid: {', '.join(MODES)}")
        policy = FailFastPolicy(tau=tau, n=n, n_max=n_max, mode=mode, reuse_drafts=reuse_drafts)
        super().__init__(model, theta=theta, mode=mode, policy=policy, **kwargs)

    tau = property(lambda self: self.policy.tau)
    n = property(lambda self: self.policy.n)
    n_max = property(lambda self: self.policy.n_max)
    reuse_drafts = property(lambda self: self.policy.reuse_drafts)


# -- construction from a run config -------------------------------------------------------------------
def build(cfg, model_ref, target_model, target_tokenizer, stop_ids, device, dtype) -> Drafter:
    """The configured ``dllm`` or ``failfast`` drafter, its model loaded next to the target; with
    ``drafter.tree`` its chain branched into a prefix tree (``drafters/prefix_tree.py``)."""
    chain = _build_chain(cfg, model_ref, target_model, target_tokenizer, stop_ids, device, dtype)
    d = cfg.drafter
    if not getattr(d, "tree", False):
        return chain
    from .prefix_tree import PrefixTreeDrafter

    return PrefixTreeDrafter(chain, k=d.tree_k, threshold=d.tree_threshold, branch_len=d.tree_branch_len,
                             branch_passes=d.tree_branch_passes)


def _build_chain(cfg, model_ref, target_model, target_tokenizer, stop_ids, device, dtype) -> BlockDiffusionDrafter:
    from pathlib import Path

    from ..config import ConfigError
    from ..models import check_shared_tokenizer, load_tokenizer, resolve_source
    from . import drafter_revision
    from .blockdiff_model import load_block_diffusion_drafter

    d = cfg.drafter
    if model_ref == "target":
        raise ConfigError(f"drafter={d.name} needs a block-diffusion model, not the target itself; set drafter.model")
    src = resolve_source(model_ref, revision=drafter_revision(d))
    model = load_block_diffusion_drafter(
        src.path, target_model=target_model, dtype=dtype, device=device, mask_token_id=d.mask_token_id, target_name=cfg.target.name,
        revision=src.revision,
    )
    if model.block_size != d.block_size:
        raise ConfigError(
            f"drafter {model_ref} was trained with block size {model.block_size} but drafter.block_size={d.block_size}; "
            f"set drafter.block_size={model.block_size}"
        )
    # Project drafters ship no tokenizer (they are the target's); Fast-dLLM ships Qwen2.5's plus the mask token.
    path = Path(src.path)
    ships_tokenizer = not src.is_local or any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json"))
    if ships_tokenizer and target_tokenizer is not None:
        check_shared_tokenizer(target_tokenizer, load_tokenizer(src), model_ref)
    if getattr(d, "draft_vocab", False):
        from .draft_vocab import read_draft_vocab

        model.restrict_vocab([t for t in {*read_draft_vocab(path), *stop_ids} if model.vocab_limit is None or t < model.vocab_limit])
    common = dict(
        sub_block_size=d.sub_block_size,
        budget=d.budget,
        stop_ids=tuple(stop_ids),
        reuse_kv=d.reuse_kv,
        kv_policy=getattr(d, "kv_policy", None),
        mode=d.mode,
        sampling=sampling_of(cfg),
        path_search=_path_search(d, model, target_model),
    )
    if d.name == "dllm" and getattr(d, "policy", None) == "adaptive":
        policy = AdaptiveLength(k_min=d.adl_k_min, k_max=d.adl_k_max, delta=d.adl_delta, rho=d.adl_rho, stop_ids=stop_ids)
        return BlockDiffusionDrafter(model, theta=d.theta, policy=policy, **common)
    if d.name == "dllm" and getattr(d, "policy", None) == "cost_aware":
        from ..latency import profile_of

        target = getattr(cfg.target, "latency_key", None) or cfg.target.name
        policy = CostAware.from_profile(profile_of(cfg), target, "dllm", n=d.n, n_max=d.n_max, block_size=d.block_size)
        return BlockDiffusionDrafter(model, theta=d.theta, policy=policy, **common)
    if d.name == "dllm":
        return DllmDrafter(model, spec_len=d.spec_len, theta=d.theta, **common)
    return FailFastDrafter(model, theta=d.theta, tau=d.tau, n=d.n, n_max=d.n_max, reuse_drafts=d.reuse_drafts, **common)


def _path_search(d, model, target_model) -> Optional[CausalPathSearch]:
    """DiffuSpec's CPS when ``drafter.cps`` is set, its proxy sized to the verifier's vocabulary."""
    if not getattr(d, "cps", False):
        return None
    vocab = model.vocab_limit or int(target_model.config.vocab_size)
    return CausalPathSearch(ContextNgram(vocab, order=d.cps_order), beam=d.cps_beam, top_m=d.cps_top_m,
                            mass=d.cps_mass, weight=d.cps_weight)
