"""What the harness changes in trl's SFTTrainer path, and under which conditions.

Each change computes the loss on the same targets, in the same batches and order, with the same weights, and
leaves out work or memory; tests/integration/test_conformance.py holds each against plain peft + trl on padded
batches, on every model family it covers, and docs/benchmarks.md has the measurements. ``apply`` makes each change
where its conditions hold, on a constructed trainer, and records which it made and which it left as trl has them,
with the reason (train.json ``trl_changes``); the report lists the ones left out.

- **Padding-free batches** (harness/cell/padding_free.py): needs trl's padded language-modeling collator, a model
  on SDPA attention, and an attention that per-row SDPA computes (causal, with or without a sliding window; not
  bidirectional; no soft-capping, additive bias or sinks); and a CPU, or ``HARNESS_PADDING_FREE_CUDA=1`` on CUDA,
  where it has not yet been measured to help.
- **A compact LM head** (harness/cell/lm_head.py): needs a device where trl's own head scores every position (off
  CUDA) and a loss over ``lm_head(hidden)`` alone (no logit soft-capping or scale, no MoE router loss).
- **Fused LoRA dropout** (harness/cell/lora_dropout.py): needs a CPU and LoRA adapters with dropout, and plain LoRA
  adapters: a DoRA adapter's magnitude and weight-norm path is not what it computes, so it steps aside there. Every
  method it applies to (LoRA, rsLoRA, LoRA+, the PiSSA, OLoRA and LoftQ starts, 4/8-bit base weights) is held against
  peft's dropout under the same masks (harness/conformance/forward.py, through ``fuse_dropout`` below).
- **Float32 adapters over 4/8-bit weights**: needs a CPU; trl's bfloat16 cast is 10x slower there.
- **The allocator**: needs a CPU and glibc; see ``tune_allocator``.

Recomputing activations (torch's selective checkpointing, keeping matmul and attention outputs) was measured
too and left out: it cut little memory beyond the above and cost about 45% more CPU time per step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass, field

from harness.cell.lm_head import compact_lm_head, head_blockers
from harness.cell.lora_dropout import fuse_lora_dropout
from harness.cell.padding_free import (
    CUDA_ENV,
    KERNEL_ENV,
    KERNELS_RAN,
    count_packed_tokens,
    kernels_record,
    use_varlen,
    varlen_blockers,
)

CHANGES = ("padding_free", "compact_lm_head", "fused_lora_dropout", "float32_adapters", "malloc_mmap_threshold")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>


def lora_variants(model) -> set[str]:
    """The peft LoRA variants (DoRA: DoraLinearVariant) of a model's adapters; empty for plain LoRA."""
    return {type(v).__name__ for m in model.modules() for v in (getattr(m, "lora_variant", None) or {}).values()}


def any_dropout(model) -> bool:
    import torch

    return any(isinstance(d, torch.nn.Dropout) and d.p > 0 for m in model.modules()
               for d in (getattr(m, "lora_dropout", None) or {}).values())


def fuse_dropout(model, device: str) -> tuple[str, object]:
    """Fused LoRA dropout where its conditions hold: ("applied", the undo function), or ("left_out" or
    "not_applicable", why not). Shared with the conformance check that holds the fused gradients against peft's
    dropout under the same masks (harness/conformance/checks.py), so the check takes the path a cell takes."""
    if device != "cpu":
        return "not_applicable", f"on {device}, dropout's fused kernel keeps a one-byte mask already"
    if not any(".lora_A." in n for n, _ in model.named_parameters()):
        return "not_applicable", "the method trains no LoRA adapter"
    if (variants := lora_variants(model)) and any_dropout(model):
        return "left_out", (f"the adapters are {', '.join(sorted(variants))} (DoRA's magnitude and weight-norm path), "
                            "which the fused dropout does not compute; peft's own dropout runs")
    undo = fuse_lora_dropout(model)
    return ("not_applicable", "no adapter has dropout") if undo is None else ("applied", undo)


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
    """Which changes ``apply`` made and which it left as trl has them, with the reason (train.json
    ``trl_changes``), and how to undo the changes before generation. A change is ``left_out`` when it would apply on
    this device for this method but the model does not meet its conditions (the report says so), and
    ``not_applicable`` when the device or the method has no use for it."""

    applied: list = field(default_factory=list)
    left_out: dict = field(default_factory=dict)
    not_applicable: dict = field(default_factory=dict)
    undo: list = field(default_factory=list)

    def made(self, name: str, undo=None) -> None:
        self.applied.append(name)
        if undo is not None:
            self.undo.append(undo)

    def record(self) -> dict:
        out = {"applied": list(self.applied), "left_out": dict(self.left_out),
               "not_applicable": dict(self.not_applicable)}
        # What ran padding-free attention, read after training: HARNESS_VARLEN_KERNEL=1 asks for torch's varlen
        # kernel, and where it could not run (not CUDA, a torch without it) per-row SDPA did and this says why.
        return {**out, "attention_kernel": kernels_record()} if "padding_free" in self.applied else out

    def restore(self) -> None:
        while self.undo:
            self.undo.pop()()


