"""Supervised fine-tuning with trl's SFTTrainer, shared by every trained method.

Rows arrive as prompt/completion pairs whose prompt is already rendered with the chat template, so trl
masks the prompt and the loss covers the completion tokens only. Hyperparameters come from the run config;
only the learning rate and the weight format are method-specific. A callback shows progress, records the
loss curve, and stops at the first non-finite loss, naming the step.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time

from harness.cell import adapters
from harness.cell.trl_changes import apply as apply_changes
from harness.core.console import console, progress_bar
from harness.core.errors import NonFiniteLossError
from harness.integrations.trackers import trainer_report_to
from harness.spec.precision import mixed_precision


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total). bitsandbytes packs two 4-bit weights per byte, so Params4bit numel is doubled,
    as peft's own count does."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n *= 2 * getattr(getattr(p, "quant_storage", None), "itemsize", 1)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def _callback(total_steps: int, advance, curve: list):
    from transformers import TrainerCallback

    class Monitor(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            loss = (logs or {}).get("loss")
            if loss is None:
                return
            if not math.isfinite(loss):
                raise NonFiniteLossError(state.global_step, loss)
            curve.append({"step": state.global_step, "loss": float(loss), "lr": logs.get("learning_rate")})
            advance(0, loss=f"{loss:.3f}")

        def on_step_end(self, args, state, control, **kw):
            advance(1)

    return Monitor()


def _validation_log(validation: dict):
    """Every evaluation's validation loss, in order, for early stopping, the pruner and train.json."""
    from transformers import TrainerCallback

    class Log(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kw):
            loss = (metrics or {}).get("eval_loss")
            if loss is not None:
                validation["evals"].append({"step": state.global_step, "loss": float(loss)})

    return Log()


def _early_stopping(patience: int, record: dict):
    """Stop when the validation loss has not improved for ``patience`` evaluations; keep the best weights.

    transformers' EarlyStoppingCallback needs load_best_model_at_end, which writes a checkpoint at every
    evaluation; this keeps a copy of the trainable tensors in memory instead (all of them for full fine-tuning,
    the adapter for LoRA), and ``restore`` puts the best back after training."""
    from transformers import TrainerCallback

    class EarlyStop(TrainerCallback):
        best: dict | None = None
        model = None

        def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
            loss = (metrics or {}).get("eval_loss")
            if loss is None:
                return
            if record["best_loss"] is None or loss < record["best_loss"]:
                record.update(best_loss=float(loss), best_step=state.global_step, waited=0)
                self.model = model
                self.best = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()
                             if p.requires_grad}
            else:
                record["waited"] += 1
                if record["waited"] >= patience:
                    record["stopped_at_step"] = state.global_step
                    control.should_training_stop = True

        def restore(self) -> None:
            if self.best is None:
                return
            import torch

            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for name, value in self.best.items():
                    params[name].copy_(value)
            record["restored_step"] = record["best_step"]

    return EarlyStop()


def _pruning(prune: dict, validation: dict):
    """Stop a search's trial whose validation loss, at one of its evaluations, is worse than the median of the
    earlier complete trials' losses at the same step: Optuna's MedianPruner, in an in-memory study that holds those
    trials (``prune["earlier"]``: {step: loss} each), so that the cell needs no storage of the search's own. A design
    trial (``prune["design"]``: the method's own settings, a range's end) is never stopped, so that an edge gets a
    value (harness/execute/search.py); its losses are still evaluated, for the trials after it."""
    import optuna
    from transformers import TrainerCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.MedianPruner(
        n_startup_trials=prune["startup"], n_warmup_steps=0))
    earlier = [{int(k): float(v) for k, v in steps.items()} for steps in prune["earlier"] if steps]  # JSON keys
    for values in earlier:
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE,
                                                  value=values[max(values)], intermediate_values=values))
    trial = study.ask()
    if prune.get("design"):
        validation["not_pruned"] = "a design trial of the search: it runs to the end"

    class Prune(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kw):
            loss = (metrics or {}).get("eval_loss")
            if loss is None:
                return
            trial.report(float(loss), state.global_step)
            if not prune.get("design") and trial.should_prune():
                at = [v[state.global_step] for v in earlier if state.global_step in v]
                validation["pruned"] = {"step": state.global_step, "loss": float(loss),
                                        "median": float(statistics.median(at)) if at else None, "of": len(at)}
                control.should_training_stop = True

    return Prune()


