"""Reading drafter weight files, and packing shipped ones into int8 so every shipped drafter fits the budget.

Shipped drafters store only what differs from the target. Their large matrices are stored as int8 with one
scale per output row (symmetric, absmax / 127); everything else (norms, vocab maps, small tensors) is kept
as saved. A packed file says so in its safetensors metadata; :func:`read_safetensors` restores float32
weights transparently, so loaders and public checkpoints (never packed) share one reading path.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

PACKING_KEY = "failfast_bench_packing"
PACKING = "int8-rowwise-absmax"
SCALE_SUFFIX = ":int8_row_scale"
MIN_PACKED_ELEMENTS = 1 << 16  # smaller tensors are not worth the precision they would lose


def _packable(name: str, tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() and tensor.dim() == 2 and tensor.numel() >= MIN_PACKED_ELEMENTS


def pack_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if not _packable(name, tensor):
            out[name] = tensor.contiguous()
            continue
        w = tensor.float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
        out[name] = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8).contiguous()
        out[name + SCALE_SUFFIX] = scale.contiguous()
    return out


def unpack_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = state.get(name + SCALE_SUFFIX)
        out[name] = tensor if scale is None else tensor.float() * scale[:, None]
    return out


def read_safetensors(path) -> dict[str, torch.Tensor]:
    """All tensors of one ``.safetensors`` file, int8-packed matrices restored to float32."""
    metadata, state = _read(path)
    return unpack_state(state) if metadata.get(PACKING_KEY) == PACKING else state


def _read(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, tensors) of one ``.safetensors`` file, in one pass."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {}), {name: handle.get_tensor(name) for name in handle.keys()}


def pack_file(path) -> tuple[int, int]:
    """Rewrite ``path`` int8-packed (atomically); returns (bytes before, bytes after). Idempotent."""
    from safetensors.torch import save_file

    path = Path(path)
    before = path.stat().st_size
    metadata, state = _read(path)
    if metadata.get(PACKING_KEY) == PACKING:
        return before, before
    packed = pack_state(state)
    tmp = path.with_name(path.name + ".tmp")
    save_file(packed, str(tmp), metadata={**metadata, "format": "pt", PACKING_KEY: PACKING})
    canonicalize_header(tmp)
    tmp.chmod(0o644)
    os.replace(tmp, path)
    return before, path.stat().st_size


def canonicalize_header(path) -> None:
    """Rewrite a safetensors header with sorted keys, in place.

    safetensors writes the metadata map in a per-process random order, so the same tensors would give files with
    different bytes - and runs name a drafter by its file's SHA-256. Sorting keeps the header's length (same
    content), so the data section and its offsets are untouched."""
    import json
    import struct

    with open(path, "r+b") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        raw = fh.read(length)
        header = json.loads(raw)
        canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        if len(canonical) > length:
            raise ValueError(f"{path}: canonical safetensors header is longer than the written one")
        fh.seek(8)
        fh.write(canonical + b" " * (length - len(canonical)))


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "pack":
        print("usage: python -m failfast_bench.drafters.weight_files pack <model.safetensors or dir> ...", file=sys.stderr)
        return 2
    for item in args[1:]:
        path = Path(item) / "model.safetensors" if Path(item).is_dir() else Path(item)
        before, after = pack_file(path)
        print(f"{path}: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
