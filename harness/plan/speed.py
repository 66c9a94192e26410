"""What a method will take before it runs: the largest batch that fits a memory budget, and the tokens/s to expect,
from this harness's own earlier cells of the same model and method when there are any, else from FLOPs."""

from __future__ import annotations

import json
from pathlib import Path

from harness.core.errors import ConfigError
from harness.plan.estimate import estimate
from harness.plan.shape import Shape, load_shape, shipped_names, shipped_shape
from harness.spec.models import CATALOGUE, cache_dir

# Dense 16-bit tensor-core peak of each --gpu, from NVIDIA's datasheets (without 2:4 sparsity): T4 65 TFLOPS
# fp16 (no bf16 below compute capability 8); L4 121 bf16; A10G: the A10's 125 bf16 (NVIDIA publishes no separate
# A10G sheet, and AWS clocks it lower); A100 312 bf16; H100 SXM 989 bf16; H200 989 bf16 (the H100's compute).
PEAK_TFLOPS = {"T4": 65, "L4": 121, "A10G": 125, "A100-40GB": 312, "A100-80GB": 312, "H100": 989, "H200": 989}
# GPUs below compute capability 8.0 train in fp16 (harness.cell.models.mixed_precision): the T4 is 7.5 (NVIDIA's CUDA
# GPU compute capability table); every other --gpu choice is 8.0 or above.
FP16_GPUS = ("T4",)
# Assumed model-FLOPs utilisation when nothing was measured: PaLM reached 46% in large-scale pre-training
# (Chowdhery et al. 2022, arXiv 2204.02311, Table 3); single-GPU fine-tuning with padded batches runs lower.
DEFAULT_MFU = 0.35


def resolve_shape(ref: str) -> Shape:
    """A shipped name, a catalogue name, a hub id with a shipped config, a folder or a config.json; no weights."""
    shape = shipped_shape(ref)
    if shape is not None:
        return shape
    path = Path(ref).expanduser()
    if path.is_file():
        return load_shape(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"--model {ref}: the folder has no config.json; pass a model folder or a config.json")
        return load_shape(path / "config.json", path.name)
    if ref in CATALOGUE:
        cached = cache_dir() / "models" / ref / "config.json"
        if cached.is_file():
            return load_shape(cached, ref)
        location = str(CATALOGUE[ref]())  # a hub id for the gated models; builds tiny-llama (seconds) once
        found = shipped_shape(location) or (load_shape(Path(location) / "config.json", ref)
                                            if (Path(location) / "config.json").is_file() else None)
        if found is not None:
            return found
    raise ConfigError(f"--model {ref!r}: no config to read; shipped: {', '.join(shipped_names())}; or pass a local "
                      "model folder or a config.json")


def largest_batch(shape, spec, budget: int, **kw) -> int:
    """The largest batch whose estimate fits ``budget`` (0 if none does); estimates grow with the batch."""
    fits = lambda b: estimate(shape, spec, batch_size=b, **kw).total_bytes <= budget  # noqa: E731
    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= 65536 and fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def measured_rates(results: str, model: str, device: str, gpu: str | None) -> tuple[dict[str, list[float]], list]:
    """Tokens/s of earlier cells of this model on this device, by method: training tokens/s for trained
    methods, generated tokens/s for base; and the cells whose records did not read, (folder, why) each."""
    key = _model_key(model)
    rates: dict[str, list[float]] = {}
    unreadable = []
    for metrics in sorted(Path(results).glob("*/*/*/metrics.json")):
        cell = metrics.parent
        try:
            config = json.loads((cell / "config.json").read_text())
            env = json.loads((cell / "env.json").read_text())
            timing = json.loads(metrics.read_text())["measurements"]["timing"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            unreadable.append((cell, f"{type(e).__name__}: {e}"))
            continue
        if _model_key(config.get("model", "")) != key or env.get("device") != device:
            continue
        if gpu and not all(t in (env.get("gpu") or "").replace("-", " ") for t in gpu.split("-")):
            continue
        method = config.get("method", {})
        rate = timing.get("train_tokens_per_s" if method.get("finetune") != "none" else "generation_tokens_per_s")
        if isinstance(rate, (int, float)) and rate > 0:
            rates.setdefault(method.get("name"), []).append(float(rate))
    return rates, unreadable


def unreadable_line(unreadable: list) -> str | None:
    """One line for the cells ``measured_rates`` could not read, naming the first, or None when it read them all."""
    if not unreadable:
        return None
    cell, why = unreadable[0]
    return (f"skipped {len(unreadable)} earlier cell{'s' if len(unreadable) > 1 else ''} whose records do not read "
            f"(e.g. {cell}: {why}); their tokens/s are not counted")


def _model_key(ref: str) -> str:
    try:
        shape = shipped_shape(ref)
    except ConfigError:
        shape = None
    return shape.name if shape is not None else ref


def time_line(shape, spec, rates: dict, gpu: str | None, mfu: float, tokens_per_step: int) -> str:
    got = rates.get(spec.name)
    if got:
        rate = sum(got) / len(got)
        what = "generated" if not spec.trains else "training"
        return (f"{spec.name:10} {rate:10,.0f} {what} tok/s  measured: mean of {len(got)} measured cell"
                f"{'s' if len(got) > 1 else ''} of this model and method on this device")
    if not spec.trains:
        return f"{spec.name:10} {'-':>10}  no FLOPs basis: generation is bound by memory bandwidth; run a cell"
    if gpu is None:
        return f"{spec.name:10} {'-':>10}  no measured cells and no --gpu to take peak FLOPs from"
    per_token = (6 if spec.finetune == "full" else 4) * shape.n_params
    rate = mfu * PEAK_TFLOPS[gpu] * 1e12 / per_token
    rule = "6N (full: forward 2N, backward 4N)" if spec.finetune == "full" else \
        "4N (adapters: forward 2N, input gradients 2N; no weight gradients)"
    extra = "; dequantizing the weights adds work this does not count" if spec.quantized else ""
    return (f"{spec.name:10} {rate:10,.0f} training tok/s  FLOPs: {rule} per token at {mfu:.0%} MFU of "
            f"{PEAK_TFLOPS[gpu]} TFLOPS ({gpu} datasheet); {tokens_per_step / rate:.1f} s/step{extra}")
