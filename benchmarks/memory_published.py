"""Published peak-memory figures that nobody here measured, and the estimate for each with its source's own settings
(``python benchmarks/memory_check.py --published`` prints the table; docs/memory.md has it)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.plan.estimate import estimate  # noqa: E402
from harness.plan.shape import Shape, shipped_shape  # noqa: E402
from harness.spec.methods import resolve_method  # noqa: E402

# Published peak-memory figures that nobody here measured, each with its source's own settings. Where a source
# leaves a setting out, the assumption is named in `assumed`.
PUBLISHED = [
    {"source": "LlamaFactory (arXiv 2403.13372) Table 4, A100-40GB", "model": "llama2-7b", "method": "full",
     "published_gib": 38.72, "batch": 1, "seq": 512, "r": 128, "optimizer": "adamw_8bit", "gc": True,
     "assumed": "'token batch size 512' read as 1 x 512; GB read as GiB"},
    {"source": "LlamaFactory (arXiv 2403.13372) Table 4, A100-40GB", "model": "llama2-7b", "method": "lora",
     "published_gib": 16.32, "batch": 1, "seq": 512, "r": 128, "optimizer": "adamw_8bit", "gc": True,
     "assumed": "'token batch size 512' read as 1 x 512; GB read as GiB"},
    {"source": "LlamaFactory (arXiv 2403.13372) Table 4, A100-40GB", "model": "llama2-7b", "method": "qlora4",
     "published_gib": 7.52, "batch": 1, "seq": 512, "r": 128, "optimizer": "adamw_8bit", "gc": True,
     "assumed": "'token batch size 512' read as 1 x 512; GB read as GiB"},
    {"source": "torchtune README, RTX 4090 (Llama-3.1-8B = llama3-8b shapes)", "model": "llama3-8b",
     "method": "lora", "targets": "q_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "published_gib": 16.2,
     "batch": 2, "seq": 2048, "r": 8, "optimizer": "adamw", "gc": True,
     "assumed": "recipe llama3_1/8B_lora_single_device: packed 2048, r=8, activation checkpointing"},
    {"source": "torchtune README, RTX 4090 (Llama-3.1-8B = llama3-8b shapes)", "model": "llama3-8b",
     "method": "qlora4", "published_gib": 7.4, "batch": 2, "seq": 2048, "r": 8, "optimizer": "adamw", "gc": True,
     "assumed": "recipe llama3_1/8B_qlora_single_device: packed 2048, r=8, all projections"},
    {"source": "QLoRA (arXiv 2305.14314): 65B fits one 48 GB GPU", "model": "llama-65b", "method": "qlora4",
     "published_gib": 48e9 / 2**30, "batch": 1, "seq": 512, "r": 64, "optimizer": "paged_adamw_32bit",
     "gc": True, "assumed": "paper's Guanaco-65B recipe: r=64 on all linear layers, paged 32-bit AdamW; "
                            "batch 1 x 512 (384 source + 128 target tokens)"},
]
# LLaMA-65B (huggyllama/llama-65b config.json): not a shipped model, so its shape is written out here.
LLAMA_65B = {"hidden_size": 8192, "intermediate_size": 22016, "num_hidden_layers": 80, "num_attention_heads": 64,
             "vocab_size": 32000, "tie_word_embeddings": False}


def published() -> list[dict]:
    """The estimate for each published figure, with the source's settings, on CUDA in bf16."""
    rows = []
    for p in PUBLISHED:
        shape = Shape.from_config(LLAMA_65B, "llama-65b") if p["model"] == "llama-65b" else shipped_shape(p["model"])
        spec = resolve_method(p["method"])
        est = estimate(shape, spec, batch_size=p["batch"], seq_len=p["seq"], lora_r=p["r"],
                       lora_target_modules=p.get("targets", "all-linear"), gradient_checkpointing=p["gc"],
                       optimizer=p["optimizer"], device="cuda", mixed_precision="bf16")
        rows.append({**p, "estimate_gib": est.total_bytes / 2**30, "ratio": est.total_bytes / 2**30 /
                     p["published_gib"], "describe": est.describe()})
    return rows
