"""The conformance checks: the harness's training path against plain peft + trl, on one tiny model of a family.

Shared by tests/integration/test_conformance.py (which asserts them for every family x method) and
benchmarks/conformance.py (which prints the measured deviations as docs/conformance.md's table).

* ``training``: the same tiny random model (harness/conformance/families.py) trains on the same cnn rows twice,
  once as a cell trains it (``harness.cell.training.train`` after the cell's base-logit probe, with whatever the
  harness changes in trl's path) and once as a plain peft + trl script with trl's own padded batches, the same
  LoraConfig fields (DoRA, rsLoRA, the PiSSA/OLoRA start) and the same optimizer (LoRA+'s, through peft). Both start
  from the same weights and see the same rows in the same order. Compared: the loss at every optimizer step, the
  gradient of every trainable parameter at the first step (the compared set must be the whole trainable set), the
  trained weights after the last step, and, for a start that rewrites the base (PiSSA, OLoRA, LoftQ), the base
  weights it left.
* ``expected``: which of the harness's changes to trl's path must have applied for a family x method; a row whose
  record (train.json ``trl_changes``) shows another set fails, so a change that silently stepped aside cannot pass as
  trl against trl.
* ``dropout``: one LoRA forward and backward with dropout on, through peft's dropout and through the fused one,
  both drawing the same masks; compared: the gradient of every trainable parameter.
* ``generation``: batched greedy generation (left padding) against one ``generate`` per prompt.

Tolerances, float32 on CPU. The loss and every gradient: each tensor's largest difference at most 1e-5 of its
largest value (``RTOL``): the two paths sum the same products in another order (one packed row against a padded
batch), which moves float32 results in the 7th digit (measured up to 8.4e-7); an ignored sliding window moves the
first-step loss by 1e-3 and gradients by far more. The trained weights: every element within a tenth of one
learning-rate step (``WEIGHTS_LR``), except those whose gradient is at float32 noise level: Adam divides each
gradient by its running root mean square, so an element whose gradient at some step is within ``RTOL`` of its
tensor's largest (noise, in the same terms as the gradient check) moves by up to the learning rate either way,
whichever sign the noise took. Those are held only to Adam's own bound, one learning rate per step
(``NOISE_STEPS``). Measured: on an AMD EPYC every element stayed within 0.042 lr over three steps; on an Intel Xeon
one element of Qwen3 x qlora8's k_proj LoRA B, its gradient 1.2e-7 of the tensor's largest, moved 0.18 lr, and every
element with a gradient above noise stayed within 0.021 lr. A wrong gradient moves weights by whole steps.
"""

from __future__ import annotations

import tempfile

from harness.cell import adapters, lora_dropout, weights
from harness.cell.generate import generate
from harness.cell.load import load_model
from harness.cell.training import train
from harness.spec.cell import cell_config
from harness.spec.config import RunConfig
from harness.spec.methods import resolve_method
from harness.spec.precision import mixed_precision
from harness.spec.task import Context, GenerationStats, get_task

RTOL = 1e-5
WEIGHTS_LR = 0.1
NOISE_STEPS = 1.0  # an Adam step moves an element by at most about one learning rate (exactly lr at step one)
# On a GPU both paths run in bfloat16 mixed precision, whose rounding unit is 2^-8: a tolerance of a few units for
# the loss and the gradients, and half a learning-rate step for the weights. Stated before any GPU run measured
# them (benchmarks/gpu_matrix.sh does); they are the GPU check's bar, not measured figures.
BF16 = {"loss": 4 * 2**-8, "grads": 8 * 2**-8, "weights": 0.5}
ROWS, BATCH = 12, 4  # three optimizer steps

# The trained methods of the matrix: the four the harness began with, and the adapters users compare.
METHODS = ("full", "lora", "qlora4", "qlora8", "dora", "qdora", "rslora", "pissa", "olora", "loftq", "lora+")
# Where peft cannot apply a method to a family's weights, the row is not run, and says why (peft 0.21.2's own
# errors; tests/integration/test_conformance.py checks that peft still refuses them).
UNSUPPORTED = {
    ("mixtral", "dora"): "peft adapts Mixtral's fused 3-D expert weights with lora.ParamWrapper, which "
                         "\"does not work with use_dora=True\"",
    ("mixtral", "qdora"): "as dora: lora.ParamWrapper does not work with use_dora=True",
    ("mixtral", "pissa"): "peft's PiSSA start reads a module's 2-D weight, and MixtralExperts has none (fused "
                          "3-D expert weights)",
    ("mixtral", "olora"): "peft's OLoRA start reads a module's 2-D weight, and MixtralExperts has none (fused "
                          "3-D expert weights)"}
