"""Llama-2-7B-shaped training on one GPU: peak memory, tokens/s and MFU of full, lora, qlora4 and qlora8.

The model is the public Llama-2-7B configuration with random weights made directly on the GPU
(benchmarks/synthetic.py). Every row builds a fresh model (and so a fresh optimizer) and trains it through the
harness's own training code (harness.cell.training.train: trl's SFTTrainer with the harness's arguments, loss on
completion tokens only), on rows of random words from a word-level tokenizer over the model's 32000-entry
vocabulary. A trainer callback times the steps after the warm-up, with CUDA synchronized; peak memory is reset
after the model is built. A CUDA out-of-memory in one row is recorded as OOM and the next one runs. Each row
records which of the harness's changes to trl's path applied (train.json's ``trl_changes``).

Presets (``--preset``):
* ``table``: every method x sequence length x gradient checkpointing, rows of exactly seq tokens, batch 4;
* ``onoff``: the methods at 1024 tokens on rows of mixed length (seq/4 to seq: a padded batch pads), with the
  harness's changes on, off (trl's own path, --no-trl-changes), on with torch's varlen flash attention
  (HARNESS_VARLEN_KERNEL=1), and on with Liger's kernels (--liger-kernel);
* ``goals``: the GPU goals: lora at 4096 tokens without recomputation (MFU), qlora4 at batch 1 x 1024 with
  checkpointing (peak memory), each with the changes on and off.
MFU counts FLOPs on non-padding tokens (trained tokens per second x 6N or 4N), as NeMo AutoModel does.

    python benchmarks/gpu_bench.py --out gpu_bench.md                   # a CUDA GPU
    python benchmarks/gpu_bench.py --preset onoff --out onoff.md
    python benchmarks/gpu_bench.py --tiny --out /tmp/tiny.md            # the same code on a tiny config, on CPU
    python benchmarks/gpu_bench.py --reestimate docs/gpu/gpu_bench.json  # stored peaks against today's estimate
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import synthetic  # noqa: E402  (benchmarks/ is not a package)

GIB = 2**30
METHODS = ("full", "lora", "qlora4", "qlora8")
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s: NVIDIA H100 Tensor Core GPU datasheet (SXM 989.4,
# PCIe 756; the 1,979 and 1,513 there are with sparsity), H200 datasheet (989.4, the H100 SXM chip), A100
# datasheet (312). The first name found in the device's name wins.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0, "NVIDIA H100 datasheet, PCIe, dense"),
                    ("H100", 989.4, "NVIDIA H100 datasheet, SXM, dense"),
                    ("H200", 989.4, "NVIDIA H200 datasheet, dense"),
                    ("A100", 312.0, "NVIDIA A100 datasheet, dense"))
# FLOPs per trained token: 6N for full training (forward 2N, backward 4N; Kaplan et al. 2020), 4N for
# adapters, whose frozen weights need no weight gradients. Attention's sequence-length term and checkpointing's
# recomputed forward are not counted, as in the usual MFU (PaLM, Chowdhery et al. 2022, appendix B).
FLOPS_PER_PARAM = {"full": 6, "lora": 4, "qlora4": 4, "qlora8": 4}
# full: bitsandbytes' 8-bit AdamW (the Trainer's adamw_bnb_8bit). Plain AdamW states for 6.7B bf16 weights add
# 2 x 13.5 GB, which with weights, gradients and activations passes 80 GB. The paged variant would use CUDA
# managed memory, which the GPU machines here warn against. Adapters: the Trainer's default, torch's fused
# AdamW, which every harness cell uses.
OPTIMIZER = {"full": "adamw_bnb_8bit", "lora": "adamw_torch_fused", "qlora4": "adamw_torch_fused",
             "qlora8": "adamw_torch_fused"}
OPTIMIZER_LABEL = {"adamw_bnb_8bit": "AdamW 8-bit (bnb)", "adamw_torch_fused": "AdamW (torch fused)"}
ESTIMATE_OPTIMIZER = {"adamw_bnb_8bit": "adamw_8bit", "adamw_torch_fused": "adamw"}  # harness/plan/estimate.py's names
KERNEL_ENV = "HARNESS_VARLEN_KERNEL"  # harness.cell.padding_free: torch's varlen flash attention on CUDA
CUDA_ENV = "HARNESS_PADDING_FREE_CUDA"  # harness.cell.padding_free: padding-free batches on CUDA (off by default)
# The training path of a row: the harness's changes; none (trl's own path); with torch's varlen kernel; with Liger.
CHANGES = ("on", "off", "varlen", "liger")
ANCHORS = ("Anchors, not measured here: LlamaFactory (arXiv 2403.13372) Table 4, Llama-2-7B on one A100-40GB, "
           "8-bit AdamW, checkpointing, rank 128: full 38.72 GB at 1335 tok/s, LoRA 16.32 GB at 1954 tok/s, "
           "QLoRA 7.52 GB at 1579 tok/s. NeMo AutoModel: Llama-3-8B LoRA on one H100, about 41% MFU.")


def log(msg: str) -> None:
    print(f"[gpu_bench] {msg}", file=sys.stderr, flush=True)


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def reset_memory(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def failure_text(exc: BaseException) -> str:
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        return "OOM"
    first = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else ""
    return f"error: {type(exc).__name__}: {first}"


# --- one variant, through the harness's training code -------------------------------------------------------

class Patched:
    """For one harness.cell.training.train call: SFTConfig gets the bench's optimizer, the trainer a step timer.

    train() takes SFTConfig and SFTTrainer from trl (imported when it runs, or at module level), so swapping
    them in both modules for the duration of the call reaches it without changing the harness.
    """

    MODULES = ("trl", "harness.cell.training")

    def __init__(self, optim: str, device: str):
        self.optim, self.device, self.step_ends, self.saved, self.optimizer_class = optim, device, [], [], None

    def __enter__(self):
        import importlib

        import trl
        from transformers import TrainerCallback

        config_cls, trainer_cls, bench = trl.SFTConfig, trl.SFTTrainer, self

        class StepTimer(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                sync(bench.device)
                bench.step_ends.append(time.perf_counter())
                optimizer = kw.get("optimizer")
                inner = type(getattr(optimizer, "optimizer", optimizer))
                bench.optimizer_class = f"{inner.__module__.split('.')[0]}.{inner.__name__}"

        class TimedTrainer(trainer_cls):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                self.add_callback(StepTimer())

        def config(**kw):
            return config_cls(**{**kw, "optim": bench.optim})

        for name in self.MODULES:
            module = importlib.import_module(name)
            for attr, new in (("SFTConfig", config), ("SFTTrainer", TimedTrainer)):
                if hasattr(module, attr):
                    self.saved.append((module, attr, getattr(module, attr)))
                    setattr(module, attr, new)
        return self

    def __exit__(self, *exc):
        for module, attr, old in reversed(self.saved):
            setattr(module, attr, old)
        return False


def train_row(model, spec, row: dict, args, device: str, tok) -> dict:
    """warmup + steps steps through harness.cell.training.train; returns the figures of the timed steps."""
    import os

    from harness.cell import training
    from harness.spec.config import RunConfig

    cfg = RunConfig(batch_size=row["batch"], max_seq_len=row["seq"], gradient_checkpointing=row["gc"],
                    lora_r=args.lora_r, epochs=1.0, seed=0, trl_changes=row["changes"] != "off",
                    liger_kernel=row["changes"] == "liger")
    pairs = synthetic.random_pairs(row["batch"] * (args.warmup + args.steps), row["seq"], len(tok),
                                   seed=row["seq"], mixed=row["mixed"])
    saved = {name: os.environ.pop(name, None) for name in (KERNEL_ENV, CUDA_ENV)}
    if row["changes"] != "off":  # the harness's changes on: padding-free batches on CUDA too, to measure them
        os.environ[CUDA_ENV] = "1"
    if row["changes"] == "varlen":
        os.environ[KERNEL_ENV] = "1"
    try:
        with Patched(OPTIMIZER[spec.name], device) as timer:
            _, record = training.train(model, tok, spec, pairs, cfg, device)
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
    ends, expected = timer.step_ends, args.warmup + args.steps
    if record["steps"] != expected or len(ends) != expected:
        raise RuntimeError(f"expected {expected} steps, the trainer ran {record['steps']} ({len(ends)} timed)")
    seconds = ends[-1] - ends[args.warmup - 1]
    # Trained tokens: the trainer counts non-padding tokens (include_num_input_tokens_seen="non_padding").
    tokens_per_step = record["train_tokens"] / record["steps"]
    return {"seconds": seconds, "tokens_per_step": tokens_per_step,
            "tokens_per_s": tokens_per_step * args.steps / seconds,
            "losses": [p["loss"] for p in record["loss_curve"]], "optimizer_class": timer.optimizer_class,
            "trl_changes": record["trl_changes"]}


def harness_estimate(shape: dict, spec, row: dict, args, device: str, compute_bytes: int):
    """harness.plan.estimate's peak for the same settings in GiB; None when it is missing or fails (said once)."""
    try:
        from harness.plan import estimate as est
        from harness.plan.shape import Shape

        result = est.estimate(Shape.from_config(shape, "bench"), spec, batch_size=row["batch"], seq_len=row["seq"],
                              lora_r=args.lora_r, lora_target_modules=spec.lora_target_modules,
                              gradient_checkpointing=row["gc"],
                              optimizer=ESTIMATE_OPTIMIZER[OPTIMIZER[spec.name]], device=device,
                              compute_bytes=compute_bytes)
        return result.total_bytes / GIB
    except Exception as e:  # noqa: BLE001  (a missing estimate must not cost the measurement)
        if not getattr(harness_estimate, "warned", False):
            log(f"no harness estimate, column left '-': {type(e).__name__}: {e}")
            harness_estimate.warned = True
        return None


