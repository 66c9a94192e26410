"""What a training step or a generation call keeps alive, tensor by tensor: the rules behind harness.plan.estimate.

Every count below names the op that keeps the tensor (autograd saves an op's inputs only when a gradient
needs them), so it can be checked against the code it describes. Sizes are bytes per token unless noted.
Training follows harness.cell.training as harness.cell.trl_changes sets it up, for the families that
harness.plan.shape describes (how their layers differ from Llama's is there):

* padding-free batches: the rows are laid end to end, attention runs per row (no mask, grouped K/V heads
  kept at their own width), and a batch holds sum(row lengths) tokens, at most batch x seq_len; where per-row
  attention cannot stand in (eager attention, Gemma 2), trl's padded batches of batch x seq_len;
* the LM head projects only the trained (completion) positions, in tiles (trl's kernel); where the loss is not
  lm_head's alone (logit soft-capping, a router loss), trl's own head scores every position in its larger tiles;
* on CPU, each LoRA adapter's dropout is fused into its A projection, which keeps its input (shared by the
  adapters that read the same tensor) and a one-byte mask.

``benchmarks/memory_check.py`` measures the same path on CPU; docs/memory.md has the comparison.
"""

from __future__ import annotations

from harness.plan.shape import INPUTS

# The LM head's logits tiles: the harness's compact head on CPU (harness.cell.lm_head ROW_TILE x VOCAB_TILE through
# trl's torch fallback); trl's own tiles elsewhere (trl/kernels/chunked_logprob.py TOKEN_CHUNK_SIZE x
# _CHUNKED_LOGPROB_CHUNK_SIZE), which its Triton path on CUDA folds in place.
CPU_TILE, CUDA_TILE = (1024, 8192), (4096, 32768)
# Live fp32 tiles besides the matmul buffer in trl's torch fallback (_forward_tile, _backward_tile): forward
# z, exp(z - max) and one temporary; backward y, z, log_p, p, grad and two temporaries, plus a 1-byte mask.
LOSS_FWD_TEMPS, LOSS_BWD_TEMPS = 3, 7


def adapted_elements(targets: dict) -> int:
    """Elements of one layer's adapted weights: sum of out x in over the LoRA targets."""
    return sum(o * i for o, i in targets.values())


def _norm(shape, b, input_grad: bool, weight_trained: bool) -> int:
    """One norm's saved bytes per token. RMSNorm: x.to(fp32) is kept by pow() and the rsqrt mul (4 bytes, plus the
    fp32 rsqrt); the normalised x is kept by the weight mul only when the weight trains. LayerNorm
    (native_layer_norm): its input, mean and rstd."""
    if not input_grad:
        return 0
    h = shape.hidden_size
    if shape.layer_norm:
        return b.res * h + 8
    return 4 * h + 4 + (b.res * h if weight_trained else 0)


def _attention(shape, b, row_len: int, full: bool) -> int:
    """Bytes per token of attention. SDPA keeps q (after RoPE), k and v (grouped heads at their own width:
    enable_gqa, no mask), its output and the fp32 logsumexp per head. Eager attention (Gemma 2's default, for its
    soft-capping) keeps the fp32 scores' tanh, the fp32 softmax and its cast, ``row_len`` per head. RMSNorm on q
    and k (Qwen3, Gemma 3) keeps their fp32 inputs."""
    q, kv, heads = shape.q_dim, shape.kv_dim, shape.num_attention_heads
    saved = b.act * (2 * q + 2 * kv)
    saved += heads * row_len * (4 + 4 + b.act) if shape.eager else 4 * heads
    if shape.qk_norm:
        saved += 4 * (q + kv) + (b.act * (q + kv) if full else 0)
    return saved


def _mlp(shape, b, full: bool) -> int:
    """Bytes per token the MLP keeps. Gated (separate or fused gate and up): gate (for the activation's backward),
    act(gate) and up (for the product's), and with full fine-tuning the product down_proj keeps. Without a gate
    (GPT-NeoX): up's output (for GELU's backward) and, trained, GELU's output. A mixture of experts, for each of
    its ``experts_per_token`` experts: the token's gathered hidden state, gate and up, act(gate), the product and
    the expert's output (kept by the routing-weight mul), and the fp32 router logits and softmax."""
    h, i = shape.hidden_size, shape.intermediate_size
    if shape.experts:
        return shape.experts_per_token * (b.act * 2 * h + b.mlp * 4 * i) + 8 * shape.experts
    if shape.mlp == "plain":
        return b.mlp * i * (2 if full else 1)
    return b.mlp * i * (4 if full else 3)