# The changes each family's model rules out, whatever the method (harness/cell/trl_changes.py says why): Gemma 2
# runs eager attention (transformers 5.25 refuses SDPA for it) and soft-caps its logits; Mixtral adds a router loss.
RULED_OUT = {"gemma2": {"padding_free", "compact_lm_head"},
             "mixtral": {"compact_lm_head"}}


def expected(family: str, method: str, device: str = "cpu") -> set[str]:
    """The changes to trl's path that must have applied to ``family`` x ``method`` (see the module docstring)."""
    spec = resolve_method(method)
    if device != "cpu":  # on CUDA the per-row attention runs where HARNESS_PADDING_FREE_CUDA=1 switches it on
        out = {"padding_free"}
    else:
        out = {"padding_free", "compact_lm_head", "malloc_mmap_threshold"}
        if spec.quantized:
            out.add("float32_adapters")
    return out - RULED_OUT.get(family, set())


def applied_as_expected(family: str, method: str, record: dict, device: str = "cpu") -> bool:
    return set(record["trl_changes"]["applied"]) == expected(family, method, device)


def config(**kw) -> RunConfig:
    return RunConfig(**{"model": "tiny", "batch_size": BATCH, "epochs": 1.0, "lora_dropout": 0.0, "seed": 0, **kw})


def pairs(tok, cfg) -> list[dict]:
    task = get_task("cnn")
    ctx = Context(tok=tok, max_seq_len=cfg.max_seq_len, max_new_tokens=task.max_new_tokens, cfg=cfg)
    return [task.train_pair(r, ctx) for r in task.embedded("train")[:ROWS]]


