"""Length policies: when a block-diffusion drafter stops drafting (one small file per rule).

* :class:`FixedLength` (``fixed.py``): Fast-dLLM's fixed ``spec_len``.
* :class:`FailFastPolicy` (``failfast.py``): FailFast, paper Algorithm 1 (faithful and clean modes, draft reuse).

The interface is :class:`LengthPolicy` (``base.py``); the drafter that composes a policy is
:class:`~failfast_bench.drafters.dllm.BlockDiffusionDrafter`.
"""
from .base import LengthPolicy
from .failfast import FailFastPolicy, rejected_overlap
from .fixed import FixedLength

__all__ = ["LengthPolicy", "FixedLength", "FailFastPolicy", "rejected_overlap"]
