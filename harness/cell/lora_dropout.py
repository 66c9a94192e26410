"""LoRA dropout fused into the adapter's A projection (CPU, float32): the same masks' effect, less memory."""

from __future__ import annotations

import functools
import math
import types


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