def train(model, tok, spec, pairs: list[dict], cfg, device: str, merge: bool = True, save_to: str | None = None,
          callbacks: tuple = (), cell_dir=None, eval_pairs: list[dict] | None = None, prune: dict | None = None,
          location: str | None = None, initial_dir: str | None = None):
    """Train ``model`` on prompt/completion ``pairs``; return (model ready for generation, train record).

    ``merge=False`` returns a LoRA model with its adapter unmerged. ``save_to`` saves the trained weights with
    the trainer (an adapter for LoRA; under FSDP or DeepSpeed the trainer gathers the shards), before any
    merge. ``callbacks`` are extra TrainerCallbacks (harness/cell/distributed.py records what each process saw).
    ``cell_dir`` names the cell whose tracker runs (--report-to) the trainer logs to. ``eval_pairs`` (validation
    rows) with --early-stop evaluate the loss four times an epoch and stop when it stops improving; with ``prune``
    (a search's trial: harness/execute/search.py) the same evaluations stop a trial worse than the earlier ones.
    ``location``: the model folder, whose safetensors LoftQ's start reads the original weights from.
    ``initial_dir``: the caller's ``adapters.initial_folder``, where PiSSA's or OLoRA's adapter as it started is kept
    for the conversion on save (without it, none is kept and the record says so).
    """
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTConfig, SFTTrainer

    t_setup = time.perf_counter()  # adapters, tokenizing the rows, the trainer: "setup_s", apart from train_s
    peft_config, notes = None, {}
    if spec.finetune == "lora":
        from peft import prepare_model_for_kbit_training

        if spec.quantized:
            # Casts norms to fp32 and enables input gradients so that LoRA can train over frozen k-bit weights.
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                **{adapters.checkpointing_kwargs_name(prepare_model_for_kbit_training): {"use_reentrant": False}})
        # PiSSA's and OLoRA's own 0, or none on fused experts: said on the terminal and in train.json
        peft_config = adapters.lora_config(spec, cfg, adapters.dropout(spec, cfg, model, notes))

    lr = cfg.lr if cfg.lr is not None else spec.lr
    early, evaluation, validation = None, {}, None
    if (cfg.early_stop or prune) and eval_pairs:
        # Four evaluations an epoch: often enough to stop within a quarter epoch of the best point, rarely
        # enough that the validation forward passes stay a small share of the time (the harness's choice).
        every = max(1, _planned_steps(len(pairs), cfg) // max(1, math.ceil(4 * cfg.epochs)))
        validation = {"every_steps": every, "rows": len(eval_pairs), "evals": []}
        if cfg.early_stop:
            early = {"patience": cfg.early_stop, "eval_every_steps": every, "validation_rows": len(eval_pairs),
                     "evals": validation["evals"], "best_loss": None, "best_step": None, "waited": 0,
                     "stopped_at_step": None}
        evaluation = {"eval_strategy": "steps", "eval_steps": every, "prediction_loss_only": True,
                      "per_device_eval_batch_size": cfg.batch_size}
    precision = mixed_precision(device)
    # Nothing is saved there (save_strategy="no"); removed after training, or when collected if set-up fails first
    workdir = tempfile.TemporaryDirectory(prefix="harness-trainer-", ignore_cleanup_errors=True)
    args = SFTConfig(
        output_dir=workdir.name, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs, learning_rate=lr,
        lr_scheduler_type="linear", logging_steps=1, logging_nan_inf_filter=False, save_strategy="no",
        report_to=trainer_report_to(cfg, cell_dir),  # --report-to: loss curves into the cell's tracker run
        disable_tqdm=True, seed=cfg.seed, data_seed=cfg.seed, max_length=cfg.max_seq_len,
        completion_only_loss=True, include_num_input_tokens_seen="non_padding",
        activation_checkpointing=cfg.gradient_checkpointing, use_liger_kernel=cfg.liger_kernel,
        # bf16 from compute capability 8.0 up, fp16 below it (T4, V100), none on CPU (harness/spec/precision.py)
        use_cpu=device == "cpu", bf16=precision == "bf16", fp16=precision == "fp16", **evaluation)
    dataset = Dataset.from_list([{"prompt": p["prompt"], "completion": p["completion"]} for p in pairs])
    eval_dataset = Dataset.from_list([{"prompt": p["prompt"], "completion": p["completion"]}
                                      for p in eval_pairs]) if validation is not None else None
    router_logits = getattr(model.config.get_text_config(), "output_router_logits", None)  # trl sets it, below
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=eval_dataset,
                         processing_class=tok, peft_config=peft_config)
    adapter = start_adapter(trainer, spec, location, initial_dir)  # LoftQ, PiSSA/OLoRA, LoRA+ (adapters.py)
    # Padding-free batches, a compact LM head, fused LoRA dropout: the same loss with less time and memory
    # (harness/cell/trl_changes.py says what each does, where it applies, and why)
    changes = apply_changes(trainer, cfg, device)
    for name, why in changes.left_out.items():
        console.print(f"[yellow]{name.replace('_', '-')} off: {why}[/]", soft_wrap=True)
    trainable, total = count_parameters(trainer.model)
    steps = trainer.state.max_steps or _planned_steps(len(trainer.train_dataset), cfg)
    curve: list[dict] = []
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    for cb in callbacks:
        trainer.add_callback(cb)
    if validation is not None:
        trainer.add_callback(_validation_log(validation))
    stopper = _early_stopping(cfg.early_stop, early) if early else None
    if stopper is not None:
        trainer.add_callback(stopper)
    if prune and validation is not None:
        trainer.add_callback(_pruning(prune, validation))
    with progress_bar(f"train {spec.name}", steps) as advance:
        trainer.add_callback(_callback(steps, advance, curve))
        t0 = time.perf_counter()
        try:
            trainer.train()
            if stopper is not None:
                stopper.restore()
        finally:
            changes.restore()
            workdir.cleanup()
            if router_logits is not None:
                # trl turns a mixture of experts' router loss on in the model's config for training; generate() with
                # it on computes the loss on every decoding step and fails on its cache (transformers 5.24).
                model.config.get_text_config().output_router_logits = router_logits
        seconds = time.perf_counter() - t0
    tokens = int(trainer.state.num_input_tokens_seen)
    if save_to is not None:
        trainer.save_model(save_to)
    model = trainer.model
    merged = False
    if merge and spec.finetune == "lora" and not spec.quantized:
        # Merging leaves no adapter overhead at inference, LoRA's promise. Over 4/8-bit weights a merge would
        # re-quantize and change the model, so QLoRA adapters stay separate.
        model = model.merge_and_unload()
        merged = True
    record = {
        "trained": True, "lr": lr, "steps": trainer.state.global_step, "epochs": cfg.epochs,
        "train_rows": len(trainer.train_dataset), "train_tokens": tokens, "train_s": seconds,
        "train_tokens_per_s": tokens / seconds if seconds else float("nan"), "setup_s": t0 - t_setup,
        "trainable_params": trainable, "total_params": total, "loss_curve": curve,
        "final_loss": curve[-1]["loss"] if curve else None, "adapter_merged": merged,
        "trl_changes": changes.record(), **({"adapter": adapter} if adapter else {}), **notes,
    }
    if early is not None:
        early.pop("waited")
        record["early_stop"] = early
    if validation is not None:
        record["validation"] = validation
    return model, record


