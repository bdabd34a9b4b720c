"""int8 packing of shipped drafter weights: round trip, idempotence, and loaders that read packed files."""
from __future__ import annotations

import torch

from failfast_bench.drafters.weight_files import (
    MIN_PACKED_ELEMENTS, PACKING, PACKING_KEY, pack_file, pack_state, read_safetensors, unpack_state,
)


def test_rowwise_int8_round_trip_is_close_and_small_tensors_are_kept():
    torch.manual_seed(0)
    big = torch.randn(512, 256, dtype=torch.bfloat16)
    norm = torch.randn(256)
    ids = torch.arange(10)
    packed = pack_state({"w": big, "norm": norm, "ids": ids})
    assert packed["w"].dtype == torch.int8 and packed["norm"] is not None and packed["ids"].dtype == torch.int64
    back = unpack_state(packed)
    assert set(back) == {"w", "norm", "ids"}
    err = (back["w"] - big.float()).abs().amax(dim=1) / big.float().abs().amax(dim=1)
    assert float(err.max()) <= 0.5 / 127 + 1e-3  # half a quantisation step of each row's absmax
    assert torch.equal(back["norm"], norm) and torch.equal(back["ids"], ids)
    assert big.numel() >= MIN_PACKED_ELEMENTS


def test_pack_file_is_atomic_idempotent_and_read_transparently(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    w = torch.randn(300, 300).to(torch.bfloat16)
    save_file({"layer.weight": w, "d2t": torch.arange(5)}, str(path), metadata={"format": "pt", "note": "kept"})
    before, after = pack_file(path)
    assert after < 0.6 * before
    assert pack_file(path) == (after, after)  # already packed
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert meta[PACKING_KEY] == PACKING and meta["note"] == "kept"
    state = read_safetensors(path)
    assert set(state) == {"layer.weight", "d2t"} and state["layer.weight"].dtype == torch.float32
    assert torch.allclose(state["layer.weight"], w.float(), atol=float(w.float().abs().max()) / 127)
    assert not list(tmp_path.glob("*.tmp"))


def test_packing_the_same_tensors_gives_the_same_bytes(tmp_path):
    """Runs name a drafter by its weight file's SHA-256: repacking identical tensors must not rename them
    (safetensors writes its metadata map in a random order; the header is rewritten sorted)."""
    import hashlib

    from safetensors.torch import save_file

    torch.manual_seed(1)
    state = {f"layer{i}.weight": torch.randn(300, 300).to(torch.bfloat16) for i in range(3)}
    digests = set()
    for k in range(4):
        path = tmp_path / f"copy{k}.safetensors"
        save_file(state, str(path), metadata={"zeta": "1", "alpha": "2", "mid": "3"})
        pack_file(path)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
        assert torch.equal(read_safetensors(path)["layer0.weight"], read_safetensors(tmp_path / "copy0.safetensors")["layer0.weight"])
    assert len(digests) == 1
