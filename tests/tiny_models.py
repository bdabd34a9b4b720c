"""Tiny random-weight models of the real architectures (Llama = SmolLM2, Qwen2 = Qwen2.5) for fast tests."""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

VOCAB = 96
EOS = 2


def tiny_config(arch: str = "llama", layers: int = 2, vocab: int = VOCAB, hidden: int = 48, tie: bool = True):
    common = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=EOS,
        bos_token_id=1,
        pad_token_id=0,
        tie_word_embeddings=tie,
        # Peaky random logits: argmax ties (which float noise could flip) become vanishingly rare.
        initializer_range=0.3,
    )
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    raise ValueError(arch)


def tiny_model(arch: str = "llama", seed: int = 0, **kw):
    torch.manual_seed(seed)
    cls = LlamaForCausalLM if arch == "llama" else Qwen2ForCausalLM
    model = cls(tiny_config(arch, **kw)).eval()
    model.requires_grad_(False)
    return model


def greedy_reference(model, prompt: list[int], max_new_tokens: int, stop_ids=(EOS,)) -> list[int]:
    """Plain greedy decoding, one token per forward, without any cache tricks: the losslessness oracle."""
    ids = list(prompt)
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            token = int(logits.argmax())
            out.append(token)
            ids.append(token)
            if token in stop_ids:
                break
    return out


# Words of the tiny chat tokenizer (ids = positions; EOS = 2). Prompts are mostly <unk>: the tiny models are
# random anyway, and a run only needs a chat template and ids below VOCAB.
_WORDS = ["<unk>", "<s>", "</s>", "START", "END", "user", "assistant", "system"] + [str(d) for d in range(10)]
_CHAT_TEMPLATE = (
    "{% for m in messages %}START {{ m['role'] }} {{ m['content'] }} END {% endfor %}"
    "{% if add_generation_prompt %}START assistant {% endif %}"
)


def tiny_chat_tokenizer(vocab: int = VOCAB):
    """A word-level tokenizer with a chat template, ``vocab`` ids (filler words past the named ones)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = _WORDS + [f"w{i}" for i in range(vocab - len(_WORDS))]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    out = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    out.chat_template = _CHAT_TEMPLATE
    return out


def save_tiny_target(directory, arch: str = "qwen2", seed: int = 0, **kw):
    """A tiny random target as a local model directory (weights, config, chat tokenizer); returns the model."""
    model = tiny_model(arch, seed=seed, **kw)
    model.save_pretrained(directory)
    tiny_chat_tokenizer().save_pretrained(directory)
    return model


def tiny_run_overrides(tmp_path, target_dir, *extra: str) -> list[str]:
    """Hydra overrides for a seconds-long run of the whole pipeline on a tiny target directory: two questions
    from a small GSM8K-style file written under ``tmp_path``, results in ``tmp_path/runs``."""
    import json
    from pathlib import Path

    data = Path(tmp_path) / "tiny_gsm8k.jsonl"
    rows = [{"question": f"Tom has {n} apples and buys {n + 1} more. How many apples?", "answer": f"#### {2 * n + 1}"} for n in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [
        f"target.model={target_dir}", "target.name=tiny", "target.assets=[]", "target.eos_token_ids=[2]",
        f"dataset.path={data}", "dataset.num_questions=2", "run.max_new_tokens=6", f"run.output_dir={Path(tmp_path) / 'runs'}",
        "run.progress=false", "run.threads=1", *extra,
    ]


def eagle3_head_state(hidden: int, heads: int, kv_heads: int, draft_vocab: int, generator: torch.Generator,
                      scale: float = 0.3) -> dict[str, torch.Tensor]:
    """Random weights of a one-layer EAGLE-3 head under SpecForge's key names (no draft-vocabulary maps):
    fc over 3 tapped layers, a decoder layer whose attention reads [embedding, hidden], norm and draft LM head."""
    h, hd, inter = hidden, hidden // heads, 2 * hidden

    def rnd(*shape):
        return torch.randn(*shape, generator=generator) * scale

    return {
        "fc.weight": rnd(h, 3 * h),
        "midlayer.hidden_norm.weight": torch.ones(h),
        "midlayer.input_layernorm.weight": torch.ones(h),
        "midlayer.post_attention_layernorm.weight": torch.ones(h),
        "midlayer.self_attn.q_proj.weight": rnd(heads * hd, 2 * h),
        "midlayer.self_attn.k_proj.weight": rnd(kv_heads * hd, 2 * h),
        "midlayer.self_attn.v_proj.weight": rnd(kv_heads * hd, 2 * h),
        "midlayer.self_attn.o_proj.weight": rnd(h, heads * hd),
        "midlayer.mlp.gate_proj.weight": rnd(inter, h),
        "midlayer.mlp.up_proj.weight": rnd(inter, h),
        "midlayer.mlp.down_proj.weight": rnd(h, inter),
        "norm.weight": torch.ones(h),
        "lm_head.weight": rnd(draft_vocab, h),
    }


def draft_vocab_maps(used: list[int], vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SpecForge's mapping: d2t[i] = used[i] - i over the sorted used ids; t2d marks them."""
    used = sorted(used)
    d2t = torch.tensor([t - i for i, t in enumerate(used)], dtype=torch.long)
    t2d = torch.zeros(vocab, dtype=torch.bool)
    t2d[used] = True
    return d2t, t2d
