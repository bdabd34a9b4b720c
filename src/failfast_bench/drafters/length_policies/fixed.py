"""Fixed speculation length (Fast-dLLM with ``spec_len``, the paper's naive dLLM baseline).

Assumes nothing about confidences: the round stops as soon as the first ``spec_len`` positions are committed.
"""
from __future__ import annotations

from typing import Union

from ..base import STOP_FIXED
from .base import LengthPolicy


class FixedLength(LengthPolicy):
    name = "fixed"

    def __init__(self, spec_len: int = 8):
        if spec_len < 1:
            raise ValueError(f"spec_len={spec_len} must be >= 1")
        self.spec_len = int(spec_len)

    def initial_window(self) -> int:
        return self.spec_len

    def decide(self, st) -> Union[str, int]:
        return STOP_FIXED

    def describe(self) -> dict:
        return {"spec_len": self.spec_len}
