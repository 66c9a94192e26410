"""Padding-free batches: a batch's rows laid end to end in one row, with attention kept inside each row.

trl's own collator (``padding_free=True``) packs the rows with per-row ``position_ids``, so no step computes on
padding. Attention must then stay inside each row: ``varlen_attention`` (registered as ``harness_varlen``) runs
SDPA once per row with ``is_causal=True`` (row bounds from the collator's ``cu_seq_lens_q``), within the layer's
sliding window where it has one, which costs sum(L_i^2), where one block-diagonal mask over the packed row would
cost (sum L_i)^2. Without row bounds (padded batches, generation) it is transformers' SDPA attention.
``varlen_blockers`` names what a model's attention does that per-row SDPA would not.
"""

from __future__ import annotations

import functools
import os
from collections import Counter

VARLEN = "harness_varlen"

# Attention arguments per-row SDPA cannot apply: soft-capping (Gemma 2), an additive bias (ALiBi, T5-style relative
# positions) or attention sinks (gpt-oss). Each is passed to the attention function by name in transformers 5's
# model code. A sliding window (Mistral, Phi-3, Gemma 2/3 local layers, Qwen2 with use_sliding_window) is applied
# per row: ``sliding_window``.
SCORE_CHANGES = {"softcap": "attention soft-capping", "position_bias": "an attention bias", "s_aux": "attention sinks"}


class PerRowAttentionError(RuntimeError):
    """The model asked per-row attention for something it cannot compute; raised rather than computing another
    attention than the model's."""


def varlen_blockers(model, max_len: int) -> list[str]:
    """Why per-row SDPA would compute another attention than ``model``'s own, or [] when it computes the same.

    Read from the config before training: attention that is not causal (Gemma 3's ``use_bidirectional_attention``,
    a config that says ``is_causal`` false), chunked attention shorter than the longest row (``max_len``), attention
    soft-capping, an additive attention bias (ALiBi) or attention sinks. A sliding window is applied per row, and
    biases on the q/k/v projections (Qwen2) are part of the projections: neither blocks."""
    text = model.config.get_text_config()
    out = []
    if getattr(text, "use_bidirectional_attention", False) or getattr(text, "is_causal", True) is False:
        out.append("bidirectional (non-causal) attention")
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


def window_mask(length: int, window: int, device):
    """Causal attention over the last ``window`` positions, transformers' sliding-window convention
    (masking_utils.sliding_window_overlay: key j is seen from query i when i - window < j <= i)."""
    import torch

    i = torch.arange(length, device=device)
    offset = i[:, None] - i[None, :]
    return (offset >= 0) & (offset < window)


def varlen_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                     **kwargs):
    """SDPA per packed row: ``query`` is [1, heads, sum(L_i), dim] and ``cu_seq_lens_q`` holds the row bounds.

    Each row is causal; a row longer than the layer's ``sliding_window`` attends within the window
    (``window_mask``). Without row bounds (a padded batch, generation) it is exactly transformers' SDPA
    attention. With them, an argument that changes the scores otherwise (``SCORE_CHANGES``) raises
    ``PerRowAttentionError``: ``varlen_blockers`` keeps such models off this path, so reaching it means a model the
    check does not know, and a wrong attention would otherwise go unnoticed."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None or query.shape[0] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    for name, what in SCORE_CHANGES.items():
        if kwargs.get(name) is not None:
            raise PerRowAttentionError(
                f"per-row attention got {what} ({name}={kwargs[name]}) from {type(module).__name__}, which it "
                "cannot apply; this model needs padded batches (varlen_blockers does not know it yet)")
    window = kwargs.get("sliding_window")
    kernel, ran = varlen_kernel(query)
    KERNELS_RAN[ran] += 1
    if kernel is not None:
        # [1, heads, T, dim] -> [T, heads, dim]; the window as flash attention counts it (left keys beside the
        # query's own); max_length_q is the collator's longest row, so no host sync is needed for the bounds.
        q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
        longest = int(kwargs.get("max_length_q") or (bounds[1:] - bounds[:-1]).max())
        out = kernel(q, k, v, bounds, bounds, longest, longest, scale=scaling,
                     window_size=(window - 1, 0) if window is not None else (-1, 0),
                     enable_gqa=key.shape[1] != query.shape[1])
        return out.unsqueeze(0), None
    cuts = bounds.tolist()
    gqa = key.shape[1] != query.shape[1]
    p = dropout if module.training else 0.0
    parts = []
    for s, e in zip(cuts[:-1], cuts[1:]):
        if e <= s:
            continue
        # A row within its window is plain causal attention; a longer one gets the window's mask.
        mask = window_mask(e - s, window, query.device) if window is not None and e - s > window else None
        parts.append(torch.nn.functional.scaled_dot_product_attention(
            query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], attn_mask=mask, dropout_p=p, scale=scaling,
            is_causal=mask is None, enable_gqa=gqa))
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    return out.transpose(1, 2).contiguous(), None


KERNEL_ENV = "HARNESS_VARLEN_KERNEL"  # =1: torch's varlen flash attention on CUDA, to be measured against per-row SDPA
# =1: padding-free batches on CUDA too. Off by default there: on CUDA per-row SDPA adds a host sync per layer and
# trl's padded batches run one fused kernel, and which is faster has not been measured yet
# (benchmarks/gpu_matrix.sh's on/off table measures it; harness/cell/trl_changes.py reads this).
CUDA_ENV = "HARNESS_PADDING_FREE_CUDA"
PER_ROW, VARLEN_ATTN = "per-row SDPA", "torch.nn.attention.varlen.varlen_attn"
# What ran for packed rows, {what ran (and why, where KERNEL_ENV asked for another): attention calls}: counted as
# they run, so the record (trl_changes.Applied, which clears it before training) says what did, not what was asked.
KERNELS_RAN: Counter = Counter()


def varlen_kernel(query):
    """(torch's variable-length flash attention, its name) (torch.nn.attention.varlen.varlen_attn: one kernel for
    every row, no host sync for the row bounds) when ``HARNESS_VARLEN_KERNEL=1``, the tensors are on CUDA, and this
    torch has it; else (None, per-row SDPA and, where the variable asked for the kernel, why it did not run). Off by
    default: it has not yet been held against transformers' attention on a GPU (benchmarks/gpu_matrix.sh does that)."""
    if os.environ.get(KERNEL_ENV) != "1":
        return None, PER_ROW
    if not query.is_cuda:
        return None, f"{PER_ROW} ({KERNEL_ENV}=1, but the tensors are on {query.device.type}, not CUDA)"
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError as e:
        return None, f"{PER_ROW} ({KERNEL_ENV}=1, but this torch cannot import {VARLEN_ATTN}: {e})"
    return varlen_attn, VARLEN_ATTN


def kernels_record() -> str:
    """What ran for packed rows since ``KERNELS_RAN`` was cleared: each kernel with its share of attention calls
    where more than one ran."""
    if not KERNELS_RAN:
        return "none: no packed batch ran"
    if len(KERNELS_RAN) == 1:
        return next(iter(KERNELS_RAN))
    total = sum(KERNELS_RAN.values())
    return "; ".join(f"{name} in {n} of {total} attention calls" for name, n in KERNELS_RAN.most_common())


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


def count_packed_tokens(trainer) -> None:
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