def layer_saved(shape, spec, b, targets: dict, r: int, input_grad: bool, dropout: bool, rows: int = 1,
                fused: bool = False, row_len: int = 0, packed: bool = True) -> int:
    """Bytes per token one decoder layer keeps for backward when nothing is recomputed."""
    h, i = shape.hidden_size, shape.intermediate_size
    full = spec.finetune == "full"
    # DoRA (peft lora/dora.py DoraLinearLayer.forward): the output is (m/||W + sBA|| - 1) * base + m/||.|| * lora * s,
    # and the magnitude's gradient needs both products: autograd keeps the base result and the LoRA result per
    # adapted weight, (out) wide each; the norm itself is detached and its (out, in) copy is gone by backward.
    dora = sum(o * (b.act + b.adapter) for o, _ in targets.values()) if getattr(spec, "use_dora", False) else 0
    # The first norm's input needs a gradient only where the layer's input does; the others' always do.
    saved = _norm(shape, b, input_grad, full) + (shape.norms - 1) * _norm(shape, b, True, full)
    saved += _attention(shape, b, row_len, full)
    # The attention output is transposed and made contiguous for o_proj: a copy that o_proj keeps when it needs
    # its input, except for one packed row, where SDPA's own output is already in that layout (a view).
    o_input = shape.q_dim * b.act if rows > 1 or not packed else 0
    if full:
        # The attention projections share one input, the MLP's another (norm outputs), o_proj keeps its own.
        return saved + 2 * b.act * h + o_input + _mlp(shape, b, True)
    saved += _mlp(shape, b, False)
    if fused:
        # harness.cell.lora_dropout: lora_A keeps its input x itself and a bool mask; adapters (and bitsandbytes'
        # 8-bit matmul, which holds its input A) reading the same tensor share it.
        width = {"norm1": h * b.res, "attention": o_input, "norm2": h * b.res, "product": i * b.mlp}
        held = {INPUTS[name] for name in targets} | (set(width) if spec.bits == 8 else set())
        saved += sum(width[x] for x in held)
        return saved + dora + sum((in_f if dropout else 0) + b.adapter * r for _, in_f in targets.values())
    for name, (_, in_f) in targets.items():
        # peft LoRA: lora_A keeps dropout(x), lora_B keeps lora_A's output; dropout keeps its noise or mask
        # only when x needs a gradient (in layer 0, without checkpointing, the attention inputs' x does not).
        grad_in = input_grad or INPUTS[name] != "norm1"
        saved += b.lora_in * (in_f + r) + (b.dropout_mask * in_f if dropout and grad_in else 0)
    return saved + dora + _int8_inputs(shape, spec, b, rows)


def _int8_inputs(shape, spec, b, rows: int) -> int:
    """bitsandbytes MatMul8bitLt (CUDA) and MatMul8bitFp (CPU) hold their input A on ctx even with frozen
    weights, outside autograd's saved tensors, so checkpointing does not free it: the norm outputs feeding
    q/k/v and gate/up, the product feeding down_proj, and o_proj's input."""
    if spec.bits != 8:
        return 0
    return 2 * b.res * shape.hidden_size + b.mlp * shape.intermediate_size + (
        shape.q_dim * b.act if rows > 1 else 0)


