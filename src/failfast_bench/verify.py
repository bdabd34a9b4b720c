"""The one verifier: the target model with its KV cache.

Invariant between rounds: the target's cache holds every committed token except the last one, which is
``pending``. A round feeds ``[pending] + draft`` in one forward, so the logits at offset i predict the
token after draft[:i]; the longest prefix equal to the target's choice is accepted, the target's token
after it (correction or bonus) becomes the new ``pending``, and the cache is cropped to the committed
tokens. Vanilla decoding is the empty draft: one token per forward.

The acceptance rule is a separate object: :class:`GreedyAcceptance` (T = 0, the path above) or
:class:`SamplingAcceptance` (T > 0, speculative sampling, Leviathan et al. 2023): the target's distribution p
is the warped softmax of its logits (:class:`~failfast_bench.sampling.Sampling`); draft token x, drawn from
the drafter's recorded q, is accepted with probability min(1, p(x)/q(x)); at the first rejection the token
is drawn from norm(max(0, p - q)); after a fully accepted draft the bonus token is drawn from p. A tree is
verified by recursive rejection sampling over siblings (SpecInfer; EAGLE's point-mass form): the siblings
of the current node are tried in order, each against the residual left by the rejected ones, and the walk
descends into an accepted child. The output is then distributed exactly as vanilla sampling from p.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from transformers import DynamicCache

from .drafters.base import Draft, Verdict
from .sampling import Sampling, align, draw, new_generator, uniform


class GreedyAcceptance:
    """Accept draft tokens while they equal the target's argmax (temperature 0)."""

    greedy = True

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=-1)

    def accept(self, draft_tokens: Sequence[int], target_choice: list[int]) -> int:
        n = 0
        for proposed, chosen in zip(draft_tokens, target_choice):
            if proposed != chosen:
                break
            n += 1
        return n


class SamplingAcceptance:
    """Speculative sampling against the drafter's recorded distributions (T > 0).

    :meth:`resolve` is the whole rule for one position: ``candidates`` are the draft tokens proposed there
    (one for a chain, the siblings of a tree node), each with the distribution it was drawn from (``None``:
    chosen deterministically, a point mass). It returns the index of the accepted candidate, or ``None`` and
    the token drawn from the residual. Candidates drawn independently of each other (distinct point masses,
    or i.i.d. draws from one q) keep the result exactly distributed as p.
    """

    greedy = False

    def __init__(self, sampling: Sampling):
        if sampling.greedy:
            raise ValueError("SamplingAcceptance needs temperature > 0; use GreedyAcceptance")
        self.sampling = sampling
        self.generator: Optional[torch.Generator] = None

    def set_generator(self, generator: Optional[torch.Generator]) -> None:
        self.generator = generator

    def target_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return self.sampling.probs(logits)

    def resolve(self, p: torch.Tensor, candidates: Sequence[tuple[int, Optional[torch.Tensor]]],
                stats: Optional[list] = None) -> tuple[Optional[int], int]:
        residual = p
        for index, (token, q) in enumerate(candidates):
            px = float(residual[token])
            if q is None:  # a point mass on ``token``
                qx, overlap = 1.0, px
            else:
                qx = float(q[token])
                overlap = float(torch.minimum(residual, q).sum())
                if qx <= 0.0:
                    raise ValueError(f"draft token {token} has probability 0 under the distribution it was drawn from")
            accept = min(1.0, px / qx)
            if stats is not None:
                stats.append((accept, overlap))
            if uniform(self.generator, p.device) < accept:
                return index, int(token)
            if q is None:
                left = residual.clone()
                left[token] = 0.0
            else:
                left = (residual - q).clamp_min(0.0)
            total = float(left.sum())
            if total > 0.0:  # 0 only when residual == q up to rounding, where a rejection cannot happen
                residual = left / total
        return None, self.sample(residual)

    def sample(self, p: torch.Tensor) -> int:
        return draw(p, self.generator)

    def walk(self, probs: torch.Tensor, tokens: Sequence[int], parents: Sequence[int],
             q: Optional[torch.Tensor]) -> tuple[list[int], int, list]:
        """Walk a draft tree (a chain: parents = -1, 0, 1, ...) from the root; ``probs[r]`` is p after row r
        (row 0 = the pending token, row i + 1 = node i). Returns (accepted node path, next token, stats)."""
        children: dict[int, list[int]] = {}
        for i, parent in enumerate(parents):
            children.setdefault(parent, []).append(i)
        if q is not None:
            q = align(q.to(device=probs.device, dtype=probs.dtype), probs.shape[-1])
        stats: list = []
        path: list[int] = []
        node = -1
        while True:
            row = probs[node + 1]
            kids = children.get(node, [])
            if not kids:
                return path, self.sample(row), stats  # bonus token from p
            chosen, token = self.resolve(row, [(int(tokens[c]), None if q is None else q[c]) for c in kids], stats)
            if chosen is None:
                return path, token, stats
            node = kids[chosen]
            path.append(node)