def run_row(row: dict, shape: dict, n_params: int, args, device: str, peak, deadline, emit) -> None:
    """Build a fresh model for ``row``, train it, and ``emit`` the row with its figures."""
    import torch

    from harness.spec.methods import resolve_method
    from harness.spec.precision import compute_dtype

    spec = resolve_method(row["method"])
    compute_bytes = torch.empty(0, dtype=compute_dtype(device)).element_size()
    tok = synthetic.word_tokenizer(shape["vocab_size"])
    row = {**row, "estimate_gib": harness_estimate(shape, spec, row, args, device, compute_bytes)}
    if time.perf_counter() > deadline:
        emit({**row, "status": "not run (time)"})
        return
    reset_memory(device)
    model, failure = None, None
    try:
        t0 = time.perf_counter()
        model = synthetic.build_model(spec, shape, device)
        log(f"{label(row)}: model built in {time.perf_counter() - t0:.1f} s")
        reset_memory(device)  # the peak from here on: weights, then the training's own
        out = train_row(model, spec, row, args, device, tok)
    except Exception as e:  # noqa: BLE001  (one row's failure must not cost the others)
        failure = failure_text(e)
    del model
    if failure:  # outside the except block, so the traceback no longer pins memory
        reset_memory(device)
        log(f"{label(row)}: {failure}")
        emit({**row, "status": failure})
        return
    alloc = torch.cuda.max_memory_allocated() / GIB if device == "cuda" else None
    reserved = torch.cuda.max_memory_reserved() / GIB if device == "cuda" else None
    mfu = out["tokens_per_s"] * FLOPS_PER_PARAM[row["method"]] * n_params / (peak * 1e12) if peak else None
    log(f"{label(row)}: {out['tokens_per_s']:.0f} tok/s, peak {fmt(alloc)} GiB, "
        f"losses {[round(x, 3) for x in out['losses']]}")
    emit({**row, "status": "ok", "peak_alloc_gib": alloc, "peak_reserved_gib": reserved, "mfu": mfu, **out})
    reset_memory(device)


