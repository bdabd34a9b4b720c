"""A target-conditioned block-diffusion drafter: the project's block drafter that also reads the target's
hidden states of the context (the idea of DFlash-style block drafters, on the Fast-dLLM v2 engine).

What changes against :class:`~failfast_bench.drafters.blockdiff_model.BlockDiffusionLM`: the input of a
*context* row p (a token the target has already verified) is its token embedding **plus** a projection
of the target's tap features at position p - 1 (the outputs of three target layers, low/mid/high, as
EAGLE-3 taps them). The target computes those features anyway while it verifies, and h[p-1] is what the
target "knew" when it chose token p: the same pairing EAGLE-3 uses (feature of s with token s + 1). Rows
the target has not seen (the last committed token's successors: draft tokens and masks) get no
feature, so a drafting round reads features for exactly the positions 1 .. ℓ-1 of the context.

Everything else is the block-diffusion model unchanged: block-causal attention, the block KV cache, the
denoising and cache-update passes, the token shift. FailFast's Algorithm 1 therefore runs on it as is
(same passes, confidences, stop rules). Deliberately *not* DFlash's design: DFlash injects projected
target features into every draft layer's keys and values and never runs the context through the draft
layers; here the context rows go through the draft trunk like any block-diffusion prefill, with the
features added to their inputs. That keeps one engine, one cache and one training recipe.

The block cache must only hold rows computed with their features: a block written by a cache-update
pass during drafting holds draft tokens without features, even when those tokens are accepted later.
:attr:`ConditionedBlockLM.valid_cache_rows` counts the leading cached rows written with every feature
they should have; the drafter crops the cache to it before reusing it (and so prefers kv_policy="crop",
which re-writes only the missing blocks).

On disk: the project layout (``config.json`` ``failfast_bench`` block + trunk weights + mask embedding)
with ``failfast_bench.feature_layers`` and two more tensors, ``feature_norm.weight`` (RMSNorm over the
concatenated taps, which live at very different scales) and ``feature_fuse.weight`` ([H, n_taps * H],
no bias).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from .blockdiff_model import BlockDiffusionLM

FEATURE_NORM_KEY = "feature_norm.weight"
FEATURE_FUSE_KEY = "feature_fuse.weight"


class FeatureFusion(nn.Module):
    """Concatenated target taps [.., n_taps * H] -> an addition to the token embedding [.., H]."""

    def __init__(self, tap_width: int, hidden: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.RMSNorm(tap_width, eps=eps)
        self.fuse = nn.Linear(tap_width, hidden, bias=False)

    def forward(self, taps: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.norm(taps.to(self.fuse.weight.dtype)))

    def state_for_file(self) -> dict[str, torch.Tensor]:
        return {FEATURE_NORM_KEY: self.norm.weight, FEATURE_FUSE_KEY: self.fuse.weight}

    def load_from_file(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.norm.weight.copy_(state[FEATURE_NORM_KEY].float())
            self.fuse.weight.copy_(state[FEATURE_FUSE_KEY].float())


def feature_rows(start: int, count: int, known: int, is_mask: torch.Tensor) -> torch.Tensor:
    """For rows at positions start .. start+count-1: the feature index p - 1, or -1 where the row gets none
    (position 0, masks, and positions whose predecessor the target has not seen, p - 1 >= known)."""
    index = torch.arange(start - 1, start + count - 1, device=is_mask.device)
    ok = (index >= 0) & (index < known) & ~is_mask
    return torch.where(ok, index, torch.full_like(index, -1))


def add_features(embeds: torch.Tensor, index: torch.Tensor, taps: Optional[torch.Tensor], fusion: FeatureFusion) -> torch.Tensor:
    """``embeds`` [n, H] plus fusion(taps[index]) on the rows with index >= 0."""
    rows = (index >= 0).nonzero(as_tuple=True)[0]
    if taps is None or rows.numel() == 0:
        return embeds
    extra = fusion(taps.index_select(0, index.index_select(0, rows)).to(embeds.device))
    return embeds.index_add(0, rows, extra.to(embeds.dtype))


class ConditionedBlockLM(BlockDiffusionLM):
    """A :class:`BlockDiffusionLM` whose context rows also read the target's tap features."""

    def __init__(self, body, embed, head, *, feature_layers: Sequence[int], fusion: FeatureFusion, **kwargs):
        super().__init__(body, embed, head, **kwargs)
        self.feature_layers = tuple(int(i) for i in feature_layers)
        self.fusion = fusion
        self.features: Optional[torch.Tensor] = None  # [known, n_taps * H]: row s = the target's taps at s
        self._valid_rows = 0

    # -- features ----------------------------------------------------------------------------------
    @property
    def known_features(self) -> int:
        return 0 if self.features is None else int(self.features.shape[0])

    def set_features(self, taps: Optional[torch.Tensor]) -> None:
        """The target's taps of positions 0 .. len(taps)-1 (a new question's prompt, or a replayed prefix)."""
        self.features = None if taps is None or taps.shape[0] == 0 else taps.detach().to(self.device)

    def extend_features(self, position: int, taps: torch.Tensor) -> None:
        """Taps of positions ``position`` .. ``position + len(taps) - 1``; earlier ones must be known."""
        if position != self.known_features:
            raise RuntimeError(f"conditioned drafter: features arrive for position {position} but {self.known_features} are known")
        taps = taps.detach().to(self.device)
        self.features = taps if self.features is None else torch.cat([self.features, taps.to(self.features.dtype)])

    @property
    def valid_cache_rows(self) -> int:
        """Leading cached rows that were written with every feature they read in training."""
        return min(self._valid_rows, self.cache_len)

    # -- the block-diffusion model's hooks ---------------------------------------------------------
    def reset(self) -> None:
        super().reset()
        self._valid_rows = 0

    def crop(self, keep: int) -> None:
        super().crop(keep)
        self._valid_rows = min(self._valid_rows, keep)

    def _input_embeds(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        embeds = self.embed_ids(ids)
        rows = [feature_rows(start, ids.shape[1], self.known_features, row == self.mask_token_id) for row in ids]
        return torch.stack([add_features(e, index, self.features, self.fusion) for e, index in zip(embeds, rows)])

    @torch.inference_mode()
    def write_blocks(self, tokens: Sequence[int], every_block_end: bool = False) -> torch.Tensor:
        start = self.cache_len
        logits = super().write_blocks(tokens, every_block_end)
        if self._valid_rows == start:
            # A row p is complete if it needed no feature (p = 0) or had it (p - 1 < known).
            self._valid_rows = min(start + len(tokens), self.known_features + 1)
        return logits

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "conditioned_on": list(self.feature_layers)}


def fusion_from_state(state: dict[str, torch.Tensor], hidden: int, dtype, device) -> FeatureFusion:
    """The fusion module of a saved conditioned drafter (``state`` holds its two tensors)."""
    width = int(state[FEATURE_FUSE_KEY].shape[1])
    if int(state[FEATURE_FUSE_KEY].shape[0]) != hidden:
        raise ValueError(f"{FEATURE_FUSE_KEY} has shape {tuple(state[FEATURE_FUSE_KEY].shape)}, the trunk's hidden size is {hidden}")
    fusion = FeatureFusion(width, hidden)
    fusion.load_from_file(state)
    fusion.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return fusion