def _loss_head(shape, spec, b, n: int, device: str, compact: bool = True) -> dict:
    """The LM head over n positions (trl's ChunkedLogProbFunction, one call per tile of rows): the harness's
    compact head's tiles on CPU, trl's own where it scores (CUDA, or a model whose loss is not lm_head's alone)."""
    h, v = shape.hidden_size, shape.vocab_size
    tile_rows, tile_cols = CPU_TILE if device == "cpu" and compact else CUDA_TILE
    rows = min(n, tile_rows)
    tile = rows * min(v, tile_cols)
    saved = n * h * b.res + 32 * n  # hidden[mask] (n, h); targets, log-z, entropy, masks and outputs
    fwd, bwd = tile * b.act, tile * b.act + 2 * n * h * 4  # matmul tile; backward: fp32 grad of the hidden rows
    if device == "cpu":  # trl's torch fallback folds whole tiles at once, with fp32 temporaries
        fwd += tile * 4 * LOSS_FWD_TEMPS
        bwd += tile * (4 * LOSS_BWD_TEMPS + 1)
    else:  # hidden and weight chunks cast to the compute dtype when they are stored wider (QLoRA: fp32)
        casts = (rows * h if b.res != b.act else 0) + (min(v, tile_cols) * h if b.weight != b.act else 0)
        fwd += casts * b.act
        bwd += casts * b.act
    head_grad = 0
    if spec.finetune == "full":  # each call returns an fp32 weight gradient, added into lm_head.grad
        head_grad = v * h * 4 * (2 if n > tile_rows else 1) + (v * h * b.weight if b.weight != 4 else 0)
    return {"saved": saved, "fwd": fwd, "bwd": bwd, "head_grad": head_grad}


def training(shape, spec, b, persistent: dict, *, grads: int, states: int, targets: dict,
             batch_size: int, seq_len: int, lora_r: int, gc: bool, device: str, dropout: bool,
             optimizer: str, loss_tokens: int | None, grad_accum: int = 1,
             expert_lora: bool = False, start: int = 0, merge: int = 0) -> tuple[str, dict, tuple]:
    """(the moment of the step at which memory peaks, what is alive then in bytes, notes)."""
    L, h, i = shape.num_hidden_layers, shape.hidden_size, shape.intermediate_size
    tokens = batch_size * seq_len  # padding-free: at most this many; padded: exactly this many
    # trl's padded batches where per-row attention cannot stand in (harness.cell.padding_free), and its own LM
    # head over every position where the harness's compact head does not apply (harness.cell.lm_head).
    packed = not shape.eager
    compact = shape.plain_head and device == "cpu"
    n = (batch_size * (seq_len - 1) if loss_tokens is None else loss_tokens) if compact else tokens
    full = spec.finetune == "full"
    fused = device == "cpu" and not spec.use_dora  # harness.cell.lora_dropout fuses LoRA dropout on CPU, not DoRA's
    # Layer 0's input needs a gradient when the embeddings train, or when the layers are checkpointed (trl and
    # peft call enable_input_require_grads so that each checkpoint sees an input that needs a gradient).
    first_grad = full or gc
    kw = {"rows": batch_size, "fused": fused, "row_len": seq_len, "packed": packed}
    # DoRA over 4/8-bit weights with dropout computes the base output again from the dropped input with each weight
    # dequantized (peft lora/dora.py DoraLinearLayer.forward: F.linear(x, dequantize(W))), and autograd keeps that
    # copy for the input's gradient: per layer, every adapted weight in the activations' dtype (measured +402 MiB on
    # SmolLM2 without checkpointing, docs/memory.md).
    dequantized = adapted_elements(targets) * b.act if spec.use_dora and spec.bits and dropout else 0
    one_layer = layer_saved(shape, spec, b, targets, lora_r, True, dropout, **kw) * tokens + dequantized
    first_layer = layer_saved(shape, spec, b, targets, lora_r, first_grad, dropout, **kw) * tokens + dequantized
    # Checkpointing keeps each layer's input (and what bitsandbytes' 8-bit matmul holds outside autograd).
    ckpt = (h * b.res + _int8_inputs(shape, spec, b, batch_size)) * tokens
    layers = L * ckpt if gc else one_layer * (L - 1) + first_layer
    acts = layers + _norm(shape, b, True, full) * tokens + 8 * tokens  # + the final norm, the input ids
    if expert_lora:
        # peft's ParamWrapper adds each expert weight's LoRA delta to the 3-D weight it wraps and multiplies with
        # the sum, which autograd keeps: a copy of the experts' weights per layer, in the adapters' dtype.
        acts += L * sum(e * o * i for name, (e, o, i) in shape.expert_params().items() if name != "gate") * b.adapter
    head = _loss_head(shape, spec, b, n, device, compact)
    # Backward of one layer: gradients of its input and output (residual width) and of the MLP intermediates.
    mlp_width = shape.experts_per_token * 3 * i if shape.experts else (2 if shape.mlp == "plain" else 3) * i
    layer_ws = tokens * (2 * h * b.res + mlp_width * b.mlp)
    keep = {**persistent, "optimizer": states}
    # Gradients grow as the backward pass goes down the layers while saved activations shrink, so the pass
    # peaks at one of its ends: just after the loss (all activations, the head's gradient) or at layer 0 (all
    # gradients, one layer's activations). A checkpointed layer first recomputes what it saves.
    # With gradient accumulation, the gradients of the earlier micro-batches stay through the later forwards.
    early = grads if grad_accum > 1 else 0
    phases = {
        "loss forward": {**keep, "gradients": early, "activations": acts + head["saved"], "logits": head["fwd"]},
        "loss backward": {**keep, "gradients": max(early, head["head_grad"]), "activations": acts + head["saved"],
                          "logits": head["bwd"]},
        "backward": {**keep, "gradients": grads, "activations": first_layer + (ckpt if gc else 0),
                     "workspace": layer_ws},
        "optimizer step": {**persistent, "gradients": grads, "optimizer": states},
    }
    if full and shape.tie_word_embeddings:
        # The embedding's backward builds a dense (vocab, hidden) gradient before adding it into the one the LM
        # head already left on the shared weight: the last moment of the backward pass.
        phases["embedding backward"] = {**keep, "gradients": grads,
                                        "workspace": shape.vocab_size * h * b.weight}
    if start:  # an adapter start that works on whole weights (LoftQ, PiSSA, OLoRA), before any optimizer state
        phases["adapter start"] = {**persistent, "workspace": start}
    if merge:  # the adapter merged after the last step; train() merges while its trainer holds the optimizer's states
        phases["merge"] = {**persistent, "optimizer": states, "workspace": merge}
    if gc:  # the last layer's recompute, with every other layer's checkpoint still held
        phases["recompute"] = {**keep, "gradients": max(early, head["head_grad"]), "activations": acts + one_layer,
                               "workspace": layer_ws}
    notes = ()
    if optimizer.startswith("paged"):
        notes = ("paged optimizer states can spill to CPU memory under pressure; counted here in full",)
    phase, parts = max(phases.items(), key=lambda kv: sum(kv[1].values()))
    return phase, {k: int(v) for k, v in parts.items() if v}, notes


