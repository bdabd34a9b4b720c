"""The one verifier: the target model with its KV cache.

Invariant between rounds: the target's cache holds every committed token except the last one, which is
``pending``. A round feeds ``[pending] + draft`` in one forward, so the logits at offset i predict the
token after draft[:i]; the longest prefix equal to the target's choice is accepted, the target's token
after it (correction or bonus) becomes the new ``pending``, and the cache is cropped to the committed
tokens. Vanilla decoding is the empty draft: one token per forward.

The acceptance rule is a separate object so speculative sampling (T > 0, rejection sampling against the
drafter's distribution) can replace :class:`GreedyAcceptance` without touching the loop.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from transformers import DynamicCache

from .drafters.base import Draft, Verdict


class GreedyAcceptance:
    """Accept draft tokens while they equal the target's argmax (temperature 0)."""

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=-1)

    def accept(self, draft_tokens: Sequence[int], target_choice: list[int]) -> int:
        n = 0
        for proposed, chosen in zip(draft_tokens, target_choice):
            if proposed != chosen:
                break
            n += 1
        return n


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
    """Greedy verification of chain (and tree) drafts with a KV-cached target."""

    def __init__(self, model, feature_layers: Sequence[int] = (), acceptance: Optional[GreedyAcceptance] = None):
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
    def _forward(self, ids: list[int], attention_mask=None, position_ids=None):
        want_hidden = bool(self.feature_layers)
        with self.timer.measure(self.devices):
            out = self.model(
                input_ids=torch.tensor([ids], device=self.device),
                past_key_values=self.cache,
                use_cache=True,
                attention_mask=attention_mask,
                position_ids=position_ids,
                output_hidden_states=want_hidden,
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
            out, _ = self._forward(list(prompt_ids[:-1]))
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
        choice = self.acceptance.choose(out.logits[0]).tolist()
        n = self.acceptance.accept(tokens, choice)
        next_token = int(choice[n])
        features = self._features(out, torch.arange(n + 1, device=self.device))
        crop_cache(self.cache, self.committed + 1 + n)
        self.committed += 1 + n
        self.pending = next_token
        return Verdict(
            accepted_len=n,
            next_token=next_token,
            target_tokens=[int(t) for t in choice],
            bonus=n == len(tokens),
            hidden_states=features,
        )

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
        choice = self.acceptance.choose(out.logits[0]).tolist()
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
        next_token = int(choice[row_of_tip])
        rows = [0] + [i + 1 for i in path]
        self._keep_rows(past, rows)
        features = self._features(out, torch.tensor(rows, device=self.device))
        self.committed = past + len(rows)
        self.pending = next_token
        return Verdict(
            accepted_len=len(path),
            next_token=next_token,
            target_tokens=[int(choice[r]) for r in rows],
            bonus=len(path) > 0 and not children.get(path[-1]),
            accepted_path=path,
            hidden_states=features,
        )

    def _keep_rows(self, past: int, rows: list[int]) -> None:
        """Keep cache positions [0, past) plus the given rows of the last forward (tree roll-back)."""
        index = torch.tensor([past + r for r in rows], device=self.device)
        for layer in self.cache.layers:
            keys, values = layer.keys, layer.values
            layer.keys = torch.cat([keys[:, :, :past], keys.index_select(2, index)], dim=2)
            layer.values = torch.cat([values[:, :, :past], values.index_select(2, index)], dim=2)
