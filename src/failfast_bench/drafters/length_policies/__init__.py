"""Length policies: when a block-diffusion drafter stops drafting (one small file per rule).

* :class:`FixedLength` (``fixed.py``): Fast-dLLM's fixed ``spec_len``.
* :class:`FailFastPolicy` (``failfast.py``): FailFast, paper Algorithm 1 (faithful and clean modes, draft reuse).
* :class:`CostAware` (``cost_aware.py``): widen while the expected accepted tokens pay for the extra drafter
  passes and verification under a hardware profile (no τ).
* :class:`AdaptiveLength` (``adaptive.py``): DiffuSpec's ADL, the next length from moving averages of the
  generated and the accepted lengths.

The interface is :class:`LengthPolicy` (``base.py``); the drafter that composes a policy is
:class:`~failfast_bench.drafters.dllm.BlockDiffusionDrafter`.
"""
from .adaptive import AdaptiveLength
from .base import LengthPolicy
from .cost_aware import CostAware
from .failfast import FailFastPolicy, rejected_overlap
from .fixed import FixedLength

__all__ = ["LengthPolicy", "FixedLength", "FailFastPolicy", "CostAware", "AdaptiveLength", "rejected_overlap"]
