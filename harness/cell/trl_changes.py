"""Lean SFT: what the harness changes in trl's SFTTrainer path so that training neither computes on padding nor
keeps what it does not need. The loss is computed on the same targets, in the same batches and order, with the
same weights; docs/benchmarks.md has the measurements against a plain trl script.

- **Padding-free batches.** trl's own collator (``padding_free=True``) lays a batch's rows end to end in one row
  with per-row ``position_ids``, so no step computes on padding. Attention must then stay inside each row:
  ``harness_varlen`` runs SDPA once per row with ``is_causal=True`` (row bounds from the collator's
  ``cu_seq_lens_q``), which costs sum(L_i^2), where one block-diagonal mask over the packed row would cost
  (sum L_i)^2. Without row bounds (padded batches, generation) it is transformers' SDPA attention.
- **A compact LM head.** trl 1.16 computes log-probabilities in tiles without materializing the logits, but off
  CUDA/XPU it scores every position, prompt and padding included (``compact = _use_triton(device)`` in
  ``trl/trainer/utils.py``), in tiles of up to 4096 x 32768 float32 logits. With the loss on completions only,
  most of that is thrown away; here only positions whose next-token label is trained are projected, through
  trl's own ``ChunkedLogProbFunction`` (so the numbers, entropy and accuracy included, are trl's), in
  1024 x 8192 tiles.
- **Fused LoRA dropout** (CPU): see ``fuse_lora_dropout``.
- **The allocator** (CPU): see ``tune_allocator``.

Recomputing activations (torch's selective checkpointing, keeping matmul and attention outputs) was measured
too and left out: it cut little memory beyond the above and cost about 45% more CPU time per step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import types
from dataclasses import dataclass, field

VARLEN = "harness_varlen"
ROW_TILE, VOCAB_TILE = 1024, 8192  # LM-head tiles: 1024 x 8192 float32 logits = 32 MiB, a few of them at a time


# --- padding-free attention --------------------------------------------------------------------------------

# Attention arguments that change the scores beyond plain causal softmax attention. Per-row SDPA with is_causal
# cannot apply any of them: a sliding window (Mistral, Phi-3, Gemma 2/3 local layers, Qwen2 with
# use_sliding_window), soft-capping (Gemma 2), an additive bias (ALiBi, T5-style relative positions) or attention
# sinks (gpt-oss). Each is passed to the attention function by name in transformers 5's model code.
SCORE_CHANGES = {"sliding_window": "a sliding window", "softcap": "attention soft-capping",
                 "position_bias": "an attention bias", "s_aux": "attention sinks"}


class PerRowAttentionError(RuntimeError):
    """The model asked per-row attention for something it cannot compute; raised rather than computing another
    attention than the model's."""


def varlen_blockers(model, max_len: int) -> list[str]:
    """Why per-row causal SDPA would compute another attention than ``model``'s own, or [] when it computes the same.

    Read from the config before training: a sliding window shorter than the longest row (``max_len``; a window at
    least that long never masks anything), attention soft-capping, an additive attention bias (ALiBi) or attention
    sinks. Biases on the q/k/v projections (Qwen2) are part of the projections and change nothing here."""
    text = model.config.get_text_config()
    out = []
    window = getattr(text, "sliding_window", None)
    types = getattr(text, "layer_types", None)
    windowed = types is None or any(t in ("sliding_attention", "chunked_attention") for t in types)
    if isinstance(window, int) and windowed and window < max_len:
        out.append(f"a sliding window of {window} tokens, shorter than the longest row ({max_len} tokens)")
    chunk = getattr(text, "attention_chunk_size", None)
    if isinstance(chunk, int) and chunk < max_len:
        out.append(f"chunked attention of {chunk} tokens, shorter than the longest row ({max_len} tokens)")
    if getattr(text, "attn_logit_softcapping", None) is not None:
        out.append(f"attention soft-capping ({text.attn_logit_softcapping})")
    if getattr(text, "alibi", False) or getattr(text, "model_type", "") in ("bloom", "mpt"):
        out.append("an attention bias (ALiBi)")
    if getattr(text, "model_type", "") == "gpt_oss":
        out.append("attention sinks")
    return out


