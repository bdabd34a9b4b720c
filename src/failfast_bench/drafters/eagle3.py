"""EAGLE-3 drafting: a chain of ``spec_len`` tokens (vLLM's setting) or an EAGLE-2 style dynamic tree
(SGLang's ``--speculative-num-steps/--speculative-eagle-topk/--speculative-num-draft-tokens``).

The verifier hands back the target's tap features for every position it commits (``Verdict.hidden_states``;
the prompt's come through :meth:`Eagle3Drafter.observe_prompt_features`), so the head never needs a second
target pass. Each round starts with one head pass over the newly committed rows (their true target features,
each paired with the *next* committed token); the last of those rows predicts the first draft token. Draft
steps then feed the head's own output back. The head's KV cache holds committed rows only between rounds:
rows written while drafting are cropped at the end of :meth:`Eagle3Drafter.propose`.

Tree (EAGLE-2, as in the EAGLE repo's ``topK_genrate`` and SGLang): level 1 is the top_k tokens of the first
pass; each further level feeds the current top_k frontier (one pass, tree attention inside the head) and
scores the top_k children of every frontier node by cumulative log-probability; the next frontier is the
best top_k of those. After ``depth`` levels the best ``total_tokens − 1`` nodes (the root — the pending
token — counts as one verified token, as in SGLang) form the draft. A child never scores above its parent,
so ranking by (score, depth) keeps every chosen node's ancestors.

At T > 0 (``sampling``): the chain draws each token from q = the head's softmax at temperature T with the
run's top-k / top-p, over the draft vocabulary, and reports q over target ids (``Draft.q``). The tree is
the same deterministic top-k tree as at T = 0; its nodes are point masses (``Draft.q = None``), and the
verifier walks it by recursive rejection sampling over siblings (as the EAGLE repo does at T > 0): a
sibling x is accepted with probability p'(x), p' being the target's warped distribution with the siblings
already rejected removed and renormalised; if all are rejected, the token is drawn from what is left.
Confidences stay the T = 0 quantity (the head's untempered probability: the maximum for the chain).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..sampling import Sampling, draw, sampling_of
from ..verify import ForwardTimer
from . import drafter_revision
from .base import STOP_EMPTY, STOP_FIXED, STOP_TOKEN, STOP_TREE, Draft, Drafter, Verdict
from .eagle3_head import Eagle3Head, HeadKVCache, load_head, tap_layers


@dataclass
class _Node:
    token: int
    logp: float  # the node's own log-probability given its parent
    score: float  # cumulative log-probability along its path
    level: int
    parent: int  # index into the candidate list, -1 = the root (pending token)


class Eagle3Drafter(Drafter):
    name = "eagle3"

    def __init__(
        self,
        head: Eagle3Head,
        feature_layers: tuple[int, ...],
        spec_len: int = 5,
        tree: bool = False,
        depth: int = 8,
        top_k: int = 10,
        total_tokens: int = 60,
        stop_ids: tuple[int, ...] = (),
        sampling: Optional[Sampling] = None,
    ):
        self.head = head
        self.sampling = sampling
        self.target_feature_layers = tuple(feature_layers)
        self.spec_len = spec_len
        self.tree = tree
        self.depth = depth
        self.top_k = min(top_k, head.draft_vocab_size)
        self.total_tokens = total_tokens
        self.stop_ids = set(stop_ids)
        self.device = head.lm_head.weight.device
        self.timer = ForwardTimer()
        self.cache = HeadKVCache()
        self._prompt: list[int] = []
        # Committed rows not yet run through the head: target features and, per row, the next token.
        self._queued_features: list[torch.Tensor] = []
        self._queued_ids: list[int] = []
        self._prefilled = False

    def describe(self) -> dict:
        d = {"name": self.name, "tree": self.tree, "feature_layers": list(self.target_feature_layers),
             "draft_vocab_size": self.head.draft_vocab_size}
        d.update({"depth": self.depth, "top_k": self.top_k, "total_tokens": self.total_tokens} if self.tree else {"spec_len": self.spec_len})
        return d

    # -- protocol ------------------------------------------------------------------------------------
    def start(self, prompt_ids: list[int]) -> None:
        self.cache = HeadKVCache()
        self._queued_features, self._queued_ids = [], []
        self._prompt = list(prompt_ids)
        self._prefilled = False

    def observe_prompt_features(self, features: torch.Tensor) -> None:
        """Target taps of prompt[:-1]; row s pairs them with prompt[s + 1]."""
        self._queue(features, self._prompt[1 : 1 + features.shape[0]])

    def observe(self, draft: Draft, verdict: Verdict) -> None:
        if verdict.hidden_states is None:
            raise RuntimeError("EAGLE-3 needs the verifier to return tap features (TargetVerifier(feature_layers=...))")
        if draft.tree_parents is not None and verdict.accepted_path is not None:
            accepted = [draft.tokens[i] for i in verdict.accepted_path]
        else:
            accepted = list(draft.tokens[: verdict.accepted_len])
        # Rows: [pending, accepted...]; each is followed by the next committed token.
        self._queue(verdict.hidden_states, accepted + [verdict.next_token])

    def propose(self, context: list[int]) -> Draft:
        if not self._queued_ids:
            # Only before the first verification of a one-token prompt: no target features exist yet.
            return Draft(tokens=[], stop_reason=STOP_EMPTY)
        committed_rows = len(self.cache) + len(self._queued_ids)
        first_kind = "decode" if self._prefilled else "prefill"
        hidden = self._feed_committed()
        self._prefilled = True
        try:
            if self.tree:
                return self._tree(hidden, committed_rows, first_kind)
            return self._chain(hidden, committed_rows, first_kind)
        finally:
            self.cache.crop(committed_rows)

    # -- head passes ---------------------------------------------------------------------------------
    def _queue(self, features: torch.Tensor, next_ids: list[int]) -> None:
        if features.shape[0] != len(next_ids):
            raise RuntimeError(f"EAGLE-3: {features.shape[0]} feature rows but {len(next_ids)} next tokens")
        self._queued_features.append(features)
        self._queued_ids.extend(int(t) for t in next_ids)

    @torch.inference_mode()
    def _run(self, hidden, ids: list[int], positions: list[int], allowed=None, fuse: bool = False) -> torch.Tensor:
        with self.timer.measure(self.device):
            if fuse:
                hidden = self.head.fuse(hidden)
            out = self.head.step(
                hidden,
                torch.tensor([ids], device=self.device),
                torch.tensor([positions], device=self.device),
                self.cache,
                allowed,
            )
        return out[0]

    @torch.inference_mode()
    def _feed_committed(self) -> torch.Tensor:
        """Head pass over the queued committed rows (fc fusion included); returns the last row's output [H]."""
        feats = torch.cat(self._queued_features, dim=0).to(device=self.device, dtype=self.head.fc.weight.dtype)
        ids = self._queued_ids
        past = len(self.cache)
        out = self._run(feats[None], ids, list(range(past, past + len(ids))), fuse=True)
        self._queued_features, self._queued_ids = [], []
        return out[-1]

    @torch.inference_mode()
    def _log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        # The LM head is part of the drafter's forward work (not harness overhead), but not a pass of its own.
        with self.timer.measure(self.device, count=False):
            return torch.log_softmax(self.head.logits(hidden).float(), dim=-1)

    # -- chain ---------------------------------------------------------------------------------------
    def _chain(self, hidden: torch.Tensor, committed_rows: int, first_kind: str) -> Draft:
        tokens: list[int] = []
        confidences: list[float] = []
        q_rows: list[torch.Tensor] = []
        stop_reason = STOP_FIXED
        passes = {first_kind: 1}
        while True:
            logp = self._log_probs(hidden)
            if self.sampling_on:
                q = self.sampling.probs(logp)  # log-probabilities are logits up to a constant
                draft_id = draw(q, self.generator)
                q_rows.append(q)
                confidences.append(float(torch.exp(logp.max())))
            else:
                draft_id = int(torch.argmax(logp))
                confidences.append(float(torch.exp(logp[draft_id])))
            token = int(self.head.to_target_ids(torch.tensor(draft_id, device=self.device)))
            tokens.append(token)
            if token in self.stop_ids:
                stop_reason = STOP_TOKEN
                break
            if len(tokens) >= self.spec_len:
                break
            position = committed_rows - 1 + len(tokens)
            hidden = self._run(hidden[None, None], [token], [position])[-1]
            passes["decode"] = passes.get("decode", 0) + 1
        q = self._to_target_space(torch.stack(q_rows)) if q_rows else None
        return Draft(tokens=tokens, confidences=confidences, passes=passes, stop_reason=stop_reason, q=q)

    def _to_target_space(self, q_draft: torch.Tensor) -> torch.Tensor:
        """Distributions over draft ids [n, V_draft] as distributions over target ids [n, V_target]."""
        ids = self.head.to_target_ids(torch.arange(self.head.draft_vocab_size, device=q_draft.device))
        width = max(int(self.head.config.vocab_size), int(ids.max()) + 1)
        out = torch.zeros(q_draft.shape[0], width, dtype=q_draft.dtype, device=q_draft.device)
        return out.index_copy_(1, ids, q_draft)

    # -- tree ----------------------------------------------------------------------------------------
    def _tree(self, hidden: torch.Tensor, committed_rows: int, first_kind: str) -> Draft:
        k = self.top_k
        passes = {first_kind: 1}
        nodes: list[_Node] = []
        logp = self._log_probs(hidden)
        top = torch.topk(logp, k)
        frontier = []  # candidate indices of the current frontier
        for lp, d in zip(top.values.tolist(), top.indices.tolist()):
            frontier.append(len(nodes))
            nodes.append(_Node(self._target_id(d), lp, lp, 1, -1))
        frontier_hidden = hidden[None].expand(k, -1)  # each frontier node's input = its parent's output
        row_of: dict[int, int] = {}  # candidate index -> its row in the head cache (fed frontier nodes)
        for level in range(2, self.depth + 1):
            past = len(self.cache)
            allowed = torch.zeros(len(frontier), past + len(frontier), dtype=torch.bool, device=self.device)
            allowed[:, :committed_rows] = True
            for i, c in enumerate(frontier):
                allowed[i, past + i] = True
                a = nodes[c].parent
                while a >= 0:
                    allowed[i, row_of[a]] = True
                    a = nodes[a].parent
                row_of[c] = past + i
            position = committed_rows - 1 + (level - 1)
            out = self._run(frontier_hidden[None], [nodes[c].token for c in frontier], [position] * len(frontier), allowed)
            passes["decode"] = passes.get("decode", 0) + 1
            logp = self._log_probs(out)  # [k, V_draft]
            top = torch.topk(logp, k, dim=-1)
            parent_scores = torch.tensor([nodes[c].score for c in frontier], device=self.device)
            cum = (top.values + parent_scores[:, None]).flatten()
            first_child = len(nodes)
            for row, c in enumerate(frontier):
                for j in range(k):
                    lp = float(top.values[row, j])
                    nodes.append(_Node(self._target_id(int(top.indices[row, j])), lp, nodes[c].score + lp, level, c))
            best = torch.topk(cum, min(k, cum.numel())).indices.tolist()
            frontier = [first_child + b for b in best]
            frontier_hidden = out[[b // k for b in best]]
        return self._select(nodes, passes)

    def _target_id(self, draft_id: int) -> int:
        return draft_id + int(self.head.d2t[draft_id])

    def _select(self, nodes: list[_Node], passes: dict) -> Draft:
        budget = max(self.total_tokens - 1, 1)
        ranked = sorted(range(len(nodes)), key=lambda i: (-nodes[i].score, nodes[i].level, i))[:budget]
        chosen = sorted(ranked, key=lambda i: (nodes[i].level, i))  # parents before children
        index = {c: n for n, c in enumerate(chosen)}
        tokens, parents, confidences = [], [], []
        for c in chosen:
            node = nodes[c]
            tokens.append(node.token)
            parents.append(-1 if node.parent < 0 else index[node.parent])
            confidences.append(math.exp(node.logp))
        return Draft(tokens=tokens, confidences=confidences, passes=passes, stop_reason=STOP_TREE, tree_parents=parents)


def build(cfg, model_ref, target_model, target_tokenizer, stop_ids, device, dtype) -> Drafter:
    """Registry hook: load the head named by ``drafter.model`` next to the target."""
    d = cfg.drafter
    param = next(target_model.parameters())
    head = load_head(model_ref, target_model, dtype=dtype, device=param.device, revision=drafter_revision(d))
    layers = tap_layers(head.config, target_model.config.num_hidden_layers)
    return Eagle3Drafter(
        head,
        layers,
        spec_len=d.spec_len,
        tree=bool(d.tree),
        depth=d.depth,
        top_k=d.top_k,
        total_tokens=d.total_tokens,
        stop_ids=tuple(stop_ids),
        sampling=sampling_of(cfg),
    )