def label(row: dict) -> str:
    return (f"{row['method']} {row['batch']}x{row['seq']}{' mixed' if row['mixed'] else ''} GC "
            f"{'on' if row['gc'] else 'off'} changes {row['changes']}")


def preset_rows(args) -> list[dict]:
    """The rows of ``--preset``, in the order they run."""
    def row(method, seq, gc, batch, changes="on", mixed=False):
        return {"method": method, "seq": seq, "gc": gc, "batch": batch, "changes": changes, "mixed": mixed}

    seqs = [int(x) for x in (args.seqs or ("64,128" if args.tiny else "512,1024")).split(",")]
    gcs = {"both": (False, True), "on": (True,), "off": (False,)}[args.gc]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.preset == "table":
        return [row(m, s, g, args.batch) for m in methods for s in seqs for g in gcs]
    if args.preset == "onoff":
        seq = 128 if args.tiny else 1024
        kinds = ("on", "off") if args.tiny else CHANGES  # varlen and Liger are CUDA kernels
        return [row(m, seq, False, args.batch, c, mixed=True) for m in methods for c in kinds]
    long_seq, qlora_seq = (128, 64) if args.tiny else (4096, 1024)
    return [row("lora", long_seq, False, 1, c) for c in ("on", "off")] + [
        row("qlora4", qlora_seq, True, 1, c) for c in ("on", "off")]


