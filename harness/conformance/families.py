"""Tiny random models of the families people fine-tune, built from transformers' own config classes (no Hub).

A family joins the conformance matrix (harness/conformance/checks.py, asserted by tests/integration/
test_conformance.py and printed by benchmarks/conformance.py) with one line in ``FAMILIES``:
a name and a function from the shared sizes to a config. A tiny model has 2 layers, hidden size 64 and the SmolLM2
tokenizer, builds in about a second, and is saved with a fixed seed, so every run trains the same weights; a
"small" one (6 layers, hidden size 256) serves the memory checks. A window of 8 tokens is far shorter than the
task's rows (about 180 tokens), so a windowed family's check fails wherever the window is ignored.
"""

from __future__ import annotations

from pathlib import Path

WINDOW = 8


# Sizes: "tiny" for the conformance checks (a model in about a second), "small" for the memory checks, where the
# decoder layers, not the 49,152-entry embedding, hold most of a step's memory.
SIZES = {"tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2),
         "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=8,
                       num_key_value_heads=4)}


def _shared(tok, size: str = "tiny") -> dict:
    return dict(**SIZES[size], vocab_size=len(tok), max_position_embeddings=2048,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _llama(c):
    from transformers import LlamaConfig

    return LlamaConfig(**c, tie_word_embeddings=True)


def _mistral(c):
    from transformers import MistralConfig

    return MistralConfig(**c, sliding_window=WINDOW)


def _mixtral(c):
    from transformers import MixtralConfig

    return MixtralConfig(**c, num_local_experts=4, num_experts_per_tok=2)


def _qwen2(c):
    from transformers import Qwen2Config

    return Qwen2Config(**c)


def _qwen3(c):
    from transformers import Qwen3Config

    return Qwen3Config(**c, head_dim=c["hidden_size"] // c["num_attention_heads"])


def _gemma2(c):
    from transformers import Gemma2Config

    # Gemma 2's own defaults: attention soft-capping 50, final logit soft-capping 30, every other layer windowed.
    return Gemma2Config(**c, head_dim=c["hidden_size"] // c["num_attention_heads"], sliding_window=WINDOW)


def _gemma3(c):
    from transformers import Gemma3TextConfig

    layers = ["sliding_attention", "full_attention"] * (c["num_hidden_layers"] // 2)
    return Gemma3TextConfig(**c, head_dim=c["hidden_size"] // c["num_attention_heads"], sliding_window=WINDOW,
                            layer_types=layers)


def _phi3(c):
    from transformers import Phi3Config

    return Phi3Config(**c, sliding_window=WINDOW)


def _gpt_neox(c):
    from transformers import GPTNeoXConfig

    c = {k: v for k, v in c.items() if k not in ("num_key_value_heads", "pad_token_id")}
    return GPTNeoXConfig(**c)


FAMILIES = {
    "llama": _llama,
    "mistral": _mistral,  # a window shorter than the rows
    "mixtral": _mixtral,  # MoE: fused experts, router loss
    "qwen2": _qwen2,  # biases on q, k and v
    "qwen3": _qwen3,  # q/k norms
    "gemma2": _gemma2,  # soft-capping, windowed and global layers
    "gemma3": _gemma3,  # windowed and global layers
    "phi3": _phi3,  # fused qkv_proj and gate_up_proj, a window
    "gpt_neox": _gpt_neox,  # fused query_key_value, other module names, untied head
}


def build(family: str, tok, folder: Path, seed: int = 0, size: str = "tiny") -> Path:
    """Save a random ``family`` model of ``size`` with ``tok`` in ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM

    config = FAMILIES[family](_shared(tok, size))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    folder = Path(folder)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
