"""Which LoRA a method trains: peft's LoraConfig fields, the starts that need a step of their own, and LoRA+.

Each method is data (harness/spec/methods.py): ``use_dora``, ``use_rslora`` and ``init_lora_weights`` go into peft's
``LoraConfig`` as they are. Three need more than a field, and each is done here, the same way in a cell and in the
plain peft + trl script the conformance matrix holds it against (harness/conformance/):

* **LoftQ over 4-bit weights** (Li et al. 2023): after peft has made the adapters, each one starts as the rank-r
  SVD of the quantization error, ``W - dequantize(quantize(W))``, so that base plus adapter starts nearer the
  original weights. peft's ``replace_lora_weights_loftq`` does this on CUDA; in peft 0.21.2 it moves every weight to
  ``cuda`` (or ``xpu``) whatever the model's device, so on a CPU ``loftq_start`` runs the same steps of it
  (bitsandbytes' ``dequantize_4bit``, peft's ``_low_rank_decomposition``) where the weights are. The original
  weights are read from the model's safetensors files, as peft reads them. The base stays the usual NF4 weights.
* **PiSSA and OLoRA** rewrite the base weights as their residual at the start; the adapter as it starts is saved
  (``save_initial``) so that the trained adapter can be saved converted into one that applies to the original base
  (peft's ``path_initial_model_for_weight_conversion``, harness/cell/weights.py). It is kept in a temporary folder
  that the caller opens with ``initial_folder`` around training and saving, and that is removed on every path.
* **LoRA+** (Hayou et al. 2024): peft's ``create_loraplus_optimizer``, B's learning rate ``loraplus_ratio`` times A's,
  with the AdamW settings the trainer would use.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import inspect
import json
import shutil
import tempfile
from pathlib import Path

from harness.core.console import console
from harness.spec.cell import dropout_note


def check_installed(spec, cfg) -> str | None:
    """Why the installed peft cannot make ``spec``'s adapter, or None: the LoraConfig its fields make, LoRA+'s
    optimizer. Cheap (no model), so a run can refuse before any cell. A method over 4/8-bit weights without
    bitsandbytes (qlora4, qdora, loftq alike) is not refused here: its cells are recorded as skipped, with the reason
    (harness/cell/job.py ``skip_reason``), as for any method the machine cannot run."""
    if spec.finetune != "lora":
        return None
    version = importlib.metadata.version("peft")
    try:
        lora_config(spec, cfg, 0.0)
    except (TypeError, ValueError) as e:
        return f"peft {version} cannot make its adapter ({str(e).splitlines()[0][:160]}); pip install -U peft"
    if spec.loraplus_ratio is not None and importlib.util.find_spec("peft.optimizers") is None:
        return f"peft {version} has no create_loraplus_optimizer (peft 0.14 and later); pip install -U peft"
    return None


def lora_config(spec, cfg, dropout: float):
    """peft's LoraConfig for ``spec``: the run's rank, alpha and targets, and the method's variant fields."""
    from peft import LoraConfig

    init = spec.init_lora_weights
    targets = spec.lora_target_modules  # all-linear, or a comma list of names (peft reads a plain string as a regex)
    targets = targets if targets in ("all-linear", "all_linear") else [t.strip() for t in targets.split(",")]
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=dropout,
                      target_modules=targets, task_type="CAUSAL_LM", use_dora=spec.use_dora,
                      use_rslora=spec.use_rslora,
                      # peft's own default start, and LoftQ's, which loftq_start makes after peft's default
                      init_lora_weights=True if init in ("default", "loftq") else init)


def dropout(spec, cfg, model, notes: dict) -> float:
    """The LoRA dropout the cell's adapter trains with, said on the terminal as training starts and in ``notes``
    (train.json) where it is not the run's --lora-dropout: the 0 PiSSA and OLoRA are registered with, while
    --lora-dropout is not given (harness/spec/cell.py ``dropout_note``), or 0 on experts peft adapts without one."""
    own = dropout_note(spec)
    if own is not None:
        notes["lora_dropout"] = own
        console.print(f"[yellow]lora dropout {own}[/]", soft_wrap=True)
    if cfg.lora_dropout and spec.lora_target_modules == "all-linear" and fused_experts(model):
        # transformers 5 keeps a mixture of experts' weights as 3-D parameters, which peft's all-linear adapts
        # through lora.ParamWrapper, and ParamWrapper refuses any dropout (peft/tuners/lora/layer.py).
        notes["lora_dropout"] = (f"0 instead of {cfg.lora_dropout}: the model's experts are fused 3-D weights, "
                                 "which peft adapts with ParamWrapper, and ParamWrapper has no dropout")
        console.print(f"[yellow]lora dropout {notes['lora_dropout']}[/]", soft_wrap=True)
        return 0.0
    return cfg.lora_dropout