def apply(trainer, cfg, device: str) -> Applied:
    """Apply each change whose conditions hold to a constructed SFTTrainer, before ``trainer.train()``; record the
    reason for each that does not (``Applied``)."""
    import torch
    from trl.kernels.chunked_logprob import _use_triton
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    done = Applied()
    if not cfg.trl_changes:
        done.not_applicable.update({name: "switched off (--no-trl-changes)" for name in CHANGES})
        return done
    model = trainer.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kbit = getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False)

    # Padding-free batches with per-row attention.
    collator, attention = trainer.data_collator, getattr(base.config, "_attn_implementation", None)
    blockers = varlen_blockers(base, cfg.max_seq_len)
    if type(collator) is not DataCollatorForLanguageModeling or collator.padding_free:
        done.not_applicable["padding_free"] = "trl chose another collator than its padded language-modeling one"
    elif device == "cuda" and os.environ.get(CUDA_ENV) != "1" and os.environ.get(KERNEL_ENV) != "1":
        done.not_applicable["padding_free"] = ("on cuda, not yet measured to help over trl's padded batches "
                                               f"({CUDA_ENV}=1 turns it on; benchmarks/gpu_matrix.sh measures both)")
    elif attention != "sdpa":
        done.left_out["padding_free"] = (f"the model runs on {attention} attention, and per-row attention stands in "
                                        "for SDPA only; trained on trl's padded batches")
    elif blockers:
        done.left_out["padding_free"] = ("the model's attention has " + " and ".join(blockers)
                                        + ", which per-row attention cannot apply; trained on trl's padded batches")
    else:
        use_varlen(base)
        trainer.data_collator = DataCollatorForLanguageModeling(
            pad_token_id=collator.pad_token_id, padding_free=True, pad_to_multiple_of=collator.pad_to_multiple_of)
        count_packed_tokens(trainer)
        KERNELS_RAN.clear()  # this training's packed rows only
        done.made("padding_free", lambda: setattr(base.config, "_attn_implementation", attention))

    # The LM head over trained positions only.
    head = head_blockers(base)
    if _use_triton(torch.device(device)):
        done.not_applicable["compact_lm_head"] = f"on {device}, trl's own Triton head scores only the trained positions"
    elif "forward" not in vars(base):
        done.left_out["compact_lm_head"] = "trl did not put its chunked head on this model"
    elif head:
        done.left_out["compact_lm_head"] = ("the loss is not over lm_head(hidden) alone: " + ", ".join(head)
                                           + "; trl's own head scores it")
    else:
        trl_forward = vars(base)["forward"]  # trl's fused head; restored as plain trl leaves it
        compact_lm_head(base)
        done.made("compact_lm_head", lambda: setattr(base, "forward", trl_forward))

    # LoRA dropout fused into the A projection.
    kind, outcome = fuse_dropout(model, device)
    if kind == "applied":
        done.made("fused_lora_dropout", outcome)
    else:
        getattr(done, kind)["fused_lora_dropout"] = outcome

    # float32 adapters over 4/8-bit weights.
    if device != "cpu" or not kbit:
        done.not_applicable["float32_adapters"] = ("the base weights are not 4/8-bit" if not kbit else
                                            f"on {device}, trl's bfloat16 adapters are the QLoRA recipe")
    else:
        # trl casts QLoRA adapters to bfloat16 (the QLoRA paper's GPU recipe); on the 2-core CPUs the harness was
        # measured on, bfloat16 matmuls ran 10-13x slower than float32. The base weights' compute dtype on CPU is
        # float32 already (harness/spec/precision.py).
        for p in model.parameters():
            if p.requires_grad and p.dtype == torch.bfloat16:
                p.data = p.data.float()
        done.made("float32_adapters")

    if device != "cpu":
        done.not_applicable["malloc_mmap_threshold"] = f"on {device}, torch's own allocator holds the tensors"
    elif not tune_allocator():
        done.not_applicable["malloc_mmap_threshold"] = "not glibc (mallopt unavailable)"
    else:
        done.made("malloc_mmap_threshold")
    return done
