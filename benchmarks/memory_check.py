"""Checked, not trusted: the memory estimate (harness.plan.estimate) against the measured peak on CPU.

For each model x method x sequence length x gradient checkpointing, a fresh subprocess loads the model the
harness's way (harness.cell.load.load_model) and trains it the harness's way (harness.cell.training.train, trl's
SFTTrainer) on real cnn prompt/completion pairs, or, for ``base``, generates for a batch of cnn prompts
(harness.cell.generate.generate). The peak of live tensor memory is

    the model's own tensors after loading (parameters, buffers, bitsandbytes quantization states; counted by
    storage, so tied and shared tensors count once)
  + the highest net allocation seen by torch.profiler(profile_memory=True) during training or generation
    (every CPU allocator event carries the running total; frees of memory allocated before profiling
    started are not subtracted, so the figure can only err high; tensors made from NumPy arrays are copied
    into torch's allocator so that they are seen too).

The model's tensors are counted directly because from_pretrained maps safetensors files into memory, which
the allocator never sees. Peak RSS would add the libraries and the allocator's arenas; this is tensors only.

    python benchmarks/memory_check.py                   # both models, the five plain methods, 2 lengths, gc off/on
    python benchmarks/memory_check.py --models tiny-llama --methods lora --seq-lens 128 --gc off
    python benchmarks/memory_check.py --json out.jsonl  # also write one JSON line per configuration
    python benchmarks/memory_check.py --families all --methods base,full,lora,qlora4,qlora8 --seq-lens 128 --gc off
                                                        # a 6-layer random model of every family in
                                                        # harness/conformance/families.py
    python benchmarks/memory_check.py --methods dora,qdora,rslora,pissa,olora,loftq,lora+
                                                        # the adapter variants (any method, with overrides)

Each method trains with the settings its cell would (harness.spec.cell.cell_config: the method's own rank, alpha,
epochs and dropout, LoftQ's alpha = r), and the estimate is made for those settings.

Prints a markdown table: measured MiB, estimated MiB, their ratio, and the phase the estimate puts the peak
in. docs/memory.md holds the committed output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.cell.adapters import initial_folder  # noqa: E402
from harness.core.errors import ConfigError  # noqa: E402
from harness.spec.cell import cell_config  # noqa: E402
from harness.spec.methods import resolve_method  # noqa: E402
from memory_probe import numpy_tensors_counted, profiled_peak, record_batches, tensor_state_bytes  # noqa: E402
from memory_published import published  # noqa: E402

MIB = 2**20


def long_rows(rows: list[dict], n: int, join: int = 8) -> list[dict]:
    """Rows whose article is ``join`` consecutive articles, so that every prompt fills --max-seq-len."""
    return [{**rows[i], "article": "\n\n".join(rows[(i + k) % len(rows)]["article"] for k in range(join))}
            for i in range(n)]


def measure(model_ref: str, method: str, seq_len: int, gc: bool, steps: int, batch: int, device: str = "cpu",
            fill: bool = False) -> dict:
    """One configuration in this process: the measured peak and the estimate for the shapes actually run."""
    import torch

    from harness.cell.generate import generate
    from harness.cell.load import load_model, load_tokenizer
    from harness.cell.measure import seed_everything
    from harness.cell.training import train
    from harness.core.console import quiet_libraries
    from harness.plan.estimate import estimate
    from harness.plan.shape import load_shape
    from harness.spec.config import RunConfig
    from harness.spec.models import resolve_model
    from harness.spec.precision import mixed_precision
    from harness.spec.task import Context, GenerationStats, get_task

    quiet_libraries()
    loc = resolve_model(model_ref).location
    tok = load_tokenizer(loc)
    task = get_task("cnn")
    ctx = Context(tok=tok, max_seq_len=seq_len, max_new_tokens=task.max_new_tokens)
    spec = resolve_method(method)
    # as a cell of the method trains: its own rank, alpha, epochs and dropout (PiSSA's 0, LoftQ's alpha = r)
    cfg = cell_config(RunConfig(model=model_ref, batch_size=batch, gradient_checkpointing=gc, max_seq_len=seq_len,
                                epochs=1.0), spec)
    seed_everything(0)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = load_model(loc, spec, device)
    state = torch.cuda.memory_allocated() if device == "cuda" else tensor_state_bytes(model)
    seen: list[tuple[tuple, bool]] = []  # generation: (input shape, padded?) of every decoder forward
    batches: list[tuple[int, int, int]] = []  # training: (rows, tokens, trained tokens) of every batch

    def record(module, args, kwargs):
        ids, mask = kwargs.get("input_ids", args[0] if args else None), kwargs.get("attention_mask")
        if ids is not None:
            seen.append((tuple(ids.shape), mask is not None and not bool(mask.all())))

    hook = model.get_decoder().register_forward_pre_hook(record, with_kwargs=True)
    rows = task.embedded("train" if spec.trains else "eval")
    rows = long_rows(rows, steps * batch) if fill else rows[:steps * batch]
    t0 = time.perf_counter()
    if spec.trains:
        pairs = [task.train_pair(r, ctx) for r in rows]
        run = lambda initial: train(model, tok, spec, pairs, cfg, device, location=loc,  # noqa: E731
                                    initial_dir=initial)
    else:
        prompts = [task.eval_prompt(r, ctx) for r in rows[:batch]]
        run = lambda _: generate(model, tok, prompts, ctx.max_new_tokens, batch, GenerationStats())  # noqa: E731
    # PiSSA's and OLoRA's adapter as it started is saved (on disk, outside the measure), then removed
    with record_batches(batches), numpy_tensors_counted(), initial_folder(spec) as initial:
        if device == "cuda":
            run(initial)
            measured = torch.cuda.max_memory_allocated()
        else:
            delta, _ = profiled_peak(lambda: run(initial))
            measured = state + delta
    hook.remove()
    shape = load_shape(Path(loc) / "config.json", model_ref)
    common = {"lora_r": cfg.lora_r, "lora_target_modules": spec.lora_target_modules, "gradient_checkpointing": gc,
              "optimizer": "adamw", "device": device, "lora_dropout": cfg.lora_dropout,
              "mixed_precision": mixed_precision(device) if device == "cuda" else None}
    if spec.trains:  # the estimate of the largest batch that ran; padding-free, so rows x longest row >= tokens
        shapes = [(n_rows, -(-tokens // n_rows), trained) for n_rows, tokens, trained in batches]
        est = max((estimate(shape, spec, batch_size=r, seq_len=s, loss_tokens=t, **common) for r, s, t in shapes),
                  key=lambda e: e.total_bytes)
        est_batch, length, padded = max(shapes, key=lambda x: x[0] * x[1])[:2] + (False,)
    else:  # the prefill's width, then the cache grows by max_new_tokens
        est_batch, length, padded = batch, seen[0][0][1] + ctx.max_new_tokens, seen[0][1]
        est = estimate(shape, spec, batch_size=batch, seq_len=length, padded=padded, **common)
    return {"model": model_ref, "method": method, "max_seq_len": seq_len, "gc": gc, "batch": est_batch,
            "tokens": length, "padded": padded, "batches": batches, "steps": steps if spec.trains else 0,
            "device": device,
            "state_bytes": state, "measured_bytes": measured, "estimated_bytes": est.total_bytes,
            "ratio": est.total_bytes / measured, "phase": est.phase, "breakdown": est.breakdown,
            "seconds": time.perf_counter() - t0}


def configs(args) -> list[tuple]:
    gcs = {"off": [False], "on": [True], "both": [False, True]}[args.gc]
    out = []
    for model in args.models.split(","):
        for method in args.methods.split(","):
            for seq in (int(s) for s in args.seq_lens.split(",")):
                # base has no backward, so checkpointing does not apply to it
                for gc in ([False] if method == "base" else gcs):
                    out.append((model, method, seq, gc))
    return out


def family_models(names: str) -> dict[str, str]:
    """{folder: family} for a small random model of each named family, saved under a temporary folder that is removed
    when the program ends."""
    import atexit
    import shutil
    import tempfile

    from harness.cell.load import load_tokenizer
    from harness.conformance.families import FAMILIES, build
    from harness.spec.models import smollm2_tokenizer_dir

    wanted = list(FAMILIES) if names == "all" else names.split(",")
    unknown = [f for f in wanted if f not in FAMILIES]
    if unknown:
        raise SystemExit(f"error: unknown family {', '.join(unknown)}; choose from {', '.join(FAMILIES)} or 'all'")
    tok = load_tokenizer(str(smollm2_tokenizer_dir()))
    root = Path(tempfile.mkdtemp(prefix="memory-families-"))
    atexit.register(shutil.rmtree, root, True)
    return {str(build(f, tok, root / f, size="small")): f for f in wanted}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tiny-llama,smollm2-135m")
    p.add_argument("--methods", default="base,full,lora,qlora4,qlora8",
                   help="comma-separated methods, with overrides (e.g. dora,pissa,loftq,lora+,lora:lora_r=64)")
    p.add_argument("--seq-lens", default="128,256", help="--max-seq-len values; cnn rows are cut to fit them")
    p.add_argument("--gc", default="both", choices=("off", "on", "both"), help="gradient checkpointing")
    p.add_argument("--steps", type=int, default=2, help="training steps (2: the second runs with AdamW states)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cuda measures torch.cuda.max_memory_allocated instead of the profiler's count")
    p.add_argument("--long-rows", action="store_true",
                   help="join consecutive cnn articles so that every row fills --max-seq-len (e.g. 512, 1024)")
    p.add_argument("--families", help="instead of --models: 'all' or comma-separated families of "
                                      "harness/conformance/families.py, each a random 6-layer model (hidden 256) "
                                      "saved to a temporary folder")
    p.add_argument("--json", help="also write one JSON line per configuration to this file")
    p.add_argument("--published", action="store_true", help="only the estimates for published figures (no torch)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: MODEL,METHOD,SEQ,GC measured in this process
    args = p.parse_args(argv)
    if args.one:
        model, method, seq, gc = args.one.split(",")
        print("RESULT " + json.dumps(measure(model, method, int(seq), gc == "1", args.steps, args.batch,
                                             args.device, args.long_rows)))
        return 0
    if args.published:
        print("| source | model | method | settings | published GiB | estimated GiB | est/pub |")
        print("|---|---|---|---|---|---|---|")
        for r in published():
            settings = (f"{r['batch']}x{r['seq']}, r={r['r']}, {r['optimizer']}, "
                        f"{'checkpointing' if r['gc'] else 'no checkpointing'}")
            print(f"| {r['source']} | {r['model']} | {r['method']} | {settings} | {r['published_gib']:.2f} | "
                  f"{r['estimate_gib']:.2f} | {r['ratio']:.2f} |")
        for r in published():
            print(f"\n{r['source']}, {r['method']}: {r['describe']}; assumed: {r['assumed']}")
        return 0
    try:  # a misspelt method is one line here, not a failed subprocess per configuration
        [resolve_method(m) for m in args.methods.split(",")]
    except ConfigError as e:
        p.error(str(e))
    env = {**os.environ, "HARNESS_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false"}
    labels = {}  # model reference -> the name printed for it
    if args.families:
        labels = family_models(args.families)
        args.models = ",".join(labels)
    rows, failed = [], 0
    print("| model | method | max len | grad. ckpt | batch x tokens | measured MiB | estimated MiB | est/meas | "
          "estimated peak in |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model, method, seq, gc in configs(args):
        cmd = [sys.executable, __file__, "--one", f"{model},{method},{seq},{int(gc)}", "--steps", str(args.steps),
               "--batch", str(args.batch), "--device", args.device] + (["--long-rows"] if args.long_rows else [])
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            failed += 1
            print(f"{model} {method} {seq} gc={gc}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        r = json.loads(line[7:])
        rows.append(r)
        print(f"| {labels.get(model, model)} | {method} | {seq} | {'on' if gc else 'off'} | {r['batch']}x{r['tokens']}"
              f"{' padded' if r['padded'] else ''} | "
              f"{r['measured_bytes'] / MIB:,.1f} | {r['estimated_bytes'] / MIB:,.1f} | {r['ratio']:.2f} | "
              f"{r['phase']} |", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r) + "\n")
    if rows:
        worst = max(rows, key=lambda r: abs(r["ratio"] - 1))
        inside = sum(abs(r["ratio"] - 1) <= 0.15 for r in rows)
        name = labels.get(worst["model"], worst["model"])
        print(f"\n{inside} of {len(rows)} within 15%; largest deviation {worst['ratio']:.2f} "
              f"({name} {worst['method']} {worst['max_seq_len']} gc={'on' if worst['gc'] else 'off'})")
    return 1 if failed else 0


if __name__ == "__main__":
    from harness.spec.task import load_tasks

    load_tasks()  # the task plugins, as every program of the harness loads them first
    sys.exit(main())
