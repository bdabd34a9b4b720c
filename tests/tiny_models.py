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