def seed_lora_b(model, seed: int = 1) -> None:
    """Set every LoRA B matrix to seeded random values: peft starts B at zero, where the gradient of every A matrix
    is zero too, so a first step from peft's start cannot see whether the adapter's input path computes what
    peft's does. A start that is itself the method (PiSSA, OLoRA, LoftQ) is left as it is."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in sorted(model.named_parameters()):
            if p.requires_grad and ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def _base_weights(model) -> dict:
    """The frozen weights under every LoRA layer (dequantized when 4-bit), as a start left them."""
    import torch

    out = {}
    for name, module in model.named_modules():
        base = getattr(module, "base_layer", None)
        if base is None or not hasattr(base, "weight"):
            continue
        w = base.weight
        if type(w).__name__ == "Params4bit":
            import bitsandbytes as bnb

            w = bnb.functional.dequantize_4bit(w.data, w.quant_state)
        elif type(w).__name__ == "Int8Params":
            # bitsandbytes moves the row scales from the parameter to the layer's state at the first forward
            scb = w.SCB if getattr(w, "SCB", None) is not None else getattr(getattr(base, "state", None), "SCB", None)
            w = w.data.float() * (scb.float()[:, None] / 127) if scb is not None else w.data
        out[name] = torch.as_tensor(w).detach().float().clone()
    return out


def _recorder(trace: dict, seed_b: bool):
    """A callback that keeps the initial trainable weights (after ``seed_lora_b``), the base weights under the
    adapters, each step's gradients (before the optimizer step, after trl's clipping) and each step's logged loss."""
    from transformers import TrainerCallback

    def trainable(model):
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    class Trace(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            if seed_b:
                seed_lora_b(model)
            trace["initial"] = {n: p.detach().float().clone() for n, p in trainable(model).items()}
            trace["trainable"] = sorted(trainable(model))
            trace["base"] = _base_weights(model)
            trace["model"] = model

        def on_pre_optimizer_step(self, args, state, control, **kw):
            grads = {n: p.grad.detach().float().clone() for n, p in trainable(trace["model"]).items()
                     if p.grad is not None}
            trace.setdefault("grads", []).append(grads)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                trace.setdefault("loss", []).append(logs["loss"])

    return Trace()


def _final(trace: dict, model) -> dict:
    return {n: p.detach().float().clone() for n, p in model.named_parameters() if n in trace["initial"]}


def harness_run(folder, method: str, cfg, tok, rows, device: str = "cpu") -> dict:
    """The harness's own training path, as a cell runs it: the base-logit probe first, then training."""
    import torch

    spec = resolve_method(method)
    model = load_model(str(folder), spec, device)
    weights.logits(model, [torch.tensor([[5, 17, 99, 4]])])  # the cell's eval-mode probe before it trains
    trace: dict = {}
    torch.manual_seed(0)  # the LoRA initialisation
    model, record = train(model, tok, spec, rows, cell_config(cfg, spec), device, merge=False, location=str(folder),
                          callbacks=(_recorder(trace, seed_b=spec.init_lora_weights == "default"),))
    return {**trace, "final": _final(trace, model), "record": record}


def trl_run(folder, method: str, cfg, tok, rows, lora_dropout: float | None = None, device: str = "cpu") -> dict:
    """Plain peft + trl as trl's SFT documentation shows it, on trl's default (padded) batches, with the harness's
    hyperparameters and mixed precision, the method's LoraConfig fields written out, and LoRA+'s optimizer where the
    method has it (peft's create_loraplus_optimizer, passed to the trainer). On a CPU, over 4/8-bit weights, the
    adapters are cast to float32, the precision a harness cell trains them in there (trl casts them to bfloat16):
    the comparison is of the computation, in float32. LoftQ's start is the one harness/cell/adapters.py makes (peft's
    own on CUDA)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from peft.optimizers import create_loraplus_optimizer
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    spec = resolve_method(method)
    model = load_model(str(folder), spec, device)
    precision = mixed_precision(device)
    peft_config = None
    alpha = cfg.lora_r if spec.init_lora_weights == "loftq" else cfg.lora_alpha  # LoftQ's scale of 1 (cell.py)
    if spec.finetune == "lora":
        if spec.quantized:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        init = spec.init_lora_weights
        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=alpha,
                                 lora_dropout=cfg.lora_dropout if lora_dropout is None else lora_dropout,
                                 target_modules=spec.lora_target_modules, task_type="CAUSAL_LM",
                                 use_dora=spec.use_dora, use_rslora=spec.use_rslora,
                                 init_lora_weights=True if init in ("default", "loftq") else init)
    scratch = tempfile.mkdtemp(prefix="conformance-trl-")
    args = SFTConfig(output_dir=scratch, per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
                     learning_rate=cfg.lr or spec.lr, lr_scheduler_type="linear", logging_steps=1,
                     save_strategy="no", report_to=[], disable_tqdm=True, seed=cfg.seed, data_seed=cfg.seed,
                     max_length=cfg.max_seq_len, completion_only_loss=True, activation_checkpointing=False,
                     use_cpu=device == "cpu", bf16=precision == "bf16", fp16=precision == "fp16")
    torch.manual_seed(0)
    optimizers = (None, None)
    if spec.loraplus_ratio is not None:  # LoRA+ as peft's guide shows it: the PEFT model first, then its optimizer
        model = get_peft_model(model, peft_config)
        peft_config = None
        optimizers = (create_loraplus_optimizer(model, torch.optim.AdamW, lr=args.learning_rate,
                                                loraplus_lr_ratio=spec.loraplus_ratio, weight_decay=args.weight_decay,
                                                betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon),
                      None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_config, optimizers=optimizers)
    if spec.init_lora_weights == "loftq":
        adapters.loftq_start(trainer.model, str(folder))
    for p in trainer.model.parameters():
        if device == "cpu" and p.requires_grad and p.dtype == torch.bfloat16:
            p.data = p.data.float()
    trace: dict = {}
    trainer.remove_callback(PrinterCallback)  # it prints every log line to stdout (benchmarks/conformance.py's table)
    trainer.add_callback(_recorder(trace, seed_b=spec.init_lora_weights == "default"))
    trainer.train()
    return {**trace, "final": _final(trace, trainer.model)}


def deviation(ours: dict, theirs: dict) -> float:
    """The largest, over tensors, of max |ours - theirs| / max |theirs|: 0 when equal."""
    assert ours.keys() == theirs.keys(), sorted(set(ours) ^ set(theirs))
    worst = 0.0
    for name, ref in theirs.items():
        scale = float(ref.abs().max()) or 1.0
        worst = max(worst, float((ours[name] - ref).abs().max()) / scale)
    return worst


def training(folder, method: str, tok, device: str = "cpu", reference_dropout: float | None = None, **cfg) -> dict:
    """The training check's deviations (loss: worst step; grads: first step; weights: in learning-rate steps; base:
    the base weights under the adapters after the start) and what the harness's run recorded about trl's path.
    ``cfg`` overrides the run's settings for both paths; ``reference_dropout`` the plain script's LoRA dropout."""
    cfg = config(**cfg)
    rows = pairs(tok, cfg)
    ours = harness_run(folder, method, cfg, tok, rows, device)
    theirs = trl_run(folder, method, cfg, tok, rows, lora_dropout=reference_dropout, device=device)
    assert len(ours["grads"]) == len(theirs["grads"]) == len(ours["loss"]) == len(theirs["loss"]) == ROWS // BATCH
    # Every trainable tensor is compared, and there is at least one: a gradient that went missing is a failure.
    compared = set(ours["grads"][0])
    assert compared and compared == set(ours["trainable"]) == set(theirs["trainable"]), (
        sorted(set(ours["trainable"]) ^ compared))
    lr = ours["record"]["lr"]
    return {"initial": deviation(ours["initial"], theirs["initial"]),
            "loss": max(abs(a - b) / abs(b) for a, b in zip(ours["loss"], theirs["loss"])),
            "grads": deviation(ours["grads"][0], theirs["grads"][0]),
            "base": deviation(ours["base"], theirs["base"]) if ours["base"] or theirs["base"] else 0.0,
            "compared": len(compared),
            **weight_deviation(ours["final"], theirs["final"], theirs["grads"], lr), "record": ours["record"]}


def weight_deviation(ours: dict, theirs: dict, grads: list[dict], lr: float) -> dict:
    """The trained weights' largest difference, in learning-rate steps: over the elements whose gradient was above
    float32 noise at every step (``weights``), and over the rest (``weights_noise``), with the rest's share."""
    import torch

    worst, noisy, n_noisy, total = 0.0, 0.0, 0, 0
    for name, ref in theirs.items():
        diff = (ours[name] - ref).abs() / lr
        steps = [g[name].abs() for g in grads if name in g]
        if steps:
            g = torch.stack(steps)
            noise = g.min(dim=0).values <= RTOL * float(g.max())
        else:  # never got a gradient: it must not have moved at all
            noise = torch.zeros_like(diff, dtype=torch.bool)
        worst = max(worst, float(diff[~noise].max()) if (~noise).any() else 0.0)
        noisy = max(noisy, float(diff[noise].max()) if noise.any() else 0.0)
        n_noisy, total = n_noisy + int(noise.sum()), total + noise.numel()
    return {"weights": worst, "weights_noise": noisy, "noise_share": n_noisy / total if total else 0.0}


