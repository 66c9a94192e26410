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
import contextlib
import json
import os
import subprocess
import sys
import time
from gc import collect as collect_garbage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.cell.adapters import initial_folder  # noqa: E402
from harness.core.errors import ConfigError  # noqa: E402
from harness.spec.cell import cell_config  # noqa: E402
from harness.spec.methods import resolve_method  # noqa: E402

MIB = 2**20


def tensor_state_bytes(model) -> int:
    """Bytes of the distinct storages behind the model's parameters, buffers and bitsandbytes states."""
    import torch

    seen: dict[int, int] = {}

    def add(t):
        if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.numel():
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()

    for t in list(model.parameters()) + list(model.buffers()):
        add(t)
        qs = getattr(t, "quant_state", None)  # bitsandbytes Params4bit
        if qs is not None:
            for x in (qs.absmax, qs.code, getattr(qs, "offset", None)):
                add(x)
            if getattr(qs, "state2", None) is not None:
                add(qs.state2.absmax)
                add(qs.state2.code)
        for attr in ("SCB", "CB"):  # bitsandbytes Int8Params
            add(getattr(t, attr, None))
    return sum(seen.values())


def profiled_peak(fn) -> tuple[int, object]:
    """(highest net bytes allocated while ``fn`` ran, its result), from the profiler's allocation events."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    # Free what earlier work in this process left in reference cycles now: freed inside the window, it would count
    # against the running total and lower the peak (a previous model's tensors, measured one after another).
    collect_garbage()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        stack.extend(e.children)
        if e.tag == _EventType.Allocation and e.extra_fields.device.type == "cpu":
            events.append((e.start_time_ns, e.extra_fields.total_allocated, e.extra_fields.alloc_size))
    if not events:
        return 0, result
    events.sort()
    start = events[0][1] - events[0][2]  # the running total just before the first event
    return max(total for _, total, _ in events) - start, result


@contextlib.contextmanager
def record_batches(out: list):
    """Record (rows, tokens, trained tokens) of every batch trl's collator builds (harness.cell.trl_changes makes it
    padding-free, so a batch is one row of all its rows' tokens)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling as Collator

    original = Collator.__call__

    def call(self, examples, *args, **kwargs):
        batch = original(self, examples, *args, **kwargs)
        labels = batch["labels"]
        out.append((len(examples), int(batch["input_ids"].numel()), int((labels[:, 1:] != -100).sum())))
        return batch

    Collator.__call__ = call
    try:
        yield
    finally:
        Collator.__call__ = original


@contextlib.contextmanager
def numpy_tensors_counted():
    """Tensors made from NumPy arrays (harness.cell.trl_changes's dropout masks) live in NumPy's memory, which torch's
    allocator, and so the profiler, never sees; copy them into torch's allocator (same size) while measuring."""
    import torch

    original = torch.from_numpy
    torch.from_numpy = lambda array: original(array).clone()
    try:
        yield
    finally:
        torch.from_numpy = original


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


# Published peak-memory figures that nobody here measured, each with its source's own settings. Where a source
# leaves a setting out, the assumption is named in `assumed`.
PUBLISHED = [
    {"source": "LlamaFactory (arXiv 2403.13372) Table 4, A100-40GB", "model": "llama2-7b", "method": "full",
     "published_gib": 38.72, "batch": 1, "seq": 512, "r": 128, "optimizer": "adamw_8bit", "gc": True,
     "assumed": "'token batch size 512' read as 1 x 512; GB read as GiB"},
    {"source": "LlamaFactory (arXiv 2403.13372) Table 4, A100-40GB", "model": "llama2-7b", "method": "lora",
     "published_gib": 16.32, "batch": 1, "seq": 512, "r": 128, "optimizer": "adamw_8bit", "gc": True,
     "assumed": "'token batch size 512' read as 1 x 512; GB read as GiB"},
    {"source": "LlamaFactory (arXiv 2403.13372) Table 4, A100-40GB", "model": "llama2-7b", "method": "qlora4",
     "published_gib": 7.52, "batch": 1, "seq": 512, "r": 128, "optimizer": "adamw_8bit", "gc": True,
     "assumed": "'token batch size 512' read as 1 x 512; GB read as GiB"},
    {"source": "torchtune README, RTX 4090 (Llama-3.1-8B = llama3-8b shapes)", "model": "llama3-8b",
     "method": "lora", "targets": "q_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "published_gib": 16.2,
     "batch": 2, "seq": 2048, "r": 8, "optimizer": "adamw", "gc": True,
     "assumed": "recipe llama3_1/8B_lora_single_device: packed 2048, r=8, activation checkpointing"},
    {"source": "torchtune README, RTX 4090 (Llama-3.1-8B = llama3-8b shapes)", "model": "llama3-8b",
     "method": "qlora4", "published_gib": 7.4, "batch": 2, "seq": 2048, "r": 8, "optimizer": "adamw", "gc": True,
     "assumed": "recipe llama3_1/8B_qlora_single_device: packed 2048, r=8, all projections"},
    {"source": "QLoRA (arXiv 2305.14314): 65B fits one 48 GB GPU", "model": "llama-65b", "method": "qlora4",
     "published_gib": 48e9 / 2**30, "batch": 1, "seq": 512, "r": 64, "optimizer": "paged_adamw_32bit",
     "gc": True, "assumed": "paper's Guanaco-65B recipe: r=64 on all linear layers, paged 32-bit AdamW; "
                            "batch 1 x 512 (384 source + 128 target tokens)"},
]
# LLaMA-65B (huggyllama/llama-65b config.json): not a shipped model, so its shape is written out here.
LLAMA_65B = {"hidden_size": 8192, "intermediate_size": 22016, "num_hidden_layers": 80, "num_attention_heads": 64,
             "vocab_size": 32000, "tie_word_embeddings": False}


def published() -> list[dict]:
    """The estimate for each published figure, with the source's settings, on CUDA in bf16."""
    from harness.plan.estimate import estimate
    from harness.plan.shape import Shape, shipped_shape

    rows = []
    for p in PUBLISHED:
        shape = Shape.from_config(LLAMA_65B, "llama-65b") if p["model"] == "llama-65b" else shipped_shape(p["model"])
        spec = resolve_method(p["method"])
        est = estimate(shape, spec, batch_size=p["batch"], seq_len=p["seq"], lora_r=p["r"],
                       lora_target_modules=p.get("targets", "all-linear"), gradient_checkpointing=p["gc"],
                       optimizer=p["optimizer"], device="cuda", mixed_precision="bf16")
        rows.append({**p, "estimate_gib": est.total_bytes / 2**30, "ratio": est.total_bytes / 2**30 /
                     p["published_gib"], "describe": est.describe()})
    return rows


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
