"""The conformance checks: the harness's training path against plain peft + trl, on one tiny model of a family.

Shared by tests/integration/test_conformance.py (which asserts them for every family x method) and
benchmarks/conformance.py (which prints the measured deviations as docs/conformance.md's table). The checks of one
forward pass (the fused dropout, batched generation) are in harness/conformance/forward.py.

* ``training``: the same tiny random model (harness/conformance/families.py) trains on the same cnn rows twice,
  once as a cell trains it (``harness.cell.training.train`` after the cell's base-logit probe, with whatever the
  harness changes in trl's path) and once as a plain peft + trl script with trl's own padded batches, the same
  LoraConfig fields (DoRA, rsLoRA, the PiSSA/OLoRA start) and the same optimizer (LoRA+'s, through peft). Both start
  from the same weights and see the same rows in the same order. Compared: the loss at every optimizer step, the
  gradient of every trainable parameter at the first step (the compared set must be the whole trainable set), the
  trained weights after the last step, and, for a start that rewrites the base (PiSSA, OLoRA, LoftQ), the base
  weights it left.

A check that cannot be made as stated (a trainable tensor without a gradient, a change that did not run) raises
``compare.ConformanceError``, explicitly, so that ``python -O`` cannot drop it as it drops ``assert``.

The bar a row is held to (the tolerances, and the changes to trl's path that must have applied) is in
harness/conformance/compare.py.
"""

from __future__ import annotations

import tempfile

from harness.cell import adapters, weights
from harness.cell.load import load_model
from harness.cell.training import train
from harness.conformance.compare import BATCH, ROWS, deviation, require, weight_deviation
from harness.spec.cell import cell_config
from harness.spec.config import RunConfig
from harness.spec.methods import resolve_method
from harness.spec.precision import mixed_precision
from harness.spec.task import Context, get_task

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



def config(**kw) -> RunConfig:
    return RunConfig(**{"model": "tiny", "batch_size": BATCH, "epochs": 1.0, "lora_dropout": 0.0, "seed": 0, **kw})


def pairs(tok, cfg, rows_from: str = "cnn") -> list[dict]:
    """The first ROWS training pairs of an embedded task: cnn's (about 180 tokens each) for the published matrix,
    qa's (37-45 tokens) where the suite needs the same checks at a quarter of the tokens."""
    task = get_task(rows_from)
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
    with adapters.initial_folder(spec) as initial:  # PiSSA's and OLoRA's start, kept as a cell keeps it, removed
        model, record = train(model, tok, spec, rows, cell_config(cfg, spec), device, merge=False,
                              location=str(folder), initial_dir=initial,
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
    scratch = tempfile.TemporaryDirectory(prefix="conformance-trl-")  # the trainer's output_dir; nothing is saved
    args = SFTConfig(output_dir=scratch.name, per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
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
    with scratch:
        trainer.train()
    return {**trace, "final": _final(trace, trainer.model)}


def training(folder, method: str, tok, device: str = "cpu", reference_dropout: float | None = None,
             rows_from: str = "cnn", **cfg) -> dict:
    """The training check's deviations (loss: worst step; grads: first step; weights: in learning-rate steps; base:
    the base weights under the adapters after the start) and what the harness's run recorded about trl's path.
    ``cfg`` overrides the run's settings for both paths; ``reference_dropout`` the plain script's LoRA dropout;
    ``rows_from`` the embedded task whose training rows both paths train on (``pairs``)."""
    cfg = config(**cfg)
    rows = pairs(tok, cfg, rows_from)
    ours = harness_run(folder, method, cfg, tok, rows, device)
    theirs = trl_run(folder, method, cfg, tok, rows, lora_dropout=reference_dropout, device=device)
    counts = [len(ours["grads"]), len(theirs["grads"]), len(ours["loss"]), len(theirs["loss"])]
    require(counts == [ROWS // BATCH] * 4, f"{method}: steps with gradients and losses (ours, trl's) are {counts}, "
                                           f"not {ROWS // BATCH} each")
    # Every trainable tensor is compared, and there is at least one: a gradient that went missing is a failure.
    compared = set(ours["grads"][0])
    require(compared and compared == set(ours["trainable"]) == set(theirs["trainable"]),
            f"{method}: the compared gradients are not the trainable set: "
            f"{sorted(set(ours['trainable']) ^ compared) or 'none compared'}")
    lr = ours["record"]["lr"]
    return {"initial": deviation(ours["initial"], theirs["initial"]),
            "loss": max(abs(a - b) / abs(b) for a, b in zip(ours["loss"], theirs["loss"])),
            "grads": deviation(ours["grads"][0], theirs["grads"][0]),
            "base": deviation(ours["base"], theirs["base"]) if ours["base"] or theirs["base"] else 0.0,
            "compared": len(compared),
            **weight_deviation(ours["final"], theirs["final"], theirs["grads"], lr), "record": ours["record"]}
