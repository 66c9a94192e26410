"""The harness's training path against plain peft + trl on padded batches, on the model families users bring.

Each check trains the same tiny random model (tests/families.py) on the same cnn rows twice: once through the
harness (``harness.cell.training.train``, with whatever it changes in trl's path) and once through a plain SFTTrainer
script with trl's own padded batches. Both start from the same weights (the initial trainable parameters are
compared first) and see the same rows in the same order. Compared: the loss at every optimizer step, the gradient
of every trainable parameter at the first step, and the trained weights after the last step.

Tolerance, float32 on CPU: the loss and each gradient tensor's largest difference are at most 1e-5 of their own
largest value (``RTOL``); the trained weights at most 1e-4 (``WEIGHTS_RTOL``, see ``compare``). The two paths sum
the same products in another order (one packed row against a padded batch), which moves float32 results by a few
units in the 7th digit; a sliding window ignored moves the first-step loss by 1e-3 and the gradients by far more.
"""

from __future__ import annotations

import tempfile

import pytest

from tests.families import build

pytestmark = pytest.mark.integration

RTOL = 1e-5
# The trained weights after three AdamW steps: measured up to 2.4e-5 on the tiny Llama (LoRA, packed against
# padded rows), where Adam's normalisation turns float32 noise in near-zero gradients into steps of up to the
# learning rate (see ``compare``).
WEIGHTS_RTOL = 1e-4
ROWS, BATCH = 12, 4  # three optimizer steps


def _cfg(**kw):
    from harness.spec.config import RunConfig

    return RunConfig(model="tiny", batch_size=BATCH, epochs=1.0, lora_dropout=0.0, seed=0, **kw)


def _pairs(tok, cfg):
    from harness.spec.task import Context, get_task

    task = get_task("cnn")
    ctx = Context(tok=tok, max_seq_len=cfg.max_seq_len, max_new_tokens=task.max_new_tokens, cfg=cfg)
    return [task.train_pair(r, ctx) for r in task.embedded("train")[:ROWS]]


def _recorder(trace: dict):
    """A callback that keeps the initial trainable weights, each step's gradients (before the optimizer step,
    after trl's clipping) and each step's logged loss.

    Before the first step it sets every LoRA B matrix to the same seeded random values in both runs: peft starts B
    at zero, where the gradient of every A matrix is zero too, so a first step from peft's start cannot see
    whether the adapter's input path computes what peft's does."""
    import torch
    from transformers import TrainerCallback

    def trainable(model):
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    class Trace(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            g = torch.Generator().manual_seed(1)
            with torch.no_grad():
                for n, p in sorted(trainable(model).items()):
                    if ".lora_B." in n:
                        p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            trace["initial"] = {n: p.detach().float().clone() for n, p in trainable(model).items()}
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


def harness_run(folder, method: str, cfg, tok, pairs) -> dict:
    """The harness's own training path, as a cell runs it."""
    import torch

    from harness.cell.load import load_model
    from harness.cell.training import train
    from harness.spec.methods import resolve_method

    spec = resolve_method(method)
    trace: dict = {}
    torch.manual_seed(0)  # the LoRA initialisation
    model, record = train(load_model(str(folder), spec, "cpu"), tok, spec, pairs, cfg, "cpu", merge=False,
                          callbacks=(_recorder(trace),))
    return {**trace, "final": _final(trace, model), "record": record}


def trl_run(folder, method: str, cfg, tok, pairs) -> dict:
    """Plain peft + trl as trl's SFT documentation shows it, on trl's default (padded) batches, with the harness's
    hyperparameters. Over 4/8-bit weights the adapters are cast to float32, the precision a harness cell trains
    them in on a CPU (trl casts them to bfloat16): the comparison is of the computation, in float32."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from trl import SFTConfig, SFTTrainer

    from harness.cell.load import load_model
    from harness.spec.methods import resolve_method

    spec = resolve_method(method)
    model = load_model(str(folder), spec, "cpu")
    peft_config = None
    if spec.finetune == "lora":
        if spec.quantized:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=spec.lora_target_modules, task_type="CAUSAL_LM")
    scratch = tempfile.mkdtemp(prefix="conformance-trl-")
    args = SFTConfig(output_dir=scratch, per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
                     learning_rate=cfg.lr or spec.lr, lr_scheduler_type="linear", logging_steps=1,
                     save_strategy="no", report_to=[], disable_tqdm=True, seed=cfg.seed, data_seed=cfg.seed,
                     max_length=cfg.max_seq_len, completion_only_loss=True, activation_checkpointing=False,
                     use_cpu=True, bf16=False)
    torch.manual_seed(0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tok,
                         peft_config=peft_config)
    for p in trainer.model.parameters():
        if p.requires_grad and p.dtype == torch.bfloat16:
            p.data = p.data.float()
    trace: dict = {}
    trainer.add_callback(_recorder(trace))
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


def compare(ours: dict, theirs: dict) -> dict:
    """Each check's deviation: initial weights, loss (worst step), first-step gradients, trained weights.

    Gradients are compared at the first step, where both runs hold the same weights. After it, Adam divides each
    gradient by its running root mean square, so an element whose gradient is at float32 noise level moves by up to
    the learning rate either way: later steps start from weights that differ by that much, which the trained
    weights' own tolerance (``WEIGHTS_RTOL``) covers."""
    assert len(ours["grads"]) == len(theirs["grads"]) == len(ours["loss"]) == len(theirs["loss"])
    return {"initial": deviation(ours["initial"], theirs["initial"]),
            "loss": max(abs(a - b) / abs(b) for a, b in zip(ours["loss"], theirs["loss"])),
            "grads": deviation(ours["grads"][0], theirs["grads"][0]),
            "weights": deviation(ours["final"], theirs["final"])}


def check(got: dict) -> None:
    assert got["initial"] == 0.0, got
    assert got["loss"] <= RTOL and got["grads"] <= RTOL and got["weights"] <= WEIGHTS_RTOL, got


@pytest.fixture(scope="module")
def tok(tokenizer):
    return tokenizer


def test_a_window_shorter_than_the_rows_trains_as_on_padded_batches(tmp_path, tok):
    """Mistral with an 8-token window on ~180-token rows: per-row attention without the window computed another
    model's loss (about 1e-3 off); the harness now trains such a model on padded batches and says why."""
    cfg = _cfg()
    pairs = _pairs(tok, cfg)
    folder = build("mistral", tok, tmp_path / "mistral")
    ours, theirs = harness_run(folder, "full", cfg, tok, pairs), trl_run(folder, "full", cfg, tok, pairs)
    check(compare(ours, theirs))
    record = ours["record"]
    assert "padding_free" not in record["lean"]
    assert "sliding window of 8 tokens" in record["lean_skipped"]["padding_free"]
