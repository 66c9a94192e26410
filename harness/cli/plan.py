"""`run_matrix.py plan`: will each method fit, and how long will it take? Answered before any GPU time is spent.

    python run_matrix.py plan --model llama2-7b --gpu T4 --methods full,lora,qlora4,qlora8
    python run_matrix.py plan --model path/to/config.json --memory-budget 24GiB --max-seq-len 1024

Reads only a config.json (shipped ones for the common models, in harness/plan/model_configs), loads no weights
and imports no torch, so it answers offline in well under a second. Memory comes from harness.plan.estimate.
Time comes from this harness's own earlier cells on the same device when there are any (results/*/*/*/), and
otherwise from FLOPs at an assumed model-FLOPs utilisation; the output says which.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.spec.config import FIELDS, parse_bytes
from harness.core.errors import ConfigError
from harness.plan.estimate import GPU_MEMORY, GiB, Shape, estimate, load_shape, shipped_names, shipped_shape
from harness.spec.methods import resolve_method

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
COLUMNS = ("weights", "quant_constants", "adapters", "gradients", "optimizer", "activations", "logits",
           "kv_cache", "workspace")


def _default(name: str):
    return FIELDS[name].default


def parser() -> argparse.ArgumentParser:
    from harness.cli import Parser

    p = Parser(prog="run_matrix.py plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help=f"shipped config ({', '.join(shipped_names())}), catalogue name, "
                                                  "hub id with a shipped config, local model folder or config.json")
    p.add_argument("--methods", default="base,full,lora,qlora4,qlora8", help="comma-separated methods")
    p.add_argument("--batch-size", type=int, default=_default("batch_size"))
    p.add_argument("--eval-batch-size", type=int, default=_default("eval_batch_size"), help="generation batch")
    p.add_argument("--max-seq-len", type=int, default=_default("max_seq_len"))
    p.add_argument("--grad-accum", type=int, default=_default("grad_accum"))
    p.add_argument("--lora-r", type=int, default=_default("lora_r"))
    p.add_argument("--lora-target-modules", default=None, help="override the methods' targets, e.g. q_proj,v_proj")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--optimizer", default="adamw", choices=("adamw", "adamw_8bit", "paged_adamw_8bit",
                                                            "paged_adamw_32bit", "sgd"))
    p.add_argument("--gpu", choices=tuple(GPU_MEMORY), help="plan for this GPU (CUDA, bf16)")
    p.add_argument("--memory-budget", help="budget instead of a GPU's memory, e.g. 16GiB")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda with --gpu, else cpu")
    p.add_argument("--mfu", type=float, default=DEFAULT_MFU, help="model-FLOPs utilisation for the FLOPs estimate")
    p.add_argument("--results", default=_default("out"), help="folder of earlier runs to take tokens/s from")
    return p


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
    from harness.cell.models import CATALOGUE, cache_dir

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


def measured_rates(results: str, model: str, device: str, gpu: str | None) -> dict[str, list[float]]:
    """Tokens/s of earlier cells of this model on this device, by method: training tokens/s for trained
    methods, generated tokens/s for base."""
    key = _model_key(model)
    rates: dict[str, list[float]] = {}
    for metrics in Path(results).glob("*/*/*/metrics.json"):
        cell = metrics.parent
        try:
            config = json.loads((cell / "config.json").read_text())
            env = json.loads((cell / "env.json").read_text())
            timing = json.loads(metrics.read_text())["measurements"]["timing"]
        except (OSError, ValueError, KeyError):
            continue
        if _model_key(config.get("model", "")) != key or env.get("device") != device:
            continue
        if gpu and not all(t in (env.get("gpu") or "").replace("-", " ") for t in gpu.split("-")):
            continue
        method = config.get("method", {})
        rate = timing.get("train_tokens_per_s" if method.get("finetune") != "none" else "generation_tokens_per_s")
        if isinstance(rate, (int, float)) and rate > 0:
            rates.setdefault(method.get("name"), []).append(float(rate))
    return rates


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


def cmd_plan(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    for name in ("batch_size", "eval_batch_size", "max_seq_len", "lora_r", "grad_accum"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if not 0 < args.mfu <= 1:
        raise ConfigError(f"--mfu must be in (0, 1], got {args.mfu}")
    shape = resolve_shape(args.model)
    specs = [resolve_method(m.strip()) for m in args.methods.split(",") if m.strip()]
    if not specs:
        raise ConfigError("--methods is empty; name at least one method, e.g. lora,qlora")
    device = args.device or ("cuda" if args.gpu else "cpu")
    if device == "cpu" and args.gpu:
        raise ConfigError("--gpu plans for a CUDA device; drop --device cpu")
    precision = None if device == "cpu" else ("fp16" if args.gpu in FP16_GPUS else "bf16")
    budget = parse_bytes(args.memory_budget, "--memory-budget") if args.memory_budget else (
        GPU_MEMORY[args.gpu] if args.gpu else None)
    where = f"{args.gpu} ({GPU_MEMORY[args.gpu] / GiB:.0f} GiB datasheet)" if args.gpu else device
    size = f"{shape.n_params / 1e9:.2f}B" if shape.n_params >= 1e9 else f"{shape.n_params / 1e6:.1f}M"
    print(f"plan: {shape.name} ({size} params, {shape.num_hidden_layers} layers, hidden "
          f"{shape.hidden_size}) on {where}; train batch {args.batch_size} x {args.max_seq_len} tokens, "
          f"{'with' if args.gradient_checkpointing else 'no'} gradient checkpointing, {args.optimizer}, LoRA r="
          f"{args.lora_r}; base = generation, batch {args.eval_batch_size} x {args.max_seq_len}")
    if budget is not None:
        print(f"budget: {budget / GiB:.1f} GiB" + (" (--memory-budget)" if args.memory_budget else ""))
    header = ["method"] + [c.replace("quant_constants", "quant").replace("_", " ") for c in COLUMNS] + [
        "total GiB", "fits", "largest batch", "peak in"]
    rows = []
    for spec in specs:
        kw = {"seq_len": args.max_seq_len, "lora_r": args.lora_r, "device": device, "mixed_precision": precision,
              "lora_target_modules": args.lora_target_modules or spec.lora_target_modules,
              "gradient_checkpointing": args.gradient_checkpointing, "optimizer": args.optimizer,
              "grad_accum": args.grad_accum}
        batch = args.batch_size if spec.trains else args.eval_batch_size
        est = estimate(shape, spec, batch_size=batch, **kw)
        fits = "-" if budget is None else ("yes" if est.fits(budget) else "NO")
        best = "-" if budget is None else str(largest_batch(shape, spec, budget, **kw) or "none")
        rows.append([spec.name] + [_gib(est.breakdown.get(c)) for c in COLUMNS] + [
            f"{est.total_bytes / GiB:.2f}", fits, best, est.phase])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths))))
    print("memory: GiB at the estimated peak; rules and their sources in harness/plan/estimate.py, checked against "
          "measurement in docs/memory.md")
    rates = measured_rates(args.results, args.model, device, args.gpu)
    print("time:")
    for spec in specs:
        print("  " + time_line(shape, spec, rates, args.gpu, args.mfu, args.batch_size * args.max_seq_len))
    return 0


def _gib(x) -> str:
    return f"{x / GiB:.2f}" if x else "-"