def inference(shape, b, persistent: dict, batch_size: int, seq_len: int, padded: bool) -> dict:
    """Batched greedy generation (harness.cell.generate): weights, the KV cache of prompt plus new tokens (within
    the window on windowed layers), and the prefill's largest transient, counted over the whole seq_len (an upper
    bound: the prompt is shorter).

    Generation pads on the left, and a padded batch gets a 4-D mask, with which transformers' SDPA expands
    grouped K/V heads to every query head (repeat_kv; transformers/integrations/sdpa_attention.py)."""
    L, h, i, v = shape.num_hidden_layers, shape.hidden_size, shape.intermediate_size, shape.vocab_size
    tokens = batch_size * seq_len
    # DynamicCache: K and V per layer; a layer with a sliding window keeps the window's tokens only.
    window = min(seq_len, shape.sliding_window or seq_len)
    cached = (L - shape.windowed_layers) * seq_len + shape.windowed_layers * window
    cache = 2 * batch_size * cached * shape.kv_dim * b.act
    kv = shape.q_dim if padded else shape.kv_dim
    attn = tokens * (b.act * (2 * shape.q_dim + 2 * kv) + 2 * h * b.res)
    experts = shape.experts_per_token or 1
    mlp = tokens * (3 * i * experts * b.act + 2 * h * b.res)  # act(gate), up and their product, with the residual
    # generate() asks for the last position's logits only (logits_to_keep=1) and copies them to fp32
    logits = batch_size * v * (b.act + 4)
    mask = batch_size * seq_len * seq_len if padded else 0
    parts = {**persistent, "kv_cache": cache, "workspace": max(attn, mlp) + mask, "logits": logits}
    return {k: int(x) for k, x in parts.items() if x}