def fused_experts(model) -> bool:
    """The model keeps weights as 3-D parameters (a mixture of experts' fused expert weights in transformers 5)."""
    return any(p.dim() == 3 for p in model.parameters())


def loftq_start(model, location: str) -> dict:
    """Start every LoRA adapter over a 4-bit layer as the rank-r SVD of that layer's quantization error (LoftQ).

    On CUDA this is peft's ``replace_lora_weights_loftq``; elsewhere the same steps on the weights' own device
    (``loftq_steps``, see the module docstring). Returns the record: layers started and, off CUDA, the error before
    and after, summed."""
    from peft.tuners.lora import Linear4bit

    if next(model.parameters()).device.type == "cuda":
        from peft.utils.loftq_utils import replace_lora_weights_loftq

        replace_lora_weights_loftq(model, model_path=safetensors_path(location))
        return {"layers": sum(isinstance(m, Linear4bit) for m in model.modules()), "how": "peft on cuda"}
    return loftq_steps(model, location)


def loftq_steps(model, location: str) -> dict:
    """peft's replace_lora_weights_loftq, step for step, on the device the weights are on (see loftq_start)."""
    import bitsandbytes as bnb
    import torch
    from peft.tuners.lora import Linear4bit
    from peft.utils.loftq_utils import _low_rank_decomposition
    from safetensors import safe_open

    files = shards(location)
    before = after = 0.0
    layers = 0
    prefix = "base_model.model."
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, Linear4bit):
                continue
            key = name[len(prefix):] + ".weight"
            with safe_open(files[key], framework="pt") as f:
                original = f.get_tensor(key).float()
            quantized = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
            residual = original - quantized
            adapter = module.active_adapters[0] if module.active_adapters else "default"
            out = _low_rank_decomposition(residual, reduced_rank=module.r[adapter])
            module.lora_A[adapter].weight.data = out["R"].to(module.lora_A[adapter].weight.dtype)
            module.lora_B[adapter].weight.data = out["L"].to(module.lora_B[adapter].weight.dtype)
            start = module.lora_B[adapter].weight.float() @ module.lora_A[adapter].weight.float()
            before += float(residual.norm())
            after += float((residual - start * module.scaling[adapter]).norm())
            layers += 1
    if not layers:
        raise ValueError("loftq found no 4-bit LoRA layer to start")
    return {"layers": layers, "how": "peft's LoftQ steps on the CPU", "error_before": before, "error_after": after}


def safetensors_path(location: str) -> str:
    return str(Path(location) / "model.safetensors")


def shards(location: str) -> dict:
    """{tensor name: its safetensors file} of a local model folder (one file, or an index of shards)."""
    from safetensors import safe_open

    folder = Path(location)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return {k: str(folder / f) for k, f in json.loads(index.read_text())["weight_map"].items()}
    single = folder / "model.safetensors"
    if not single.is_file():
        raise FileNotFoundError(f"loftq reads the original weights from safetensors files, and {folder} has none; "
                                "save the model with save_pretrained(safe_serialization=True)")
    with safe_open(str(single), framework="pt") as f:
        return {k: str(single) for k in f.keys()}


@contextlib.contextmanager
def initial_folder(spec):
    """A temporary folder for the adapter as it starts, when ``spec``'s start rewrites the base weights (PiSSA,
    OLoRA), else None; removed on leaving, on every path (a failed or pruned training, a failed check), so the
    caller that trains and saves owns it from the start to the conversion on save."""
    if not spec.mutates_base:
        yield None
        return
    folder = tempfile.mkdtemp(prefix="harness-initial-adapter-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def save_initial(model, folder: str) -> str:
    """The adapter as it starts, saved in ``folder`` (``initial_folder``), for saving the trained one converted."""
    model.save_pretrained(folder)
    return folder


def loraplus_optimizer(model, spec, args):
    """LoRA+'s AdamW (peft's create_loraplus_optimizer), with the learning rate, betas, epsilon and weight decay the
    trainer's own AdamW would have (``args``, the SFTConfig)."""
    import torch
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(model, torch.optim.AdamW, lr=args.learning_rate,
                                     loraplus_lr_ratio=spec.loraplus_ratio, weight_decay=args.weight_decay,
                                     betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)


def checkpointing_kwargs_name(prepare) -> str:
    """The keyword of ``prepare_model_for_kbit_training`` for the checkpointing function's arguments: peft 0.22
    renamed ``gradient_checkpointing_kwargs`` to ``activation_checkpointing_kwargs`` and warns on the old name
    (to be removed in peft 1.2); 0.21.2, the tested release, has only the old one."""
    params = inspect.signature(prepare).parameters
    return "activation_checkpointing_kwargs" if "activation_checkpointing_kwargs" in params \
        else "gradient_checkpointing_kwargs"
