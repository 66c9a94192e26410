"""A compact LM head: only the positions whose next token is trained are projected onto the vocabulary.

trl 1.16 computes log-probabilities in tiles without materializing the logits, but off CUDA/XPU it scores every
position, prompt and padding included (``compact = _use_triton(device)`` in ``trl/trainer/utils.py``), in tiles of
up to 4096 x 32768 float32 logits. With the loss on completions only, most of that is thrown away; here only
positions whose next-token label is trained are projected, through trl's own ``ChunkedLogProbFunction`` (so the
numbers, entropy and accuracy included, are trl's), in 1024 x 8192 tiles.
"""

from __future__ import annotations

import functools
import types

ROW_TILE, VOCAB_TILE = 1024, 8192  # LM-head tiles: 1024 x 8192 float32 logits = 32 MiB, a few of them at a time


# Config fields that transform the logits after the head's matmul (Gemma 2's soft-capping; Cohere's, Granite's and
# others' logit scales), so that the loss is not computed on lm_head(hidden) alone.
LOGIT_CHANGES = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                 "logits_scaling")


def head_blockers(model) -> list[str]:
    """Why the loss is not trl's log-softmax over ``lm_head(hidden)`` alone, or [] when it is."""
    import torch

    text = model.config.get_text_config()
    out = [f"{name} ({getattr(text, name)})" for name in LOGIT_CHANGES if getattr(text, name, None) is not None]
    if getattr(text, "output_router_logits", False):
        out.append("a mixture-of-experts router loss added to the loss (output_router_logits)")
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.bias is not None:
        out.append(f"an LM head that is no plain bias-free Linear ({type(head).__name__})")
    if not hasattr(model, "base_model"):
        out.append("no base model under the head")
    return out


def compact_lm_head(model) -> bool:
    """Make ``model(..., fused_lm_head=True)`` (what trl's SFTTrainer calls) score only trained positions.

    ``model`` is the causal LM under any PEFT wrapper, after SFTTrainer added its own fused head. Returns whether
    the head was replaced."""
    if head_blockers(model):
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