def start_adapter(trainer, spec, location: str | None, initial_dir: str | None = None) -> dict:
    """What a LoRA variant needs once the trainer has made its adapters (harness/cell/adapters.py): LoftQ's start over
    4-bit weights, the initial adapter of PiSSA and OLoRA kept in ``initial_dir`` for the conversion on save, LoRA+'s
    optimizer. The record goes into train.json ``adapter``."""
    out = {}
    if spec.finetune != "lora":
        return out
    if spec.init_lora_weights == "loftq":
        out["loftq"] = adapters.loftq_start(trainer.model, location or trainer.model.get_base_model().name_or_path)
    if spec.mutates_base and initial_dir is not None:
        adapters.save_initial(trainer.model, initial_dir)
        out["initial"] = "kept for the conversion on save (peft path_initial_model_for_weight_conversion)"
    elif spec.mutates_base:
        out["initial"] = "not kept: a saved adapter applies to the residual base weights only"
    if spec.loraplus_ratio is not None:
        trainer.optimizer = adapters.loraplus_optimizer(trainer.model, spec, trainer.args)
        out["optimizer"] = {"kind": "LoRA+ (peft create_loraplus_optimizer, torch AdamW)",
                            "loraplus_lr_ratio": spec.loraplus_ratio}
    return out


def _planned_steps(rows: int, cfg) -> int:
    return max(1, math.ceil(math.ceil(rows / cfg.batch_size) / cfg.grad_accum * cfg.epochs))