def varlen_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                     **kwargs):
    """SDPA per packed row: ``query`` is [1, heads, sum(L_i), dim] and ``cu_seq_lens_q`` holds the row bounds.

    Without row bounds (a padded batch, generation) it is exactly transformers' SDPA attention. With them, an
    argument that changes the scores (``SCORE_CHANGES``) raises ``PerRowAttentionError``: ``varlen_blockers`` keeps
    such models off this path, so reaching it means a model the check does not know, and a wrong attention would
    otherwise go unnoticed."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None or query.shape[0] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    cuts = bounds.tolist()
    longest = max(e - s for s, e in zip(cuts[:-1], cuts[1:]))
    for name, what in SCORE_CHANGES.items():
        given = kwargs.get(name)
        if given is not None and not (name == "sliding_window" and given >= longest):
            raise PerRowAttentionError(
                f"per-row attention got {what} ({name}={given}) from {type(module).__name__}, which it cannot "
                "apply; this model needs padded batches (harness.cell.trl_changes.varlen_blockers does not know it yet)")
    gqa = key.shape[1] != query.shape[1]
    parts = [torch.nn.functional.scaled_dot_product_attention(
        query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout_p=dropout if module.training else 0.0,
        scale=scaling, is_causal=True, enable_gqa=gqa) for s, e in zip(cuts[:-1], cuts[1:]) if e > s]
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    return out.transpose(1, 2).contiguous(), None


@functools.cache
def register_varlen() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(VARLEN, varlen_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN, sdpa_mask)  # padded batches still get SDPA's own mask
    return VARLEN


def use_varlen(model) -> str | None:
    """Switch ``model`` to per-row attention; returns the implementation to restore after training, or None when
    the model does not run on SDPA (then padding-free batches are not used)."""
    config = model.config
    previous = getattr(config, "_attn_implementation", None)
    if previous != "sdpa":
        return None
    config._attn_implementation = register_varlen()
    return previous


# --- compact LM head ---------------------------------------------------------------------------------------

def _plain_head(model) -> bool:
    """True when the logits are exactly ``lm_head(hidden)``: no soft-capping, scaling, bias or MoE loss."""
    import torch

    text = model.config.get_text_config()
    scaled = any(getattr(text, name, None) is not None for name in (
        "final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"))
    head = model.get_output_embeddings()
    return (not scaled and not getattr(text, "output_router_logits", False) and type(head) is torch.nn.Linear
            and head.bias is None and hasattr(model, "base_model"))


def compact_lm_head(model) -> bool:
    """Make ``model(..., fused_lm_head=True)`` (what trl's SFTTrainer calls) score only trained positions.

    ``model`` is the causal LM under any PEFT wrapper, after SFTTrainer added its own fused head. Returns whether
    the head was replaced."""
    if not _plain_head(model):
        return False
    inner = model.forward  # trl's wrapper: without fused_lm_head=True it is the model's own forward
    model.forward = types.MethodType(functools.partial(_compact_forward, inner=inner), model)
    return True


def _compact_forward(self, *args, inner, fused_lm_head=False, labels=None, shift_labels=None,
                     num_items_in_batch=None, **kwargs):
    import torch
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import FusedCausalLMOutput

    if not fused_lm_head:
        return inner(*args, labels=labels, shift_labels=shift_labels, num_items_in_batch=num_items_in_batch,
                     **kwargs)
    kwargs["use_cache"] = False
    hidden = self.base_model(*args, **kwargs).last_hidden_state
    if shift_labels is None:
        hidden, labels = hidden[:, :-1], labels[:, 1:]
    else:
        labels = shift_labels
    mask = labels != -100
    rows, targets = hidden[mask], labels[mask]
    head = self.get_output_embeddings()
    tiles = [ChunkedLogProbFunction.apply(rows[s:s + ROW_TILE], head.weight, None, targets[s:s + ROW_TILE], 1.0,
                                          VOCAB_TILE, None, 1.0, ("entropy", "is_top1"))
             for s in range(0, max(len(rows), 1), ROW_TILE)]
    log_probs, entropy, top1 = (torch.cat([t[i] for t in tiles]) for i in (0, 1, 4))
    # masked_scatter keeps an all-masked batch connected to the graph, as trl's own head does
    full = [x.new_zeros(mask.shape).masked_scatter(mask, x) for x in (log_probs, entropy, top1)]
    count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return FusedCausalLMOutput(loss=-log_probs.sum() / count, log_probs=full[0], entropy=full[1], is_top1=full[2],
                               label_mask=mask)


# --- LoRA dropout ------------------------------------------------------------------------------------------

def fuse_lora_dropout(model):
    """Fold each LoRA adapter's dropout into its A projection (CPU, float32).

    peft computes ``lora_A(dropout(x))``: autograd then keeps two float32 copies of ``x`` per adapter (the
    dropout's scaled mask and its output), seven adapters per layer, about half of a LoRA step's activation
    memory. The fused function keeps the shared input and a one-byte mask instead. Its mask comes from NumPy's
    SFC64 generator seeded by a draw from torch's generator (so ``torch.manual_seed`` and checkpoint
    recomputation see the same masks), keeping each value with probability floor((1 - p) 2^32) / 2^32, which is
    1 - p to 5e-11; torch's CPU Bernoulli sampler took about 15% of a SmolLM2 LoRA step in a
    torch.profiler trace. The masks differ from peft's, so a run's losses differ from plain trl's after the
    first step by dropout noise (docs/benchmarks.md, training against plain trl).
    Returns a function that puts peft's modules back, or None when no adapter has dropout."""
    import torch

    swapped = []
    for module in model.modules():
        drops, heads = getattr(module, "lora_dropout", None), getattr(module, "lora_A", None)
        if not isinstance(drops, torch.nn.ModuleDict) or not isinstance(heads, torch.nn.ModuleDict):
            continue
        for name, drop in list(drops.items()):
            head = heads[name] if name in heads else None
            if (not isinstance(drop, torch.nn.Dropout) or drop.p == 0 or type(head) is not torch.nn.Linear
                    or head.bias is not None or name in getattr(module, "lora_variant", {})):
                continue
            head.forward = types.MethodType(functools.partial(_dropout_linear, keep=1.0 - drop.p), head)
            drops[name] = torch.nn.Identity()
            swapped.append((drops, name, drop, head))

    def undo():
        for drops, name, drop, head in swapped:
            drops[name] = drop
            vars(head).pop("forward", None)

    return undo if swapped else None


def _dropout_linear(self, x, keep: float):
    import torch

    if not self.training:
        return torch.nn.functional.linear(x, self.weight)
    return _dropout_linear_function().apply(x, self.weight, keep)


def _keep_mask(shape, keep: float):
    import numpy as np
    import torch

    n = math.prod(shape)
    seed = int(torch.randint(0, 2**62, ()).item())
    raw = np.random.Generator(np.random.SFC64(seed)).bit_generator.random_raw((n + 1) // 2)
    return torch.from_numpy(raw.view(np.uint32)[:n] < np.uint32(int(keep * 2**32))).view(shape)


@functools.cache
def _dropout_linear_function():
    import torch

    class DropoutLinear(torch.autograd.Function):
        """``linear(dropout(x), weight)``, saving ``x`` and a boolean mask rather than two float copies."""

        @staticmethod
        def forward(ctx, x, weight, keep):
            mask = _keep_mask(x.shape, keep)
            ctx.save_for_backward(x, weight, mask)
            ctx.scale = 1.0 / keep  # applied to the rank-r output: r values per token, not hidden-size
            return torch.nn.functional.linear(torch.where(mask, x, 0.0), weight).mul_(ctx.scale)

        @staticmethod
        def backward(ctx, grad):
            x, weight, mask = ctx.saved_tensors
            grad = grad * ctx.scale
            grad_x = torch.where(mask, grad @ weight, 0.0) if ctx.needs_input_grad[0] else None
            grad_w = None
            if ctx.needs_input_grad[1]:
                grad_w = grad.reshape(-1, grad.shape[-1]).t() @ torch.where(mask, x, 0.0).reshape(-1, x.shape[-1])
            return grad_x, grad_w, None

    return DropoutLinear


# --- allocator ---------------------------------------------------------------------------------------------

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


# --- wiring ------------------------------------------------------------------------------------------------

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
            _count_packed_tokens(trainer)
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
        # trl casts QLoRA adapters to bfloat16 (the QLoRA paper's GPU recipe); this CPU has no bfloat16 units,
        # so bfloat16 adapter matmuls run 10x slower than float32 (../shared/notes/stack-on-cpu.md). The base
        # weights' compute dtype on CPU is float32 already (harness/cell/models.py).
        cast = [p for p in model.parameters() if p.requires_grad and p.dtype == torch.bfloat16]
        for p in cast:
            p.data = p.data.float()
        if cast:
            done.names.append("float32_adapters")
    if device == "cpu" and tune_allocator():
        done.names.append("malloc_mmap_threshold")
    return done


def _count_packed_tokens(trainer) -> None:
    """A packed batch has no attention mask and no padding, so every token counts. (Trainer's fallback counts
    tokens that differ from the pad token, which here is also the end-of-turn token inside every prompt.)"""
    counted = trainer._track_num_input_tokens

    def track(inputs):
        if "attention_mask" in inputs or "position_ids" not in inputs:
            return counted(inputs)
        import torch

        n = torch.as_tensor(inputs["position_ids"].numel(), device=trainer.args.device, dtype=torch.int64)
        trainer.state.num_input_tokens_seen += int(trainer.accelerator.gather(n).sum().item())
    trainer._track_num_input_tokens = track