def passes(got: dict, device: str = "cpu") -> bool:
    noise = got["weights_noise"] <= NOISE_STEPS * (ROWS // BATCH)
    if device == "cpu":
        return (got["initial"] == 0.0 and got["loss"] <= RTOL and got["grads"] <= RTOL and got["weights"] <= WEIGHTS_LR
                and got["base"] <= RTOL and noise)
    return (got["initial"] == 0.0 and got["loss"] <= BF16["loss"] and got["grads"] <= BF16["grads"]
            and got["weights"] <= BF16["weights"] and got["base"] <= BF16["grads"] and noise)


def dropout(folder, tok, p: float = 0.1) -> float:
    """The largest gradient deviation between peft's LoRA dropout and the fused one under the same masks."""
    import torch
    from peft import LoraConfig, get_peft_model

    class SameMask(torch.nn.Module):
        """peft's dropout, drawing its mask as the fused function does (one draw from torch's generator each)."""

        def forward(self, x):
            return x * lora_dropout._keep_mask(x.shape, 1 - p) / (1 - p) if self.training else x

    ids = torch.tensor([tok("Summarise the news: the council met on Monday and voted on the budget.")["input_ids"]])
    grads = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = get_peft_model(load_model(str(folder), resolve_method("lora"), "cpu"),
                               LoraConfig(r=8, lora_alpha=16, lora_dropout=p, target_modules="all-linear",
                                          task_type="CAUSAL_LM"))
        seed_lora_b(model)
        model.train()
        if fused:
            assert lora_dropout.fuse_lora_dropout(model) is not None
        else:
            for m in model.modules():
                if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict):
                    for name in list(m.lora_dropout):
                        m.lora_dropout[name] = SameMask()
        torch.manual_seed(5)
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append({n: q.grad.clone() for n, q in model.named_parameters() if q.requires_grad})
    return deviation(grads[1], grads[0])


def generation(folder, tok, prompts: list[str], new_tokens: int = 8, device: str = "cpu") -> tuple[int, int]:
    """(prompts whose batched output, text and token count, equals their own generate's, prompts)."""
    model = load_model(str(folder), resolve_method("base"), device)
    stats = GenerationStats()
    batched = generate(model, tok, prompts, new_tokens, 3, stats)
    single, counts = [], 0
    for prompt in prompts:
        one = GenerationStats()
        single.append(generate(model, tok, [prompt], new_tokens, 1, one)[0])
        counts += one.new_tokens
    same = sum(a == b for a, b in zip(batched, single))
    return (same if stats.new_tokens == counts else 0), len(prompts)


def eval_prompts(tok, n: int = 6) -> list[str]:
    """Chat-rendered cnn prompts cut to different lengths, so a batch pads each differently."""
    task = get_task("cnn")
    ctx = Context(tok=tok, max_seq_len=256, max_new_tokens=8)
    prompts = [task.eval_prompt(r, ctx) for r in task.embedded("validation")[:n]]
    return [p[: len(p) * (i + 2) // (n + 2)] for i, p in enumerate(prompts)]
