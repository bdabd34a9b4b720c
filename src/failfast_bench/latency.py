"""Hardware latency profiles: what a drafter pass, a target decode step and a k-token verification cost.

Profiles live in ``conf/hardware/*.yaml`` (``a6000_paper`` holds the paper's constants exactly; ``cpu`` is
measured on this machine by ``python -m failfast_bench.profile``). A stored trace can be re-priced under
any profile without running a model (see :mod:`failfast_bench.report`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from .paths import conf_dir

CONF_HARDWARE = conf_dir() / "hardware"


@dataclass
class HardwareProfile:
    name: str
    drafter_pass_ms: dict[str, float]
    target_step_ms: dict[str, float]
    verify_ms: dict[str, dict[int, float]] = field(default_factory=dict)
    fallback_target: Optional[str] = None
    description: str = ""
    # Conditions the profile was measured under, per target (``python -m failfast_bench.profile`` writes
    # them: dtype, threads, ...); empty for constants such as the paper's. The load guard reads them.
    measured: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "HardwareProfile":
        return cls(
            name=str(data["name"]),
            drafter_pass_ms={str(k): float(v) for k, v in dict(data.get("drafter_pass_ms") or {}).items()},
            target_step_ms={str(k): float(v) for k, v in dict(data.get("target_step_ms") or {}).items()},
            verify_ms={
                str(t): {int(k): float(v) for k, v in dict(curve).items()}
                for t, curve in dict(data.get("verify_ms") or {}).items()
            },
            fallback_target=data.get("fallback_target"),
            description=str(data.get("description", "")),
            measured={str(k): v for k, v in dict(data.get("measured") or {}).items()},
        )

    def target_key(self, target: str) -> str:
        """The table key used to price ``target`` (the fallback when the profile has no entry for it)."""
        if target in self.target_step_ms:
            return target
        if self.fallback_target and self.fallback_target in self.target_step_ms:
            return self.fallback_target
        raise KeyError(
            f"hardware profile {self.name!r} has no target step time for {target!r} and no fallback; "
            f"known: {', '.join(sorted(self.target_step_ms))}"
        )

    def step_ms(self, target: str) -> float:
        return self.target_step_ms[self.target_key(target)]

    def pass_ms(self, drafter: str) -> float:
        if drafter == "vanilla":
            return 0.0  # no drafter: every profile prices vanilla (it makes no drafter passes)
        for key in (drafter, "default"):
            if key in self.drafter_pass_ms:
                return self.drafter_pass_ms[key]
        raise KeyError(f"hardware profile {self.name!r} has no drafter pass time for {drafter!r} and no 'default'")

    def verify_cost_ms(self, target: str, k: int) -> float:
        """Time of one target forward over ``k`` new tokens (k = 1 is a decode step).

        Piecewise-linear in the measured points; flat below the first, linear extrapolation past the last.
        Without a measured curve a verification costs one decode step (the paper's assumption).
        """
        curve = self.verify_ms.get(self.target_key(target))
        if not curve:
            return self.step_ms(target)
        ks = sorted(curve)
        if k <= ks[0]:
            return curve[ks[0]]
        for lo, hi in zip(ks, ks[1:]):
            if k <= hi:
                w = (k - lo) / (hi - lo)
                return curve[lo] + w * (curve[hi] - curve[lo])
        if len(ks) == 1:
            return curve[ks[0]]
        lo, hi = ks[-2], ks[-1]
        slope = (curve[hi] - curve[lo]) / (hi - lo)
        return curve[hi] + slope * (k - hi)


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    path = Path(name_or_path)
    if not path.suffix:
        path = CONF_HARDWARE / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in CONF_HARDWARE.glob("*.yaml"))
        raise FileNotFoundError(f"no hardware profile {name_or_path!r}; known: {', '.join(known)}")
    data = yaml.safe_load(path.read_text())
    data.pop("defaults", None)
    return HardwareProfile.from_mapping(data)


def profile_of(cfg) -> HardwareProfile:
    """The run's own profile (``cfg.hardware``: a resolved config node, a mapping, or a profile name)."""
    hw = cfg.hardware
    if isinstance(hw, HardwareProfile):
        return hw
    if isinstance(hw, str):
        return load_profile(hw)
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(hw):
            hw = OmegaConf.to_container(hw, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return HardwareProfile.from_mapping(hw)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in CONF_HARDWARE.glob("*.yaml"))
