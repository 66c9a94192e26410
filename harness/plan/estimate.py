"""Pre-flight estimate of a cell's peak memory, from a transformers-style config.json alone.

Pure Python (no torch, no transformers), so `run_matrix.py plan` answers in well under a second. The rules
count what this harness actually runs, op by op (harness/plan/memory_rules.py has the per-tensor ones;
benchmarks/memory_check.py measures them on CPU and docs/memory.md has the table):

* trl 1.16 SFTTrainer with a completion-only loss, set up by harness.cell.trl_changes where its conditions hold:
  padding-free batches and an LM head that projects only the trained positions in tiles (the logits are never
  built for the whole batch). A model those changes step aside for (Gemma 2: eager attention, a soft-capped
  head) is counted on trl's padded batches and trl's own head.
* CPU: every tensor float32. CUDA: weights and activations in the compute dtype (bf16 from compute
  capability 8; fp16 below it, with fp32 master weights for full fine-tuning, harness.cell.models.weight_dtype).
  LoRA adapters are fp32 (peft autocast_adapter_dtype); over 4/8-bit weights trl casts them to bf16 on CUDA
  (harness.cell.trl_changes casts them back to fp32 on CPU), and peft's prepare_model_for_kbit_training casts every
  non-quantized weight (embeddings, norms, lm_head) to fp32, so the residual stream runs in fp32.
* AdamW: two states per trainable parameter in the parameter's dtype, allocated at the first step and kept;
  the fused kernel (transformers' default optimizer for torch >= 2.8) needs no temporaries.
* The peak is the largest of a step's moments: the loss forward, the loss backward, the recompute of the
  last checkpointed layer, the end of the backward pass, and the optimizer step; and of the moments around
  the steps: an adapter start that reads whole weights, and the merge of a DoRA adapter after training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from harness.core.errors import ConfigError
from harness.core.units import GIB
from harness.plan import memory_rules as rules
from harness.plan.shape import Shape, shape_for
from harness.spec.cell import cell_config
from harness.spec.precision import mixed_precision as precision_of

# bitsandbytes NF4 (QLoRA, arXiv 2305.14314 sec. 3): 4 bits per weight, one absmax per 64-weight block; with
# double quantization that absmax is 8-bit, with one fp32 absmax per 256 of them, plus a 256-entry fp32 code.
NF4_BLOCK, DQ_BLOCK = 64, 256
# bitsandbytes 8-bit optimizers (Dettmers et al. 2021, arXiv 2110.02861): each state is 1 byte per value plus
# one fp32 absmax per 256-value block (blockwise update kernels); tensors under 4096 values keep 32-bit states
# (bnb.optim.optimizer.Optimizer8bit, min_8bit_size=4096).
OPT8_BLOCK, OPT8_MIN_SIZE = 256, 4096
OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd")


# --- the estimate -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    method: str
    breakdown: dict  # component -> bytes at the peak moment
    phase: str  # which moment of the step the peak falls in
    weight_format: str  # fp32, bf16, nf4+dq, nf4, int8
    notes: tuple = field(default=())

    @property
    def total_bytes(self) -> int:
        return int(sum(self.breakdown.values()))

    def fits(self, budget_bytes: int) -> bool:
        return self.total_bytes <= budget_bytes

    def describe(self) -> str:
        parts = [f"{k.replace('_', ' ')} {v / GIB:.2f}" + (f" ({self.weight_format})" if k == "weights" else "")
                 for k, v in self.breakdown.items() if v >= GIB / 200]
        return f"est. peak {self.total_bytes / GIB:.1f} GiB ({self.phase}): " + " + ".join(parts)


@dataclass(frozen=True)
class _Bytes:
    """Bytes per element of each kind of tensor, for one method on one device."""

    weight: int  # non-quantized base weights (and, for full, the trained ones)
    act: int  # projection outputs and attention (the compute dtype)
    res: int  # residual stream and norm outputs
    adapter: int  # LoRA A/B, their gradients and AdamW states
    lora_in: int  # the dropped-out input lora_A keeps
    dropout_mask: int  # what dropout keeps for backward
    mlp: int = 0  # the MLP's intermediates (gate, act(gate), up, their product); 0: as ``act``

    def __post_init__(self):
        if not self.mlp:
            object.__setattr__(self, "mlp", self.act)


def _bytes(spec, device: str, compute_bytes: int | None, mixed_precision: str | None = None) -> _Bytes:
    c = compute_bytes or (4 if device == "cpu" else 2)
    if spec.finetune == "full" and device == "cuda" and mixed_precision == "fp16":
        # Below compute capability 8 (T4) the harness trains in fp16 autocast over fp32 master weights, because
        # torch's GradScaler refuses fp16 gradients (harness.cell.models.weight_dtype); the embeddings, and so the
        # residual stream, stay fp32.
        return _Bytes(weight=4, act=c, res=4, adapter=4, lora_in=c, dropout_mask=1)
    # peft casts x to the adapter dtype before dropout and lora_A. On CPU (no autocast) lora_A keeps that
    # cast, and dropout (at::_dropout_impl) a noise tensor of the same dtype; on CUDA the Trainer's bf16
    # autocast makes lora_A keep a compute-dtype copy, and the fused native_dropout keeps a bool mask.
    if spec.quantized:
        # peft prepare_model_for_kbit_training: non-quantized params -> fp32; trl: adapters -> bf16, which
        # harness.cell.trl_changes casts back to fp32 on CPU (no bf16 units there).
        # The norm outputs are fp32 and bitsandbytes' matmuls return their input's dtype, which autocast leaves
        # alone, so gate and up, act(gate) and their product are fp32 (attention's inputs are cast by SDPA's
        # autocast rule).
        adapter = 4 if device == "cpu" else 2
        return _Bytes(weight=4, act=c, res=4, adapter=adapter, lora_in=adapter if device == "cpu" else c,
                      dropout_mask=adapter if device == "cpu" else 1, mlp=4)
    adapter = 4  # peft autocast_adapter_dtype=True keeps adapters fp32
    return _Bytes(weight=c, act=c, res=c, adapter=adapter, lora_in=adapter if device == "cpu" else c,
                  dropout_mask=adapter if device == "cpu" else 1)


def _all_linear(lora_target_modules: str) -> bool:
    return lora_target_modules in ("all-linear", "all_linear")


def _targets(shape: Shape, lora_target_modules: str) -> dict[str, tuple[int, int]]:
    """(out, in) of each Linear-like module LoRA adapts in one layer: peft's all-linear takes every projection and,
    in a mixture of experts, the router (the experts' 3-D weights are counted by ``_expert_adapters``)."""
    linears = shape.linears()
    if _all_linear(lora_target_modules):
        return {**linears, **({"gate": (shape.experts, shape.hidden_size)} if shape.experts else {})}
    names = [t.strip() for t in lora_target_modules.split(",") if t.strip()]
    bad = [t for t in names if t not in linears]
    if bad or not names:
        raise ConfigError(f"LoRA target {bad[0] if bad else lora_target_modules!r} is not a projection of this "
                          f"model; use all-linear or a comma list of {', '.join(linears)}")
    return {t: linears[t] for t in names}


def _expert_adapters(shape: Shape, lora_target_modules: str, r: int) -> list[int]:
    """Numels of the LoRA matrices peft puts on a mixture of experts' 3-D weights per layer (lora.ParamWrapper,
    rank r per expert; the fused gate_up gets rank 2r, one for each of the weights it fuses)."""
    if not shape.experts or not _all_linear(lora_target_modules):
        return []
    e, h, i = shape.experts, shape.hidden_size, shape.intermediate_size
    return [2 * r * e * h, 2 * i * 2 * r * e, r * e * i, h * r * e]


def _quantized_weights(shape: Shape, spec) -> tuple[int, int]:
    """(packed weights, quantization constants) of the decoder layers' projections in bytes."""
    total = 0
    consts = 0
    for out_f, in_f in shape.linears().values():
        n = out_f * in_f
        if spec.bits == 8:  # LLM.int8: int8 weights, one fp32 scale (SCB) per output row
            total += n
            consts += 4 * out_f
        else:
            blocks = math.ceil(n / NF4_BLOCK)
            total += math.ceil(n / 2)
            if spec.bnb_4bit_use_double_quant:
                consts += blocks + 4 * math.ceil(blocks / DQ_BLOCK) + 4 * DQ_BLOCK
            else:
                consts += 4 * blocks
    return total * shape.num_hidden_layers, consts * shape.num_hidden_layers


def _optimizer_bytes(numels: list[int], elem: int, optimizer: str) -> int:
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer {optimizer!r} is not known; choose from {', '.join(OPTIMIZERS)}")
    if optimizer == "sgd":  # torch SGD without momentum (the Trainer's "sgd") keeps no state
        return 0
    if optimizer == "adamw":  # exp_avg and exp_avg_sq, zeros_like(param)
        return 2 * elem * sum(numels)
    if optimizer == "paged_adamw_32bit":  # bitsandbytes 32-bit states are fp32 whatever the parameter dtype
        return 8 * sum(numels)
    return sum(2 * (n + 4 * math.ceil(n / OPT8_BLOCK)) if n >= OPT8_MIN_SIZE else 8 * n for n in numels)


def _weights(shape: Shape, spec, b: _Bytes) -> tuple[dict, str]:
    """The frozen or trained base weights (and quantization constants), and their format's name."""
    if spec.quantized:
        packed, consts = _quantized_weights(shape, spec)
        fmt = "int8" if spec.bits == 8 else spec.bnb_4bit_quant_type + ("+dq" if spec.bnb_4bit_use_double_quant
                                                                         else "")
        return {"weights": packed + shape.other_params * b.weight, "quant_constants": consts}, fmt
    return {"weights": shape.n_params * b.weight}, {4: "fp32", 2: "bf16"}.get(b.weight, f"{8 * b.weight}-bit")


def estimate_generation(shape: Shape, spec, *, batch_size: int, seq_len: int, device: str = "cuda",
                        compute_bytes: int | None = None, padded: bool = True) -> Estimate:
    """Batched generation with ``spec``'s weights (a trained cell's evaluation; LoRA adapters are merged into
    full-precision weights, and over 4/8-bit weights they stay, a few MiB)."""
    b = _bytes(spec, device, compute_bytes)
    persistent, fmt = _weights(shape, spec, b)
    return Estimate(spec.name, rules.inference(shape, b, persistent, batch_size, seq_len, padded), "generation", fmt,
                    _family_note(shape))


def estimate(shape: Shape, spec, *, batch_size: int, seq_len: int, lora_r: int,
             lora_target_modules: str = "all-linear", gradient_checkpointing: bool, optimizer: str = "adamw",
             device: str = "cuda", compute_bytes: int | None = None, lora_dropout: float = 0.05,
             mixed_precision: str | None = None, loss_tokens: int | None = None, grad_accum: int = 1,
             padded: bool = True) -> Estimate:
    """Peak memory of one cell of ``spec`` (a MethodSpec) on ``shape``; see the module docstring for the rules.

    ``seq_len`` is the longest row of a training batch; for ``base`` it is prompt plus generated tokens.
    ``compute_bytes`` overrides the compute dtype's size (2 for bf16/fp16, 4 for fp32) on CUDA;
    ``mixed_precision="fp16"`` is the harness's mode below compute capability 8 (fp32 master weights for
    full fine-tuning). ``loss_tokens`` is the number of trained (completion) positions in a batch; by default
    every position, an upper bound. With ``grad_accum`` > 1 the gradients of the earlier micro-batches stay
    allocated through the later ones' forward passes. ``padded`` applies to generation only (training batches
    are padding-free): ``False`` for prompts of equal length, which get no attention mask.
    """
    if batch_size <= 0 or seq_len <= 1 or lora_r <= 0:
        raise ConfigError(f"batch size, sequence length and LoRA rank must be positive, got {batch_size}, "
                          f"{seq_len}, {lora_r}")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu or cuda, got {device!r}")
    b = _bytes(spec, device, compute_bytes, mixed_precision)
    persistent, fmt = _weights(shape, spec, b)
    if not spec.trains:
        return Estimate(spec.name, rules.inference(shape, b, persistent, batch_size, seq_len, padded), "generation",
                        fmt, _family_note(shape))

    L, h = shape.num_hidden_layers, shape.hidden_size
    targets = _targets(shape, lora_target_modules) if spec.finetune == "lora" else {}
    if spec.finetune == "full":
        layer = [o * i for o, i in shape.linears().values()] + [e * o * i for e, o, i in shape.expert_params().values()]
        embeddings = [shape.vocab_size * h] * (1 if shape.tie_word_embeddings else 2)
        numels = layer * L + embeddings + [shape.n_params - sum(layer) * L - sum(embeddings)]  # + norms and biases
        elem = b.weight
    else:
        numels = ([n for o, i in targets.values() for n in (lora_r * i, o * lora_r)]
                  + _expert_adapters(shape, lora_target_modules, lora_r)) * L
        if spec.use_dora:  # DoRA: one magnitude per output of every adapted weight (peft DoraLinearLayer.weight)
            numels += [o for o, _ in targets.values()] * L
        if device == "cpu" and str(spec.init_lora_weights).startswith("pissa") and not spec.bits:
            # peft's PiSSA start puts each residual weight in a new tensor (lora/layer.py pissa_init: weight.data =
            # W - BA), while the originals stay in the safetensors file mapping that the unadapted weights still
            # use: one more copy of every adapted weight (measured +402 MiB on SmolLM2, docs/memory.md). OLoRA
            # writes its residual in place; on CUDA the weights were copied off the mapping and the old ones freed.
            persistent["weights"] += _adapted_copy(shape, targets, b)
        elem = b.adapter
        persistent["adapters"] = sum(numels) * elem
    grads = sum(numels) * elem
    states = _optimizer_bytes(numels, elem, optimizer)
    # all-linear reaches a mixture of experts' 3-D weights through peft's ParamWrapper, which has no dropout
    # (harness/cell/training.py)
    experts_adapted = bool(shape.experts) and _all_linear(lora_target_modules)
    phase, parts, notes = rules.training(
        shape, spec, b, persistent, grads=grads, states=states, targets=targets, batch_size=batch_size,
        seq_len=seq_len, lora_r=lora_r, gc=gradient_checkpointing, device=device,
        dropout=lora_dropout > 0 and not experts_adapted, optimizer=optimizer, loss_tokens=loss_tokens,
        grad_accum=grad_accum, expert_lora=experts_adapted and spec.finetune == "lora",
        start=_start(shape, spec), merge=_merge(shape, spec, targets, b, device))
    notes += _family_note(shape)
    return Estimate(spec.name, parts, phase, fmt, notes)


# The working memory of an adapter start that reads whole weights, in float32 copies of the largest adapted weight
# (o x i), one layer at a time (harness/cell/adapters.py, peft's lora/layer.py): LoftQ holds the original weight,
# its dequantized 4-bit copy, their difference and the SVD's U and V^T (about one more weight), with LAPACK's
# workspace; PiSSA's randomized SVD keeps the weight's copy and the residual; OLoRA's QR a copy and Q.
START_COPIES = {"loftq": 6, "pissa": 2, "olora": 3}


def _start(shape: Shape, spec) -> int:
    """Bytes an adapter start works in beyond the model, before the first step (0 for peft's default start)."""
    if spec.finetune != "lora":
        return 0
    kind = next((k for k in START_COPIES if str(spec.init_lora_weights).startswith(k)), None)
    if kind is None:
        return 0
    return START_COPIES[kind] * 4 * max(o * i for o, i in shape.linears().values())


def _merge(shape: Shape, spec, targets: dict, b, device: str) -> int:
    """Bytes the merge after training allocates beyond the model (0 where nothing is merged: full fine-tuning,
    adapters over 4/8-bit weights). peft's DoRA merge (lora/variants.py DoraLinearVariant.merge_unsafe) puts each
    merged weight in a new tensor, m / ||W + dW|| * (W + dW), where LoRA adds dW in place. On CPU the originals
    stay in the safetensors file mapping that the unadapted weights still use, so every adapted weight is held
    twice by the last module (measured +405 MiB on SmolLM2, docs/memory.md); on CUDA each old weight is freed as
    its module merges. Either way the last module works in three more copies of a weight: dW, W + dW and the
    clone of the unmerged weight that the norm reads."""
    if spec.finetune != "lora" or spec.quantized or not spec.use_dora:  # harness.cell.training merges the same
        return 0
    copies = _adapted_copy(shape, targets, b) if device == "cpu" else 0
    return copies + 3 * max(o * i for o, i in targets.values()) * b.adapter


def _adapted_copy(shape: Shape, targets: dict, b) -> int:
    """One more copy of every adapted weight, in the weights' dtype: what a new tensor per adapted weight costs on
    CPU while the originals stay in the safetensors file mapping (PiSSA's start, DoRA's merge)."""
    return rules.adapted_elements(targets) * shape.num_hidden_layers * b.weight


def _family_note(shape: Shape) -> tuple:
    if shape.known:
        return ()
    return (f"model_type {shape.family!r} is not a family the estimate describes (harness/plan/shape.py FAMILY); "
            "counted as a Llama-style decoder",)


def estimate_for_cell(model_location: str, spec, cfg, device: str) -> Estimate | None:
    """The cell's peak: training (for trained methods) or the evaluation's batched generation, whichever is
    larger. None when the model's config is not at hand (a hub id without a shipped config)."""
    shape = shape_for(model_location)
    if shape is None:
        return None
    cfg = cell_config(cfg, spec)  # the method's own rank and dropout, as its cell trains
    # Evaluation prompts are cut so that prompt + max_new_tokens fits max_seq_len (harness.spec.task.fit_prompt).
    gen = estimate_generation(shape, spec, batch_size=cfg.eval_batch_size, seq_len=cfg.max_seq_len, device=device)
    if not spec.trains:
        return gen
    precision = precision_of(device) if device == "cuda" else None
    train = estimate(shape, spec, batch_size=cfg.batch_size, seq_len=cfg.max_seq_len, lora_r=cfg.lora_r,
                     lora_target_modules=spec.lora_target_modules, gradient_checkpointing=cfg.gradient_checkpointing,
                     device=device, lora_dropout=cfg.lora_dropout, mixed_precision=precision,
                     grad_accum=cfg.grad_accum)
    return max(train, gen, key=lambda e: e.total_bytes)
