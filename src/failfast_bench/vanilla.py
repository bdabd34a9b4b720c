"""The vanilla reference of a run: measured in the same process, or reused from an earlier measurement.

Every speculative run needs the target's plain greedy decoding of the same questions: its tokens (the
lossless check) and its wall time (the measured speedup). At paper scale that reference dominates a sweep
(a 32B target, 30 questions x 1024 tokens, 18 jobs: about 7 GPU hours of vanilla alone), and it is the same
for every job. ``run.measure_vanilla`` decides:

- ``always``: measure it in this process (side by side with the method: the only fair ratio on a machine
  whose load varies, hence the CPU default);
- ``reuse``: take the timing and tokens a previous run measured under the same :func:`setup_key` (target
  and numerics, max_new_tokens, device model and count, threads, software versions), measuring only the
  questions no run has measured yet;
- ``auto`` (default): ``reuse`` on CUDA, ``always`` on CPU;
- ``never``: no vanilla run (no measured speedup; the lossless check uses a cached reference if any).

Where a reused timing came from (the run directory and date that measured it) is kept with it and summed up
in the manifest.
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .assets import cache_root
from .trace import write_json

POLICIES = ("auto", "always", "reuse", "never")
# OmegaConf hands a YAML/CLI boolean to a string field as "True"/"False": the old boolean setting.
_LEGACY = {"true": "always", "false": "never"}


def policy(value: Any, device_type: str) -> str:
    """The effective policy (always | reuse | never) of a ``run.measure_vanilla`` value on a device type."""
    name = _LEGACY.get(str(value).strip().lower(), str(value).strip().lower())
    if name not in POLICIES:
        raise ValueError(f"run.measure_vanilla={value!r}; valid: {', '.join(POLICIES)}")
    if name == "auto":
        return "reuse" if device_type == "cuda" else "always"
    return name


def measures(value: Any) -> bool:
    """Whether a run with this setting has a vanilla reference at all (what the config hash keeps)."""
    return policy(value, "cpu") != "never"


def _device_description(device) -> dict[str, Any]:
    import torch

    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        count = torch.cuda.device_count()
        return {"type": "cuda", "names": [torch.cuda.get_device_name(i) for i in range(count)], "count": count}
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"type": "cpu", "names": [cpu], "threads": torch.get_num_threads()}


def setup_key(target_id: str, max_new_tokens: int, device) -> tuple[str, dict[str, Any]]:
    """A key for 'the same vanilla measurement': same target numerics, length, hardware and software."""
    import torch
    import transformers

    setup = {
        "target": target_id,
        "max_new_tokens": int(max_new_tokens),
        "device": _device_description(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    return hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:16], setup


@dataclass
class VanillaMeasurement:
    output_tokens: list[int]
    wall_seconds: float
    measured_by: str  # the run directory that measured it
    measured_at: str


class VanillaStore:
    """Vanilla tokens and wall times per (setup key, question id, prompt), one small JSON file each."""

    def __init__(self, key: str, setup: dict[str, Any], root: Optional[Path] = None):
        self.key = key
        self.setup = setup
        self.root = (root or cache_root() / "vanilla") / key
        self.reused: list[VanillaMeasurement] = []
        self.measured = 0

    def _path(self, question_id: str, prompt: list[int]) -> Path:
        digest = hashlib.sha256(json.dumps([question_id, prompt]).encode()).hexdigest()[:24]
        return self.root / f"{digest}.json"

    def get(self, question_id: str, prompt: list[int]) -> Optional[VanillaMeasurement]:
        path = self._path(question_id, prompt)
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        found = VanillaMeasurement(saved["output_tokens"], float(saved["wall_seconds"]), saved["measured_by"], saved["measured_at"])
        self.reused.append(found)
        return found

    def put(self, question_id: str, prompt: list[int], output_tokens: list[int], wall_seconds: float, run_dir: str) -> None:
        self.measured += 1
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            write_json(self.setup, self.root / "setup.json")
        write_json(
            {
                "question_id": question_id,
                "output_tokens": list(output_tokens),
                "wall_seconds": float(wall_seconds),
                "measured_by": run_dir,
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            self._path(question_id, prompt),
        )

    def manifest(self, policy_name: str) -> dict[str, Any]:
        """What the manifest says about this run's vanilla reference."""
        return {
            "policy": policy_name,
            "setup_key": self.key,
            "store": str(self.root),
            "measured_questions": self.measured,
            "reused_questions": len(self.reused),
            "reused_from": sorted({f"{m.measured_by} ({m.measured_at})" for m in self.reused}),
        }