# --- the tables ---------------------------------------------------------------------------------------------

def matmul_tflops(device: str, n: int, dtype) -> float:
    """Throughput of an n x n x n product (3 warm-ups, 10 timed): the practical ceiling."""
    import torch

    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 2 * n**3 * 10 / (time.perf_counter() - t0) / 1e12


def device_peak(name: str) -> tuple[float | None, str]:
    for key, tflops, source in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops, source
    return None, "no datasheet peak known for this device"


def dtype_rows(device: str) -> list[dict]:
    import torch

    from harness.spec.methods import resolve_method
    from harness.spec.precision import compute_dtype, dtype_name, mixed_precision, weight_dtype

    cuda = device == "cuda"
    return [{"method": m, "capability": "{}.{}".format(*torch.cuda.get_device_capability()) if cuda else "-",
             "is_bf16_supported": str(torch.cuda.is_bf16_supported()) if cuda else "-",
             "mixed_precision": mixed_precision(device),
             "weight_dtype": dtype_name(weight_dtype(resolve_method(m), device)),
             "compute_dtype": dtype_name(compute_dtype(device))} for m in METHODS]


def fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def render(meta: dict, rows: list[dict], dtypes: list[dict]) -> str:
    peak = meta["peak_tflops"]
    lines = [f"## GPU benchmark: {meta['model']} with random weights, {meta['device_name']}", "",
             f"`{meta['command']}`", "",
             f"torch {meta['torch']}, CUDA {meta['cuda']}, transformers {meta['transformers']}, trl {meta['trl']}, "
             f"peft {meta['peft']}, bitsandbytes {meta['bitsandbytes']}. N = {meta['n_params'] / 1e9:.2f}B "
             f"parameters ({meta['n_params']:,}), preset {meta['preset']}, {meta['warmup']} warm-up + "
             f"{meta['steps']} timed steps per row, LoRA r={meta['lora_r']} on all linear layers, compute dtype "
             f"{meta['compute_dtype']}.", "",
             "| method | batch x seq | GC | changes | optimizer | peak alloc GiB | peak reserved GiB | est. GiB | "
             "ratio | tok/s | MFU | applied |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        est = r.get("estimate_gib")
        if r["status"] != "ok":
            cells = [r["status"], r["status"], fmt(est), "-", "-", "-", "-"]
        else:
            ratio = r["peak_alloc_gib"] / est if est and r["peak_alloc_gib"] else None
            applied = ", ".join(r["trl_changes"].get("applied", [])) or "none"
            kernel = r["trl_changes"].get("attention_kernel")
            cells = [fmt(r["peak_alloc_gib"]), fmt(r["peak_reserved_gib"]), fmt(est), fmt(ratio),
                     fmt(r["tokens_per_s"], ".0f"), "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%",
                     applied + (f" ({kernel})" if kernel else "")]
        lines.append(f"| {r['method']} | {r['batch']}x{r['seq']}{' mixed' if r['mixed'] else ''} | "
                     f"{'on' if r['gc'] else 'off'} | {r['changes']} | {OPTIMIZER_LABEL[OPTIMIZER[r['method']]]} | "
                     + " | ".join(cells) + " |")
    peak_text = f"{peak:.1f} TFLOP/s ({meta['peak_source']})" if peak else f"- ({meta['peak_source']})"
    lines += [
        "",
        "- tok/s: trained tokens (non-padding, as the trainer counts them) per second over the timed steps after the "
        "warm-up, between trainer step ends" + (" with CUDA synchronized." if meta["device"] == "cuda" else "."),
        "- changes: on = the harness's changes to trl's path where their conditions hold (applied: which did); off = "
        "trl's own path (--no-trl-changes); varlen = on, with torch's varlen flash attention for padding-free rows "
        "(HARNESS_VARLEN_KERNEL=1); liger = on, with Liger's kernels (--liger-kernel). mixed: rows of seq/4 to seq "
        "tokens, so that a padded batch pads.",
        "- MFU: tok/s x 6N FLOPs per token for full, x 4N for the adapters (frozen weights need no weight "
        f"gradients), over the dense bf16 peak of {peak_text}; attention's sequence term and checkpointing's "
        f"recomputation are not counted. Measured {meta['matmul_n']}^3 {meta['compute_dtype']} matmul: "
        f"{meta['matmul_tflops']:.3g} TFLOP/s, the practical ceiling.",
        "- peak alloc / reserved: torch.cuda.max_memory_allocated / max_memory_reserved, reset after the row's own "
        "fresh model is built, so each row holds its weights, optimizer states, gradients and activations.",
        "- est.: `harness.plan.estimate.estimate` for the same settings; ratio = peak allocated / estimate.",
        "- full uses bitsandbytes' 8-bit AdamW: plain AdamW states for 6.7B bf16 weights do not fit 80 GB beside "
        "the weights, gradients and activations.",
        "- Training: harness.cell.training.train (trl SFTTrainer, completion-only loss) on random-word rows of "
        "seq tokens (mixed: seq/4 to seq), half prompt, half completion; weights random, made on the device, "
        "quantized in memory; a fresh model and optimizer per row.",
        f"- {ANCHORS}",
        "", "### dtype chosen on this device", "",
        "| method | compute capability | torch.cuda.is_bf16_supported() | mixed precision | weights | compute |",
        "|---|---|---|---|---|---|"]
    lines += [f"| {d['method']} | {d['capability']} | {d['is_bf16_supported']} | {d['mixed_precision']} | "
              f"{d['weight_dtype']} | {d['compute_dtype']} |" for d in dtypes]
    return "\n".join(lines) + "\n"


def reestimate(path: str) -> str:
    """The stored measured peaks of an earlier run against the estimate as it was then and as today's code makes it:
    offline, no GPU, so a change to harness/plan can be checked against GPU measurements it did not see."""
    from harness.spec.methods import resolve_method

    stored = json.loads(Path(path).read_text())
    meta = stored["meta"]
    args = argparse.Namespace(lora_r=meta["lora_r"])
    lines = [f"Measured on {meta['device_name']} by `{meta['command']}` (torch {meta['torch']}, transformers "
             f"{meta['transformers']}, trl {meta['trl']}, peft {meta['peft']}, bitsandbytes {meta['bitsandbytes']});"
             f" estimate now: `python benchmarks/gpu_bench.py --reestimate {path}`.", "",
             "| method | batch x seq | GC | measured peak alloc GiB | estimate then GiB | measured/estimate then | "
             "estimate now GiB | measured/estimate now |", "|---|---|---|---|---|---|---|---|"]
    for r in stored["rows"]:
        if r["status"] != "ok":
            continue
        row = {"batch": meta["batch"], **r}
        now = harness_estimate(meta["shape"], resolve_method(r["method"]), row, args, "cuda", 2)
        then, peak = r.get("estimate_gib"), r["peak_alloc_gib"]
        lines.append(f"| {r['method']} | {row['batch']}x{r['seq']} | {'on' if r['gc'] else 'off'} | {fmt(peak)} | "
                     f"{fmt(then)} | {fmt(peak / then if then else None)} | {fmt(now)} | "
                     f"{fmt(peak / now if now else None)} |")
    return "\n".join(lines) + "\n"


def versions() -> dict:
    import importlib.metadata

    out = {}
    for name in ("torch", "transformers", "trl", "peft", "bitsandbytes"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny Llama config on CPU (the smoke test), seqs 64,128")
    p.add_argument("--preset", choices=("table", "onoff", "goals"), default="table",
                   help="which rows (see the module docstring)")
    # lora and qlora4 carry the issue's goals, so they run first in case the time budget cuts the last one.
    p.add_argument("--methods", default="lora,qlora4,full,qlora8")
    p.add_argument("--seqs", help="sequence lengths, comma-separated (default 512,1024; with --tiny 64,128)")
    p.add_argument("--gc", choices=("both", "on", "off"), default="both", help="gradient checkpointing variants")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (at least 1)")
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank (the harness's default)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: cpu with --tiny, else cuda")
    p.add_argument("--budget-s", type=float, help="start no new row after this many seconds")
    p.add_argument("--out", help="write the markdown tables here (rewritten after every row)")
    p.add_argument("--json", help="write every row, with its losses, as JSON here")
    p.add_argument("--reestimate", metavar="JSON",
                   help="print a stored run's measured peaks against today's estimate, and exit (no GPU needed)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.reestimate:
        print(reestimate(args.reestimate), end="")
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.preset == "onoff" and args.methods == p.get_default("methods"):
        args.methods = "lora,qlora4,full"
    if any(m not in METHODS for m in methods) or args.warmup < 1 or args.steps < 1:
        p.error(f"methods must be among {', '.join(METHODS)}; --warmup and --steps at least 1")

    import torch

    from harness.core.console import quiet_libraries
    from harness.spec.precision import compute_dtype, dtype_name

    quiet_libraries()
    device = args.device if args.device != "auto" else "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device is visible; run with --tiny for the CPU smoke version", file=sys.stderr)
        return 2
    plan = preset_rows(args)
    shape = synthetic.TINY if args.tiny else synthetic.LLAMA2_7B
    deadline = time.perf_counter() + (args.budget_s or math.inf)
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    peak, peak_source = device_peak(name) if device == "cuda" else (None, "CPU: no tensor-core peak")
    matmul_n = 8192 if device == "cuda" else 512  # 8192^3: the product the GPU machines' notes report
    meta = {"model": "tiny Llama" if args.tiny else "Llama-2-7B shape", "device": device, "device_name": name,
            "command": "python benchmarks/gpu_bench.py " + " ".join(argv), "cuda": torch.version.cuda,
            **versions(), "n_params": synthetic.parameter_count(shape), "preset": args.preset,
            "warmup": args.warmup, "steps": args.steps, "lora_r": args.lora_r,
            "compute_dtype": dtype_name(compute_dtype(device)), "peak_tflops": peak, "peak_source": peak_source,
            "matmul_n": matmul_n, "matmul_tflops": matmul_tflops(device, matmul_n, compute_dtype(device)),
            "shape": shape}
    log(f"{name}: {matmul_n}^3 matmul {meta['matmul_tflops']:.3g} TFLOP/s; N = {meta['n_params']:,}")
    dtypes, rows = dtype_rows(device), []

    def emit(row: dict) -> None:
        rows.append(row)
        rows.sort(key=lambda r: (METHODS.index(r["method"]), r["seq"], r["batch"], r["gc"],
                                 CHANGES.index(r["changes"])))
        if args.out:
            Path(args.out).write_text(render(meta, rows, dtypes))
        if args.json:
            Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows, "dtypes": dtypes}, indent=1))

    for row in plan:
        run_row(row, shape, meta["n_params"], args, device, peak, deadline, emit)
    print(render(meta, rows, dtypes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