def acceptance_for(sampling: Optional[Sampling]):
    """The acceptance rule of a run: greedy at T = 0, speculative sampling at T > 0."""
    return GreedyAcceptance() if sampling is None or sampling.greedy else SamplingAcceptance(sampling)


@dataclass
class ForwardTimer:
    """Accumulates time spent inside model forward passes (the rest of wall time is harness overhead)."""

    seconds: float = 0.0
    calls: int = 0
    last: float = 0.0  # seconds of the most recent measured block

    def reset(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    @contextlib.contextmanager
    def measure(self, devices, count: bool = True):
        """Time the block as forward work, synchronising ``devices`` (one device or all a model spans) at both
        ends; ``count`` adds one forward pass."""
        synchronize(devices)
        t0 = time.perf_counter()
        yield
        synchronize(devices)
        self.last = time.perf_counter() - t0
        self.seconds += self.last
        self.calls += int(count)


def synchronize(devices) -> None:
    """Wait for the kernels queued on every CUDA device in ``devices`` (a device or a sequence of them): CUDA
    runs asynchronously, so a clock read without it measures kernel launches, not the work."""
    for device in (devices,) if isinstance(devices, (torch.device, str)) else devices:
        device = torch.device(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)


def crop_cache(cache: DynamicCache, keep: int) -> None:
    """Keep the first ``keep`` positions. transformers 5.x needs a negative count (tokens to drop)."""
    drop = cache.get_seq_length() - keep
    if drop > 0:
        cache.crop(-drop)


class TargetVerifier:
    """Verification of chain (and tree) drafts with a KV-cached target: greedy, or speculative sampling when
    ``acceptance`` is a :class:`SamplingAcceptance` (its random stream is set per question by :meth:`set_rng`)."""

    def __init__(self, model, feature_layers: Sequence[int] = (), acceptance=None):
        from .models import input_device, model_devices

        self.model = model
        # A target spread over GPUs takes its inputs on the first (embeddings) and yields logits on the last
        # (LM head); every device is synchronised around a timed forward.
        self.device = input_device(model)
        self.devices = model_devices(model)
        self.acceptance = acceptance or GreedyAcceptance()
        self.feature_layers = tuple(feature_layers)
        self.timer = ForwardTimer()
        self.cache: Optional[DynamicCache] = None
        self.pending: Optional[int] = None
        self.committed = 0  # tokens in the cache
        self.last_verify_forward_seconds = 0.0
        self.last_verified_tokens = 0

    # -- model calls -----------------------------------------------------------------------------
    @torch.inference_mode()
    def _forward(self, ids: list[int], attention_mask=None, position_ids=None, logits_to_keep: int = 0):
        want_hidden = bool(self.feature_layers)
        with self.timer.measure(self.devices):
            out = self.model(
                input_ids=torch.tensor([ids], device=self.device),
                past_key_values=self.cache,
                use_cache=True,
                attention_mask=attention_mask,
                position_ids=position_ids,
                output_hidden_states=want_hidden,
                logits_to_keep=logits_to_keep,  # 0 = every position
            )
        return out, self.timer.last

    def _features(self, out, rows: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        if not self.feature_layers:
            return None
        # hidden_states[0] is the embedding output; layer i's output is hidden_states[i + 1]. Layers of a
        # device-mapped target live on different GPUs: the drafter reads the features on the input device.
        taps = [out.hidden_states[i + 1][0].to(self.device) for i in self.feature_layers]
        feats = torch.cat(taps, dim=-1)
        return feats if rows is None else feats[rows]

    @torch.inference_mode()
    def sequence_features(self, ids: Sequence[int]) -> torch.Tensor:
        """Tap features of every position of ``ids`` from one forward without a cache (replay hands a
        drafter the taps verification would have computed; equal up to floating-point summation order)."""
        if not self.feature_layers:
            raise ValueError("sequence_features needs a verifier built with feature_layers")
        from .models import input_device

        out = self.model(input_ids=torch.tensor([list(ids)], device=input_device(self.model)), output_hidden_states=True, use_cache=False,
                         logits_to_keep=1)
        return self._features(out)

    @property
    def sampling(self) -> bool:
        return not getattr(self.acceptance, "greedy", True)

    def set_rng(self, seed: int) -> None:
        """The question's random stream for acceptance tests, residual and bonus draws (T > 0 only)."""
        if self.sampling:
            self.acceptance.set_generator(new_generator(seed, self.device))

    # -- protocol --------------------------------------------------------------------------------
    def start(self, prompt_ids: list[int]) -> Optional[torch.Tensor]:
        """Prefill every prompt token but the last, which becomes ``pending``. Returns tap features."""
        if not prompt_ids:
            raise ValueError("empty prompt")
        self.cache = DynamicCache(config=self.model.config)
        self.committed = 0
        self.pending = prompt_ids[-1]
        features = None
        if len(prompt_ids) > 1:
            # The prefill's logits are never read: without this a 2k-token prompt of a 152k-vocabulary target
            # materialises a 2k x 152k logit matrix (1.2 GB in float32) for nothing.
            out, _ = self._forward(list(prompt_ids[:-1]), logits_to_keep=1)
            features = self._features(out)
            self.committed = len(prompt_ids) - 1
        return features

    def verify(self, draft: Draft) -> Verdict:
        if draft.tree_parents is not None:
            return self.verify_tree(draft)
        tokens = list(draft.tokens)
        out, elapsed = self._forward([self.pending] + tokens)
        self.last_verify_forward_seconds = elapsed
        self.last_verified_tokens = len(tokens) + 1
        if self.sampling:
            probs = self.acceptance.target_probs(out.logits[0])
            path, next_token, stats = self.acceptance.walk(probs, tokens, list(range(-1, len(tokens) - 1)), draft.q)
            n = len(path)
            return self._commit_chain(out, n, next_token, len(tokens), [int(t) for t in tokens[:n]] + [int(next_token)],
                                      accept_probs=[a for a, _ in stats], overlaps=[o for _, o in stats])
        choice = self.acceptance.choose(out.logits[0]).tolist()
        n = self.acceptance.accept(tokens, choice)
        # Greedy traces keep the target's argmax at every drafted position, past the first rejection too.
        return self._commit_chain(out, n, int(choice[n]), len(tokens), [int(t) for t in choice])

    def _commit_chain(self, out, n: int, next_token: int, drafted: int, target_tokens: list[int], **extra) -> Verdict:
        """Keep the pending token and the first ``n`` drafted ones in the cache; ``next_token`` becomes pending."""
        features = self._features(out, torch.arange(n + 1, device=self.device))
        crop_cache(self.cache, self.committed + 1 + n)
        self.committed += 1 + n
        self.pending = next_token
        return Verdict(accepted_len=n, next_token=next_token, target_tokens=target_tokens, bonus=n == drafted,
                       hidden_states=features, **extra)

    def verify_tree(self, draft: Draft) -> Verdict:
        """Verify a draft tree in one forward with a tree attention mask; keep the longest matching path.

        Node i attends to the committed prefix, the pending token, and its ancestors. After acceptance the
        cache is rebuilt for the accepted path only (rows of the accepted nodes are gathered).
        """
        tokens = list(draft.tokens)
        parents = list(draft.tree_parents or [])
        n_nodes = len(tokens)
        past = self.committed
        # depth of each node (root = pending token at depth 0)
        depth = [0] * n_nodes
        for i, p in enumerate(parents):
            if p >= i:
                raise ValueError("tree_parents must list parents before children")
            depth[i] = 1 if p < 0 else depth[p] + 1
        total = n_nodes + 1
        dtype = next(self.model.parameters()).dtype
        neg = torch.finfo(dtype).min
        allowed = torch.zeros(total, past + total, dtype=torch.bool)
        allowed[:, :past] = True
        allowed[0, past] = True
        for i in range(n_nodes):
            row = i + 1
            allowed[row, past] = True  # the pending token is every node's root
            allowed[row, past + row] = True
            a = parents[i]
            while a >= 0:
                allowed[row, past + a + 1] = True
                a = parents[a]
        mask = torch.full((1, 1, total, past + total), neg, dtype=dtype)
        mask[0, 0][allowed] = 0.0
        positions = torch.tensor([[past] + [past + d for d in depth]], device=self.device)
        out, elapsed = self._forward([self.pending] + tokens, attention_mask=mask.to(self.device), position_ids=positions)
        self.last_verify_forward_seconds = elapsed
        self.last_verified_tokens = total
        extra: dict = {}
        if self.sampling:
            probs = self.acceptance.target_probs(out.logits[0])
            path, next_token, stats = self.acceptance.walk(probs, tokens, parents, draft.q)
            extra = {"accept_probs": [a for a, _ in stats], "overlaps": [o for _, o in stats]}
        else:
            path, next_token = self._greedy_tree_path(out.logits[0], tokens, parents)
        # The target's tokens are the accepted nodes then the next one (greedy: its argmax at each row).
        rows = [0] + [i + 1 for i in path]
        self._keep_rows(past, rows)
        features = self._features(out, torch.tensor(rows, device=self.device))
        self.committed = past + len(rows)
        self.pending = next_token
        return Verdict(
            accepted_len=len(path),
            next_token=next_token,
            target_tokens=[int(tokens[i]) for i in path] + [int(next_token)],
            bonus=len(path) > 0 and path[-1] not in parents,
            accepted_path=path,
            hidden_states=features,
            **extra,
        )

    def _greedy_tree_path(self, logits: torch.Tensor, tokens: list[int], parents: list[int]) -> tuple[list[int], int]:
        """Follow the target's argmax down the tree from the pending token: (accepted node path, next token)."""
        choice = self.acceptance.choose(logits).tolist()
        children: dict[int, list[int]] = {}
        for i, p in enumerate(parents):
            children.setdefault(p, []).append(i)
        path: list[int] = []
        row_of_tip = 0  # row (0 = pending) whose logits decide the next step
        node = -1
        while True:
            want = choice[row_of_tip]
            nxt = next((c for c in children.get(node, []) if tokens[c] == want), None)
            if nxt is None:
                break
            path.append(nxt)
            node = nxt
            row_of_tip = nxt + 1
        return path, int(choice[row_of_tip])

    def _keep_rows(self, past: int, rows: list[int]) -> None:
        """Keep cache positions [0, past) plus the given rows of the last forward (tree roll-back)."""
        index = torch.tensor([past + r for r in rows], device=self.device)
        for layer in self.cache.layers:
            keys, values = layer.keys, layer.values
            layer.keys = torch.cat([keys[:, :, :past], keys.index_select(2, index)], dim=2)
            layer.values = torch.cat([values[:, :, :past], values.index_select(2, index)], dim=2)
