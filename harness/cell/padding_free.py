"""Padding-free batches: a batch's rows laid end to end in one row, with attention kept inside each row.

trl's own collator (``padding_free=True``) packs the rows with per-row ``position_ids``, so no step computes on
padding. Attention must then stay inside each row: ``varlen_attention`` (registered as ``harness_varlen``) runs
SDPA once per row with ``is_causal=True`` (row bounds from the collator's ``cu_seq_lens_q``), which costs
sum(L_i^2), where one block-diagonal mask over the packed row would cost (sum L_i)^2. Without row bounds (padded
batches, generation) it is transformers' SDPA attention. ``varlen_blockers`` names what a model's attention does
that per-row causal SDPA would not.
"""

from __future__ import annotations

import functools

VARLEN = "harness_varlen"

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
                "apply; this model needs padded batches (varlen_blockers does not know it yet)")
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
