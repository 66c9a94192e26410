"""The trained weights of a cell: kept in the cell folder, and checked before the model is evaluated.

``--save`` keeps an adapter in the standard peft layout in ``CELL_DIR/adapter/`` or a whole model in the
transformers layout in ``CELL_DIR/model/`` (CellStore.finish checksums both, so resume and ``report`` see them).
Three checks guard against adapters that were silently never applied (peft #1836, lm-eval #2432, unsloth
#2142), each recorded in train.json under "checks" with its measured value and tolerance:

* ``differs_from_base``: the model that is evaluated gives other logits than the base model did before training;
* ``merged_matches_unmerged``: merging a LoRA adapter into the weights leaves the logits unchanged;
* ``reload_matches``: the saved adapter, loaded again onto the base weights, gives the trained logits.

Logits are compared on a few eval prompts; a failed check fails the cell with kind ``adapter_check``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from harness.cell.generate import encode_prompts
from harness.cell.load import load_model
from harness.cell.measure import free_memory
from harness.core.console import console
from harness.core.errors import AdapterCheckError
from harness.core.files import UMASK
from harness.spec.methods import ADAPTER, MODEL, save_kind
from harness.spec.precision import compute_dtype, dtype_name, resolve_device

PROBE_PROMPTS = 4  # eval prompts the checks run on
PROBE_TOKENS = 64  # each prompt's last tokens: the forward pass stays cheap on a 7B model
PROBE_POSITIONS = 16  # logits kept per prompt: 4 x 16 x 49152 floats, 12.6 MB for SmolLM2, at most 3 sets held

# Tolerances relative to the largest base logit, per compute dtype: above numeric noise, far below what training
# does. 2^-8 and 2^-11 are the rounding units of bfloat16 and float16; "measured" is the tiny random Llama
# (logit scale 1.39), 2 steps on 8 rows, on CPU (float32) and on an H200 (bfloat16), 2026-11-25.
RELATIVE_TOLERANCE = {
    # Merged against unmerged, reloaded against trained: the same function, rounded differently. float32: 1e-4
    # is about 840 float32 units (2^-23); measured 4e-7 for the merge. bfloat16: measured 1.4 units for the merge
    # (merged weights are rounded to bfloat16 once more), 0 for a reload; 8 units leave room for wider models.
    "match": {"float32": 1e-4, "bfloat16": 8 * 2**-8, "float16": 8 * 2**-11},
    # A no-op adapter (B left at zero) on a bfloat16 or float32 model gives exactly the base logits (measured 0),
    # so 2 units is noise; full fine-tuning at its 5e-5 learning rate measured 6.1 units, at 1e-7 0.7 units.
    "differs": {"float32": 1e-4, "bfloat16": 2 * 2**-8, "float16": 2 * 2**-11},
    # Over 4/8-bit weights prepare_model_for_kbit_training upcasts the bfloat16 norms and embeddings to float32
    # after the base logits were taken: a no-op adapter measured 1.4 units (4-bit) and 2.3 units (8-bit). Trained
    # LoRA adapters measured 45 units (lora, qlora4, qlora8); on CPU the float32 figures were 0.07 to 0.23.
    "differs_quantized": {"float32": 1e-4, "bfloat16": 6 * 2**-8, "float16": 6 * 2**-11},
}


def probe_inputs(task, rows: list[dict], ctx) -> list:
    """The token ids of the first few eval prompts, each cut to its last PROBE_TOKENS tokens."""
    import torch

    prompts = [task.eval_prompt(r, ctx) for r in rows[:PROBE_PROMPTS]]
    return [torch.tensor([ids[-PROBE_TOKENS:]]) for ids in encode_prompts(ctx.tok, prompts) if ids]


def logits(model, probe: list) -> list:
    """The last PROBE_POSITIONS logits of each probe prompt, as float32 on the CPU."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no LoRA dropout
    with torch.inference_mode():
        out = [model(input_ids=ids.to(device), use_cache=False, logits_to_keep=PROBE_POSITIONS).logits[0]
               .float().cpu() for ids in probe]
    model.train(was_training)
    return out


