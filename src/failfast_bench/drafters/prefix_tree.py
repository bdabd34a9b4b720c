"""Confidence-guided prefix tree of diffusion drafts (in the spirit of D²SD, arXiv 2606.04446).

*What shape the draft takes*, on top of a block-diffusion chain drafter (``drafters/dllm.py``, any length
policy: fixed for ``drafter=dllm``, FailFast, cost-aware). One round:

1. **Trunk.** The chain drafter drafts its chain exactly as it would alone (same passes, same cache).
2. **Boundary.** The first trunk position whose commit-time confidence is below ``threshold``: where the
   verifier most likely rejects first. No position below it: the round's draft is the trunk chain itself
   (no branch, no extra pass).
3. **Alternatives.** The ``k`` most probable proposable tokens at the boundary other than the trunk's own,
   from the distribution of the pass that committed the boundary (a denoising pass, or the cache write
   that yielded a block's first token).
4. **Re-draft.** The block holding the boundary is rebuilt once per alternative: the context and trunk
   tokens before the boundary, the alternative at it, masks after it. All of them are denoised together
   in one batched pass over the cached prefix before that block (up to ``branch_passes`` passes: every
   pass but the last commits, per branch, the positions above θ plus the most confident one; the last
   pass commits what is left). Each branch drafts up to ``branch_len`` tokens after its alternative and
   never past the end of the boundary's block (crossing it would need one cache write per branch). A
   branch ends after a stop token; an alternative that is a stop token has no continuation.
5. **Tree.** The trunk chain, then, per alternative, the chain [alternative, its re-drafted tokens] hung on
   the trunk node before the boundary (on the pending token when the boundary is the first position).
   Nodes are listed trunk first, then branch by branch, parents before children (``Draft.tree_parents``).
   The verifier checks every node in one target pass with tree attention.

Differences from D²SD, on purpose: the paper pairs the block drafter with a second, trained
variable-prefix drafter that re-anchors at the top-K prefix ranges; here one drafter does both (the same
dLLM, re-anchored by masking everything after the alternative), and the K branches are K alternative
tokens at one boundary. The re-draft never touches the chain drafter's block cache (it runs over a
throw-away copy of the cached prefix), so the next round reuses the cache exactly as the chain would.

Cost accounting (modeled latency prices ``Draft.passes``): a batched pass over m blocks is charged as m
denoising passes, the work it does (m blocks of B tokens over the same prefix, each the work of one pass).
It is an upper bound on its time, deliberately: a batch shares the weight reads and the prefix, so it costs
less than m passes wherever a pass is not purely compute-bound (measured on this 2-core CPU with the shipped
SmolLM2 drafter, one thread, 160 cached tokens: m = 2, 3, 4 took 1.36, 1.69, 2.08 single passes; on a
memory-bound GPU a small batch costs about one pass). A profile has one price per pass, so the tree is never
priced below what it computes. ``Draft.extra`` keeps ``tree_batched_passes`` (passes run) beside the charge.
Verification is charged for every node: the verifier feeds nodes + 1 tokens (``verified_tokens``), as for
EAGLE-3 trees (a profile without a verify curve, like ``a6000_paper``, prices any length as one step).

Greedy only (T = 0). Exact speculative sampling over this tree is possible in principle (the alternatives
are point masses chosen from the boundary's distribution; siblings tried after the trunk's drawn token
against the residual keep the output distributed as p), but it needs the branch tokens drawn left to right
with their q rows reported per node; that is not built, so T > 0 is refused before any model loads.

Open choices, each a config key (``drafter.tree_*``, defaults in brackets): ``tree_k`` alternatives [3],
``tree_threshold`` on the commit-time confidence [0.5], ``tree_branch_len`` tokens after each alternative
[8], ``tree_branch_passes`` batched passes at most [1]; θ of the re-draft's commits is the trunk's θ.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from .base import Draft, Drafter, Verdict
from .dllm import BlockDiffusionDrafter


class PrefixTreeDrafter(Drafter):
    """A block-diffusion chain drafter's draft, branched at its first low-confidence position."""

    def __init__(self, chain: BlockDiffusionDrafter, *, k: int = 3, threshold: float = 0.5, branch_len: int = 8,
                 branch_passes: int = 1):
        if k < 1:
            raise ValueError(f"tree_k={k} must be >= 1 (alternatives at the boundary)")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"tree_threshold={threshold} is outside [0, 1]")
        if branch_len < 0 or branch_passes < 1:
            raise ValueError(f"need tree_branch_len >= 0 and tree_branch_passes >= 1, got {branch_len}, {branch_passes}")
        if chain.sampling_on:
            raise ValueError("a prefix tree of diffusion drafts is verified greedily only: it needs temperature 0")
        if getattr(chain.policy, "reuse_drafts", False):
            raise ValueError("draft reuse rewrites the trunk after the fact: it cannot be combined with a prefix tree")
        self.chain = chain
        self.name = f"{chain.name}_tree"
        self.k = int(k)
        self.threshold = float(threshold)
        self.branch_len = int(branch_len)
        self.branch_passes = int(branch_passes)
        chain.keep_alternatives = self.k + 1  # the trunk's own token may be among the best k + 1
        self._trunk: Optional[Draft] = None
        # A target-conditioned trunk reads the taps of every committed position, trunk or branch alike.
        self.target_feature_layers = chain.target_feature_layers

    def observe_prompt_features(self, features) -> None:
        self.chain.observe_prompt_features(features)

    @property
    def timer(self):
        return self.chain.timer

    def start(self, prompt_ids: list[int]) -> None:
        self.chain.start(prompt_ids)

    def set_remaining(self, remaining: int) -> None:
        self.chain.set_remaining(remaining)

    def describe(self) -> dict:
        return {**self.chain.describe(), "name": self.name, "shape": "prefix_tree", "tree_k": self.k,
                "tree_threshold": self.threshold, "tree_branch_len": self.branch_len, "tree_branch_passes": self.branch_passes,
                "tree_batch_charge": "one denoising pass per block in the batch"}

    def observe(self, draft: Draft, verdict: Verdict) -> None:
        """The chain drafter hears the verdict on its own trunk: the accepted nodes that are trunk nodes."""
        trunk = self._trunk if self._trunk is not None else draft
        on_trunk = verdict.accepted_len
        if verdict.accepted_path is not None:
            on_trunk = next((n for n, node in enumerate(verdict.accepted_path) if node >= len(trunk.tokens)), len(verdict.accepted_path))
        self.chain.observe(trunk, dataclasses.replace(verdict, accepted_len=on_trunk))

    # -- the round -------------------------------------------------------------------------------
    def propose(self, context: list[int]) -> Draft:
        trunk = self.chain.propose(context)
        self._trunk = trunk
        st = self.chain.last_round
        boundary = next((i for i, c in enumerate(trunk.confidences) if c < self.threshold), None)
        alternatives = [] if boundary is None else [
            (tok, prob) for tok, prob in st.ranked.get(st.ell + boundary, []) if tok != trunk.tokens[boundary]
        ][: self.k]
        if not alternatives:
            trunk.extra.update(tree_nodes=len(trunk.tokens), tree_branches=0, tree_batched_passes=0)
            return trunk
        branches, batched, charged = self._redraft(st, boundary, [tok for tok, _ in alternatives])
        tokens, confidences = list(trunk.tokens), list(trunk.confidences)
        parents = list(range(-1, len(tokens) - 1))
        for (alt, prob), branch in zip(alternatives, branches):
            parent = boundary - 1
            for tok, conf in [(alt, prob)] + branch:
                parents.append(parent)
                parent = len(tokens)
                tokens.append(tok)
                confidences.append(conf)
        passes = dict(trunk.passes)
        passes["denoise"] = passes.get("denoise", 0) + charged
        return Draft(
            tokens=tokens,
            confidences=confidences,
            passes=passes,
            stop_reason=trunk.stop_reason,
            recorded_confidences=trunk.recorded_confidences,
            tree_parents=parents,
            extra={**trunk.extra, "tree_nodes": len(tokens), "tree_branches": len(alternatives), "tree_boundary": boundary,
                   "tree_batched_passes": batched},
        )

    def _redraft(self, st, boundary: int, alternatives: list[int]) -> tuple[list[list[tuple[int, float]]], int, int]:
        """Each alternative's continuation [(token, confidence)], batched passes run, passes charged."""
        chain, model = self.chain, self.chain.model
        B, mask = chain.block_size, chain.mask_token_id
        at = st.ell + boundary
        start = at // B * B
        positions = list(range(at + 1, min(at + self.branch_len, start + B - 1) + 1))
        before = [int(t) for t in st.seq[start:at]]
        blocks = [before + [alt] + [mask] * (start + B - at - 1) for alt in alternatives]
        conf: list[dict[int, float]] = [{} for _ in alternatives]
        live = [b for b, alt in enumerate(alternatives) if alt not in chain.stop_ids] if positions else []
        batched = charged = 0
        while live:
            logits = chain._timed(model.denoise_batch, [blocks[b] for b in live], [p - start for p in positions], start)
            batched += 1
            charged += len(live)
            last = batched == self.branch_passes
            for row, b in enumerate(live):
                self._commit(blocks[b], conf[b], positions, start, logits[row], last)
            live = [b for b in live if any(blocks[b][p - start] == mask for p in positions)]
        return [self._cut(blocks[b], conf[b], positions, start) for b in range(len(alternatives))], batched, charged

    def _commit(self, block: list[int], conf: dict, positions: list[int], start: int, logits, last: bool) -> None:
        """One pass's commits in one branch: the trunk's rule (above θ, plus the most confident), all on the last pass."""
        tokens, confs = self.chain._pick(logits)
        masked = [i for i, p in enumerate(positions) if block[p - start] == self.chain.mask_token_id]
        best = max(masked, key=confs.__getitem__)
        for i in masked:
            if last or confs[i] > self.chain.theta or i == best:
                block[positions[i] - start] = tokens[i]
                conf[positions[i]] = confs[i]

    def _cut(self, block: list[int], conf: dict, positions: list[int], start: int) -> list[tuple[int, float]]:
        """A branch's drafted tokens in order, ending after the first stop token (none after a stop alternative)."""
        out: list[tuple[int, float]] = []
        for p in positions:
            if p not in conf:
                break
            out.append((block[p - start], conf[p]))
            if block[p - start] in self.chain.stop_ids:
                break
        return out
