"""A fake offline Hugging Face Hub: an HF cache directory holding tiny random-weight models under the real
repo ids and in the real on-disk layouts, so the paper-scale (hub id) code paths run here end to end.

Layout, as ``huggingface_hub`` writes it: ``<HF_HOME>/hub/models--<org>--<name>/{blobs,snapshots,refs}``;
``refs/main`` holds a 40-hex commit, ``snapshots/<commit>/<file>`` is a relative symlink into ``blobs/``.

What is faithful to the real repositories (and is what the harness must cope with):

* **Qwen2.5-{7B,14B,32B}-Instruct**: ``Qwen2ForCausalLM``, untied head, embeddings padded to 152,064 rows,
  sharded safetensors with an index, bf16, a ``generation_config.json`` that samples (the harness must not
  care), and the Qwen2.5 tokenizer's ids (<|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645,
  22 special tokens ending at 151664). The tokenizer itself is byte-level BPE *without* merges (every byte a
  token, fillers up to 151,643 entries), so texts are longer than with the real one but ids line up.
* **Qwen2.5-1.5B-Instruct** (AR drafter): tied head, 151,936 rows, the same tokenizer.
* **Fast_dLLM_v2_1.5B**: ``model_type: Fast_dLLM_Qwen``, ``auto_map`` to remote code (stub files that
  refuse to run), ``bd_size: 32``, tied head, 151,936 rows, no ``mask_token_id`` in config.json: the mask
  token ``|<MASK>|`` (151665) exists only in its tokenizer.
* **EAGLE-3 heads** as SpecForge writes them: ``config.json`` (``LlamaForCausalLMEagle3``, one layer,
  ``draft_vocab_size``) + ``model.safetensors`` (``fc``, ``midlayer.*``, ``norm``, ``lm_head``, ``d2t``,
  ``t2d``), no embedding and **no tokenizer files**. One per Qwen2.5 target, plus a Llama-3.1 head (another
  vocabulary) to exercise the refusal.
* **openai/gsm8k** (dataset): ``main/test-*.parquet`` with a few made-up questions.

Scaled down: hidden sizes 32-64, a few layers. The 7B's padded rows (>= 151665) are zero, so like the real
model it never emits them. The 1.5B AR drafter and Fast-dLLM reuse the 7B's weights (rows cut to 151,936),
so drafts are often accepted and the accept paths run, not only rejections.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from tiny_models import draft_vocab_maps, eagle3_head_state

TOKENIZER_WORDS = 151643  # ids 0..151642: the BPE vocabulary of the Qwen2.5 tokenizer
QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]  # ids 151643..151664
EOS_ID = 151645
MASK_TOKEN = "|<MASK>|"
MASK_ID = 151665
TARGET_ROWS = 152064  # Qwen2.5-7B/14B/32B pad their embeddings to this
DRAFTER_ROWS = 151936  # Qwen2.5-1.5B (and Fast_dLLM_v2_1.5B)

TARGET_7B = "Qwen/Qwen2.5-7B-Instruct"
TARGET_14B = "Qwen/Qwen2.5-14B-Instruct"
TARGET_32B = "Qwen/Qwen2.5-32B-Instruct"
AR_DRAFTER = "Qwen/Qwen2.5-1.5B-Instruct"
FAST_DLLM = "Efficient-Large-Model/Fast_dLLM_v2_1.5B"
EAGLE3_7B = "ruipeterpan/Qwen2.5-7B-Instruct_EAGLE3_UltraChat"
EAGLE3_14B = "ruipeterpan/Qwen2.5-14B-Instruct_EAGLE3_UltraChat"
EAGLE3_32B = "ruipeterpan/Qwen2.5-32B-Instruct_EAGLE3_UltraChat"
EAGLE3_LLAMA = "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"
GSM8K = "openai/gsm8k"

# Written in the spirit of Qwen2.5's ChatML template (default system prompt when none is given).
CHAT_TEMPLATE = (
    "{%- if messages[0].role != 'system' %}"
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "{%- endif %}"
    "{%- for m in messages %}"
    "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)
# The regex Qwen2's tokenizer splits with before byte-level encoding.
_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

QUESTIONS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = <<3+4=7>>7\n#### 7"),
    ("A box holds 6 pens. How many pens are in 5 boxes?", "6 * 5 = <<6*5=30>>30\n#### 30"),
    ("Mia reads 12 pages a day. How many pages does she read in a week?", "12 * 7 = <<12*7=84>>84\n#### 84"),
    ("A train travels 60 km per hour for 3 hours. How far does it go?", "60 * 3 = <<60*3=180>>180\n#### 180"),
    ("Sam had 20 stickers and gave away 8. How many are left?", "20 - 8 = <<20-8=12>>12\n#### 12"),
]


@dataclass
class Spec:
    hidden: int
    layers: int
    heads: int = 4
    kv_heads: int = 2


SPECS = {TARGET_7B: Spec(32, 8), TARGET_14B: Spec(40, 4), TARGET_32B: Spec(40, 6)}  # 14B/32B: another width than 7B


@dataclass
class FakeHub:
    home: Path  # HF_HOME
    commits: dict[str, str] = field(default_factory=dict)  # repo id -> commit of refs/main

    @property
    def cache(self) -> Path:  # HF_HUB_CACHE
        return self.home / "hub"

    def env(self) -> dict[str, str]:
        return {"HF_HOME": str(self.home), "HF_HUB_CACHE": str(self.cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    def snapshot(self, repo_id: str, repo_type: str = "model") -> Path:
        return repo_folder(self.cache, repo_id, repo_type) / "snapshots" / self.commits[repo_id]


def repo_folder(cache: Path, repo_id: str, repo_type: str = "model") -> Path:
    return Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def fake_commit(repo_id: str, salt: str = "v1") -> str:
    return hashlib.sha1(f"{repo_id}@{salt}".encode()).hexdigest()


def write_repo(cache: Path, repo_id: str, files: dict[str, bytes], *, repo_type: str = "model", commit: Optional[str] = None,
               ref: str = "main") -> str:
    """Store ``files`` as one commit of ``repo_id`` (blobs + snapshot symlinks) and point ``refs/<ref>`` at it."""
    commit = commit or fake_commit(repo_id)
    folder = repo_folder(cache, repo_id, repo_type)
    snap = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        digest = hashlib.sha256(content).hexdigest()
        blob = folder / "blobs" / digest
        if not blob.exists():
            blob.write_bytes(content)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / ref).write_text(commit)
    return commit


# -- tokenizer -----------------------------------------------------------------------------------
def tokenizer_files(with_mask: bool = False) -> dict[str, bytes]:
    """tokenizer.json, tokenizer_config.json, vocab.json, merges.txt with the Qwen2.5 ids (see module doc).

    ``with_mask``: Fast-dLLM's tokenizer, the same plus the added mask token ``|<MASK>|`` = 151665.
    """
    files = dict(_qwen_tokenizer_files())
    if with_mask:
        tok = json.loads(files["tokenizer.json"])
        tok["added_tokens"].append({"id": MASK_ID, "content": MASK_TOKEN, "single_word": False, "lstrip": False, "rstrip": False,
                                    "normalized": False, "special": True})
        config = json.loads(files["tokenizer_config.json"])
        config["added_tokens_decoder"][str(MASK_ID)] = {"content": MASK_TOKEN, "special": True, "lstrip": False, "rstrip": False,
                                                       "normalized": False, "single_word": False}
        config["mask_token"] = MASK_TOKEN
        files["tokenizer.json"] = json.dumps(tok, ensure_ascii=False).encode()
        files["tokenizer_config.json"] = json.dumps(config, indent=2).encode()
    return files


@functools.lru_cache(maxsize=1)
def _qwen_tokenizer_files() -> tuple[tuple[str, bytes], ...]:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for i in range(len(vocab), TOKENIZER_WORDS):
        vocab[f"Ġw{i}"] = i  # never produced by encoding (no merges), decodes to " w<id>"
    tok = Tokenizer(BPE(vocab=vocab, merges=[], continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated", invert=False), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    specials = QWEN_SPECIALS
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    decoder = {str(TOKENIZER_WORDS + i): {"content": s, "special": True, "lstrip": False, "rstrip": False, "normalized": False, "single_word": False}
               for i, s in enumerate(specials)}
    config = {
        "tokenizer_class": "Qwen2Tokenizer", "added_tokens_decoder": decoder, "additional_special_tokens": QWEN_SPECIALS[1:3],
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
        "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False, "errors": "replace", "model_max_length": 131072,
        "split_special_tokens": False,
    }
    return (
        ("tokenizer.json", tok.to_str().encode()),
        ("tokenizer_config.json", json.dumps(config, indent=2).encode()),
        ("vocab.json", json.dumps(vocab, ensure_ascii=False).encode()),
        ("merges.txt", b"#version: 0.2\n"),
    )


# -- weights -------------------------------------------------------------------------------------
def _safetensors(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()}, metadata={"format": "pt"})


def _sharded(state: dict[str, torch.Tensor], shards: int) -> dict[str, bytes]:
    if shards == 1:
        return {"model.safetensors": _safetensors(state)}
    keys = sorted(state)
    files, weight_map = {}, {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in keys[s::shards]}
        files[name] = _safetensors(part)
        weight_map.update({k: name for k in part})
    total = sum(t.numel() * t.element_size() for t in state.values())
    files["model.safetensors.index.json"] = json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2).encode()
    return files


def qwen2_config(spec: Spec, rows: int, tie: bool, **extra) -> dict:
    """A Qwen2.5 config.json (field set of the real ones, sizes scaled down)."""
    return {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": EOS_ID,
        "hidden_act": "silu", "hidden_size": spec.hidden, "initializer_range": 0.02, "intermediate_size": 2 * spec.hidden,
        "max_position_embeddings": 32768, "max_window_layers": spec.layers, "model_type": "qwen2",
        "num_attention_heads": spec.heads, "num_hidden_layers": spec.layers, "num_key_value_heads": spec.kv_heads,
        "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": 131072,
        "tie_word_embeddings": tie, "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": True,
        "use_sliding_window": False, "vocab_size": rows, **extra,
    }


def _random_qwen2(spec: Spec, seed: int) -> dict[str, torch.Tensor]:
    """A random untied Qwen2 state dict with 152,064 rows; rows past the tokenizer are zero (never emitted)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    fields = {k: v for k, v in qwen2_config(spec, TARGET_ROWS, False).items() if k not in ("architectures", "transformers_version", "torch_dtype")}
    # Peaky random logits (larger init than the stored 0.02): argmax near-ties that float noise could flip are rare.
    model = Qwen2ForCausalLM(Qwen2Config(**{**fields, "initializer_range": 0.3}))
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if "rotary_emb" not in k}
    state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()  # untied tensors, equal values
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        state[key][MASK_ID:] = 0
    return state