def base_logits(model_location: str, spec, device: str, probe: list) -> list:
    """The base model's logits on ``probe``, from a copy loaded for this alone (when training runs elsewhere)."""
    model = load_model(model_location, spec, device)
    out = logits(model, probe)
    del model
    free_memory(device)
    return out


def max_abs_diff(a: list, b: list) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def tolerance(reference: list, device: str, kind: str) -> dict:
    """The absolute tolerance of one kind of check: RELATIVE_TOLERANCE x the largest |logit| of ``reference``."""
    dtype = dtype_name(compute_dtype(device))
    scale = max(float(x.abs().max()) for x in reference)
    rel = RELATIVE_TOLERANCE[kind][dtype]
    return {"tolerance": rel * scale, "relative_tolerance": rel, "logit_scale": scale, "dtype": dtype}


# name -> (what the value is, whether it must lie above the tolerance rather than within it)
CHECKS = {
    "differs_from_base": ("max |logit difference|, the evaluated model against the base model before training",
                          True),
    "merged_matches_unmerged": ("max |logit difference|, the merged model against the unmerged one", False),
    "reload_matches": ("max |logit difference|, the saved adapter loaded onto the base weights against the "
                       "trained model", False),
}


def check(name: str, ours: list, reference: list, tol: dict) -> dict:
    """One check record: the measured value, the tolerance it is held to, and whether it passed."""
    what, above = CHECKS[name]
    value = max_abs_diff(ours, reference)
    passed = value > tol["tolerance"] if above else value <= tol["tolerance"]
    return {"name": name, "value": value, "passed": passed, "must_be": "above" if above else "at most",
            "what": what, **tol}


def finalize(model, spec, tok, cfg, store, probe_inputs: list, base_logits: list, strict: bool = True,
             initial: str | None = None, location: str | None = None):
    """Save what --save asks for, run the checks; return (model for generation, record for train.json).

    ``model`` is the trained model with any LoRA adapter still unmerged; ``base_logits`` are the base model's
    logits on ``probe_inputs``, taken before training. Raises AdapterCheckError when a check fails, unless not
    ``strict`` (a search's trial), where the failure is recorded and said in one line. ``initial``: the adapter as it
    started, for a method whose start rewrote the base weights (PiSSA, OLoRA): the adapter is saved converted into
    one that applies to the original base (peft's ``path_initial_model_for_weight_conversion``), and the reload
    check loads it onto a fresh copy of that original base, from ``location``.
    """
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    kind, note = save_kind(cfg, spec)
    if note:
        console.print(f"[yellow]--save {cfg.save}: {note}[/]")
    match = tolerance(base_logits, device, "match")
    differs = tolerance(base_logits, device, "differs_quantized" if spec.quantized else "differs")
    checks, merged = [], False
    if spec.finetune == "lora":
        trained = logits(model, probe_inputs)
        keep = store.path(ADAPTER) if kind == ADAPTER else None
        with _saved_adapter(model, keep, initial) as folder:  # a kept adapter, or a temporary one for the check
            reloaded = (_on_original_base(location, spec, device, folder, probe_inputs) if initial else
                        _reloaded_logits(model, folder, probe_inputs))
            checks.append(check("reload_matches", reloaded, trained, match))
        if not spec.quantized:  # QLoRA adapters stay unmerged (harness/cell/training.py)
            model = model.merge_and_unload()
            merged = True
            final = logits(model, probe_inputs)
            checks.append(check("merged_matches_unmerged", final, trained, match))
        else:
            final = trained
    else:
        final = logits(model, probe_inputs)
    checks.insert(0, check("differs_from_base", final, base_logits, differs))
    if kind == MODEL:
        save_folder(store.path(MODEL), lambda tmp: (model.save_pretrained(tmp), tok.save_pretrained(tmp)))
    failed = [c for c in checks if not c["passed"]]
    if failed and strict:
        raise AdapterCheckError("; ".join(_failure(c, spec) for c in failed))
    if failed:
        console.print(f"[yellow]note: {'; '.join(_failure(c, spec) for c in failed)}[/]", soft_wrap=True)
    record = {"checks": checks, "adapter_merged": merged, "checks_s": time.perf_counter() - t0,
              "saved": {"kind": kind, "folder": kind, **({"note": note} if note else {})}}
    return model, record


