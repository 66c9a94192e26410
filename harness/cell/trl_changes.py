"""What the harness changes in trl's SFTTrainer path, and under which conditions.

Each change computes the loss on the same targets, in the same batches and order, with the same weights, and
leaves out work or memory; tests/integration/test_conformance.py holds each against plain peft + trl on padded
batches, and docs/benchmarks.md has the measurements. ``apply`` makes them on a constructed trainer and records
which it made (train.json ``lean``) and which it left as trl has them, with the reason (``lean_skipped``):

- **Padding-free batches** (harness/cell/padding_free.py), where the model's attention is plain causal attention.
- **A compact LM head** (harness/cell/lm_head.py), where trl's own head would score every position (off CUDA).
- **Fused LoRA dropout** (harness/cell/lora_dropout.py, CPU).
- **Float32 adapters over 4/8-bit weights** (CPU): trl's bfloat16 cast is 10x slower on CPUs without bfloat16 units.
- **The allocator** (CPU): see ``tune_allocator``.

Recomputing activations (torch's selective checkpointing, keeping matmul and attention outputs) was measured
too and left out: it cut little memory beyond the above and cost about 45% more CPU time per step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass, field

from harness.cell.lm_head import compact_lm_head
from harness.cell.lora_dropout import fuse_lora_dropout
from harness.cell.padding_free import count_packed_tokens, use_varlen, varlen_blockers

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>


def tune_allocator(mmap_threshold: int = 1 << 20) -> bool:
    """Fix glibc's mmap threshold (which also stops its dynamic growth), so that freed activations are returned
    to the system instead of fragmenting the heap. No-op off glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, 2 * mmap_threshold))
    except (OSError, AttributeError):
        return False


@dataclass
class Applied:
    """What ``apply`` changed (recorded in train.json as ``lean``), what it left as trl has it and why
    (``lean_skipped``), and how to undo the changes before generation."""

    names: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    undo: list = field(default_factory=list)

    def restore(self) -> None:
        while self.undo:
            self.undo.pop()()


def apply(trainer, cfg, device: str) -> Applied:
    """Apply the lean changes to a constructed SFTTrainer, before ``trainer.train()``."""
    import torch
    from trl.kernels.chunked_logprob import _use_triton
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    done = Applied()
    model = trainer.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    collator = trainer.data_collator
    blockers = varlen_blockers(base, cfg.max_seq_len)
    if blockers:
        done.skipped["padding_free"] = ("the model's attention has " + " and ".join(blockers)
                                        + ", which per-row attention would ignore; trained on trl's padded batches")
    elif isinstance(collator, DataCollatorForLanguageModeling) and not collator.padding_free:
        previous = use_varlen(base)
        if previous is not None:
            trainer.data_collator = DataCollatorForLanguageModeling(
                pad_token_id=collator.pad_token_id, padding_free=True, pad_to_multiple_of=collator.pad_to_multiple_of)
            count_packed_tokens(trainer)
            done.names.append("padding_free")
            done.undo.append(lambda: setattr(base.config, "_attn_implementation", previous))
    if not _use_triton(torch.device(device)) and "forward" in vars(base):
        trl_forward = vars(base)["forward"]  # trl's fused head; restored as plain trl leaves it
        if compact_lm_head(base):
            done.names.append("compact_lm_head")
            done.undo.append(lambda: setattr(base, "forward", trl_forward))
    if device == "cpu":
        undo = fuse_lora_dropout(model)
        if undo is not None:
            done.names.append("fused_lora_dropout")
            done.undo.append(undo)
    if device == "cpu" and (getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False)):
        # trl casts QLoRA adapters to bfloat16 (the QLoRA paper's GPU recipe); on the 2-core CPUs the harness was
        # measured on, bfloat16 matmuls ran 10-13x slower than float32. The base weights' compute dtype on CPU is
        # float32 already (harness/spec/precision.py).
        cast = [p for p in model.parameters() if p.requires_grad and p.dtype == torch.bfloat16]
        for p in cast:
            p.data = p.data.float()
        if cast:
            done.names.append("float32_adapters")
    if device == "cpu" and tune_allocator():
        done.names.append("malloc_mmap_threshold")
    return done