GENERATION_CONFIG = {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True, "eos_token_id": [EOS_ID, 151643],
                     "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "transformers_version": "4.43.1"}


def _bf16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.bfloat16) for k, v in state.items()}


def _drafter_state(target_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The 7B's weights as a tied 1.5B-shaped checkpoint (151,936 rows, no lm_head tensor)."""
    state = {k: v for k, v in target_state.items() if k != "lm_head.weight"}
    state["model.embed_tokens.weight"] = state["model.embed_tokens.weight"][:DRAFTER_ROWS].clone()
    return state


def eagle3_files(spec: Spec, vocab: int, draft_vocab: int, seed: int, eos: int = EOS_ID) -> dict[str, bytes]:
    """An EAGLE-3 head as SpecForge saves it: config.json + model.safetensors, no embedding, no tokenizer."""
    h, heads, kv = spec.hidden, spec.heads, spec.kv_heads
    hd, inter = h // heads, 2 * h
    g = torch.Generator().manual_seed(seed)
    state = eagle3_head_state(h, heads, kv, draft_vocab, g)
    state = _bf16(state)
    # SpecForge's maps over the most frequent target ids (here: random ones, eos included), sorted.
    used = sorted({*torch.randperm(min(vocab, TOKENIZER_WORDS), generator=g)[: draft_vocab - 1].tolist(), eos})[:draft_vocab]
    state["d2t"], state["t2d"] = draft_vocab_maps(used, vocab)
    config = {
        "architectures": ["LlamaForCausalLMEagle3"], "bos_token_id": 151643, "eos_token_id": eos, "head_dim": hd,
        "hidden_act": "silu", "hidden_size": h, "initializer_range": 0.02, "intermediate_size": inter,
        "max_position_embeddings": 32768, "model_type": "llama", "num_attention_heads": heads, "num_hidden_layers": 1,
        "num_key_value_heads": kv, "pad_token_id": 0, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": True,
        "vocab_size": vocab, "draft_vocab_size": draft_vocab,
    }
    return {"config.json": json.dumps(config, indent=2).encode(), "model.safetensors": _safetensors(state)}


def gsm8k_files() -> dict[str, bytes]:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"question": [q for q, _ in QUESTIONS], "answer": [a for _, a in QUESTIONS]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    card = ("---\nconfigs:\n- config_name: main\n  data_files:\n  - split: test\n    path: main/test-*\n---\n"
            "# gsm8k (fake: five made-up questions for offline tests)\n")
    return {"README.md": card.encode(), "main/test-00000-of-00001.parquet": buf.getvalue()}


def build(home: Path) -> FakeHub:
    """Write every repo of the fake hub under ``home`` (= HF_HOME); about two seconds."""
    hub = FakeHub(Path(home))
    cache = hub.cache
    tok = tokenizer_files()
    for i, repo in enumerate((TARGET_7B, TARGET_14B, TARGET_32B)):
        state = _random_qwen2(SPECS[repo], seed=i)
        files = {"config.json": json.dumps(qwen2_config(SPECS[repo], TARGET_ROWS, False), indent=2).encode(),
                 "generation_config.json": json.dumps(GENERATION_CONFIG, indent=2).encode(),
                 "LICENSE": b"Apache License 2.0 (fake)\n", "README.md": f"# {repo} (fake, tiny)\n".encode(),
                 **_sharded(_bf16(state), 2), **tok}
        hub.commits[repo] = write_repo(cache, repo, files)
        if repo == TARGET_7B:
            drafter = _bf16(_drafter_state(state))
    small = SPECS[TARGET_7B]
    hub.commits[AR_DRAFTER] = write_repo(cache, AR_DRAFTER, {
        "config.json": json.dumps(qwen2_config(small, DRAFTER_ROWS, True), indent=2).encode(),
        "generation_config.json": json.dumps(GENERATION_CONFIG, indent=2).encode(),
        "model.safetensors": _safetensors(drafter), **tok,
    })
    dllm_config = qwen2_config(small, DRAFTER_ROWS, True, transformers_version="4.53.3", bd_size=32)
    dllm_config.update(architectures=["Fast_dLLM_QwenForCausalLM"], model_type="Fast_dLLM_Qwen", auto_map={
        "AutoConfig": "configuration.Fast_dLLM_QwenConfig",
        "AutoModel": "modeling.Fast_dLLM_QwenModel",
        "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM",
    })
    refuse = b'raise RuntimeError("fake hub: remote code must not run (the harness loads Fast-dLLM without it)")\n'
    hub.commits[FAST_DLLM] = write_repo(cache, FAST_DLLM, {
        "config.json": json.dumps(dllm_config, indent=2).encode(),
        "generation_config.json": json.dumps({"bos_token_id": 151643, "eos_token_id": EOS_ID}).encode(),
        "model.safetensors": _safetensors(drafter), "configuration.py": refuse, "modeling.py": refuse,
        **tokenizer_files(with_mask=True),
    })
    for repo, target, seed in ((EAGLE3_7B, TARGET_7B, 7), (EAGLE3_14B, TARGET_14B, 14), (EAGLE3_32B, TARGET_32B, 32)):
        hub.commits[repo] = write_repo(cache, repo, {**eagle3_files(SPECS[target], TARGET_ROWS, 512, seed),
                                                     "README.md": b"SpecForge EAGLE-3 head (fake, tiny)\n"})
    # Same width as the 7B (so only the vocabulary is wrong): a Llama-3.1 head has 128,256 target ids.
    hub.commits[EAGLE3_LLAMA] = write_repo(cache, EAGLE3_LLAMA, eagle3_files(small, 128256, 512, 8, eos=128009))
    hub.commits[GSM8K] = write_repo(cache, GSM8K, gsm8k_files(), repo_type="dataset")
    return hub


# -- paper-size configs only (the doctor reads configs, never weights) ---------------------------------
# The public hyperparameters of the paper's models; no weights, so only planning code can use this cache.
PAPER_SIZES = {
    TARGET_7B: dict(hidden_size=3584, intermediate_size=18944, num_attention_heads=28, num_hidden_layers=28, num_key_value_heads=4),
    TARGET_14B: dict(hidden_size=5120, intermediate_size=13824, num_attention_heads=40, num_hidden_layers=48, num_key_value_heads=8),
    TARGET_32B: dict(hidden_size=5120, intermediate_size=27648, num_attention_heads=40, num_hidden_layers=64, num_key_value_heads=8),
}
DRAFTER_SIZE = dict(hidden_size=1536, intermediate_size=8960, num_attention_heads=12, num_hidden_layers=28, num_key_value_heads=2)


def build_paper_configs(home: Path) -> FakeHub:
    """A hub cache holding the config.json of each paper model at its real size and its tokenizer, no weights
    (what the doctor and the pre-run checks read)."""
    hub = FakeHub(Path(home))
    base = SPECS[TARGET_7B]
    tok = tokenizer_files()
    for repo, size in PAPER_SIZES.items():
        config = {**qwen2_config(base, TARGET_ROWS, False), **size, "max_window_layers": size["num_hidden_layers"]}
        hub.commits[repo] = write_repo(hub.cache, repo, {"config.json": json.dumps(config, indent=2).encode(), **tok})
    dllm = {**qwen2_config(base, DRAFTER_ROWS, True), **DRAFTER_SIZE, "model_type": "Fast_dLLM_Qwen", "bd_size": 32,
            "architectures": ["Fast_dLLM_QwenForCausalLM"]}
    hub.commits[FAST_DLLM] = write_repo(hub.cache, FAST_DLLM, {"config.json": json.dumps(dllm, indent=2).encode(),
                                                                 **tokenizer_files(with_mask=True)})
    ar = {**qwen2_config(base, DRAFTER_ROWS, True), **DRAFTER_SIZE}
    hub.commits[AR_DRAFTER] = write_repo(hub.cache, AR_DRAFTER, {"config.json": json.dumps(ar, indent=2).encode(), **tok})
    return hub