def _failure(c: dict, spec) -> str:
    if c["name"] != "differs_from_base":
        hint = "the adapter does not survive this step; report it with env.json"
    elif spec.finetune == "lora":
        hint = "the trained weights change nothing: the adapter was not applied or did not train (check --lr and " \
               "the target modules)"
    else:
        hint = "the trained weights change nothing: training did not move them (check --lr)"
    return (f"check {c['name']} failed: {c['what']} is {c['value']:.3g}, must be {c['must_be']} "
            f"{c['tolerance']:.3g} ({c['relative_tolerance']:.3g} x logit scale {c['logit_scale']:.3g}, "
            f"{c['dtype']}); {hint}")


class _saved_adapter:
    """Context manager: the adapter saved to ``keep`` (kept), or to a temporary folder removed on exit; converted
    against ``initial`` (the adapter as it started) when the start rewrote the base weights."""

    def __init__(self, model, keep: Path | None, initial: str | None = None):
        self.model, self.keep, self.tmp, self.initial = model, keep, None, initial

    def save(self, folder) -> None:
        kwargs = {"path_initial_model_for_weight_conversion": self.initial} if self.initial else {}
        self.model.save_pretrained(str(folder), **kwargs)

    def __enter__(self) -> Path:
        if self.keep is not None:
            save_folder(self.keep, self.save)
            return self.keep
        self.tmp = Path(tempfile.mkdtemp(prefix="harness-adapter-"))
        self.save(self.tmp)
        return self.tmp

    def __exit__(self, *exc):
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False  # ``initial`` is the caller's (adapters.initial_folder), removed when it leaves


def _on_original_base(location: str, spec, device: str, folder: Path, probe: list) -> list:
    """The saved (converted) adapter on a fresh copy of the original base model: the model a user loads."""
    from peft import PeftModel

    base = load_model(location, spec, device)
    model = PeftModel.from_pretrained(base, str(folder))
    out = logits(model, probe)
    del model, base
    free_memory(device)
    return out


def _reloaded_logits(model, folder: Path, probe: list) -> list:
    """Load the saved adapter next to the trained one, onto the same base weights, and take its logits.

    The base weights in memory are the ones loaded from the model location (LoRA never changes them), so a
    second copy of the base, which would double the cell's measured peak memory, is not needed. The export
    test reloads onto a freshly loaded base (tests/integration/test_weights.py).
    """
    name = "reload_check"
    model.load_adapter(str(folder), adapter_name=name)
    # Compute in the dtype the adapter was trained in: trl keeps QLoRA adapters in bfloat16 (sft_trainer.py,
    # after the QLoRA paper) and peft loads them into float32 layers, a rounding difference, not an error.
    trained = {n: p.dtype for n, p in model.named_parameters() if ".default." in n}
    for n, p in model.named_parameters():
        if f".{name}." in n:
            p.data = p.data.to(trained[n.replace(f".{name}.", ".default.")])
    try:
        model.set_adapter(name)
        return logits(model, probe)
    finally:
        model.set_adapter("default")
        model.delete_adapter(name)


def save_folder(target: Path, save) -> None:
    """save(tmp) into a hidden sibling, then rename it into place: a killed save leaves no half folder."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save(str(tmp))
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes 0700; records are meant to be shared (harness/core/files.py)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

