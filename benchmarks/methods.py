"""Speed and memory of each method, measured side by side in one run, as ratios to LoRA.

Each configuration runs in a fresh subprocess, so its peak memory is its own. All use the same rows, the
same batches and the same number of steps; only the method differs.

    python benchmarks/methods.py                      # SmolLM2-135M on CPU, about 10 minutes
    python benchmarks/methods.py --model tiny-llama --steps 2   # a quick smoke run

Prints a markdown table: train tokens/s, generation tokens/s, peak memory and weight footprint, each with
its ratio to LoRA. docs/benchmarks.md holds the committed output.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = {  # name: (method, gradient checkpointing)
    "full": ("full", False),
    "lora": ("lora", False),
    "lora + grad. checkpointing": ("lora", True),
    "qlora4 (NF4)": ("qlora4", False),
    "qlora8 (LLM.int8)": ("qlora8", False),
}


def measure(model_ref: str, method: str, gc: bool, steps: int, batch: int, device: str) -> dict:
    """Train ``steps`` steps on the embedded cnn rows, then generate for 16 prompts; one process, one method."""
    import time

    from harness.cell.generate import generate
    from harness.cell.load import load_model, load_tokenizer
    from harness.cell.measure import PeakMemory, seed_everything
    from harness.cell.training import train
    from harness.core.console import quiet_libraries
    from harness.spec.config import RunConfig
    from harness.spec.methods import resolve_method
    from harness.spec.models import resolve_model
    from harness.spec.task import Context, GenerationStats, get_task

    quiet_libraries()
    cfg = RunConfig(model=model_ref, batch_size=batch, gradient_checkpointing=gc, epochs=1.0)
    task = get_task("cnn")
    loc = resolve_model(model_ref).location
    tok = load_tokenizer(loc)
    ctx = Context(tok=tok, max_seq_len=512, max_new_tokens=48)
    rows = task.embedded("train")[:steps * batch]
    pairs = [task.train_pair(r, ctx) for r in rows]
    prompts = [task.eval_prompt(r, ctx) for r in task.embedded("eval")[:16]]
    spec = resolve_method(method)
    seed_everything(0)
    with PeakMemory(device) as mem:
        model = load_model(loc, spec, device)
        footprint = model.get_memory_footprint()
        model, record = train(model, tok, spec, pairs, cfg, device)
        stats = GenerationStats()
        t0 = time.perf_counter()
        generate(model, tok, prompts, 48, 16, stats, label="generate")
    return {"train_tokens_per_s": record["train_tokens_per_s"], "gen_tokens_per_s": stats.tokens_per_s,
            "peak_mib": mem.peak_bytes / 2**20, "footprint_mib": footprint / 2**20,
            "trainable_pct": 100 * record["trainable_params"] / record["total_params"],
            "final_loss": record["final_loss"], "wall_s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one config, print JSON
    args = p.parse_args()
    if args.one:
        method, gc = CONFIGS[args.one]
        print("RESULT " + json.dumps(measure(args.model, method, gc, args.steps, args.batch, args.device)))
        return
    results = {}
    for name in CONFIGS:
        done = subprocess.run([sys.executable, __file__, "--one", name, "--model", args.model, "--steps",
                               str(args.steps), "--batch", str(args.batch), "--device", args.device],
                              capture_output=True, text=True, env={"HARNESS_PROGRESS": "0", **_env()})
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        results[name] = json.loads(line[7:])
        print(f"measured {name}", file=sys.stderr)
    ref = results.get("lora")
    print(f"model {args.model}, device {args.device}, {args.steps} steps of batch {args.batch}, "
          "16 prompts x 48 new tokens\n")
    print("| config | train tok/s | x lora | gen tok/s | x lora | peak MiB | x lora | weights MiB | x lora | "
          "trainable % |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def ratio(r, key):
        return f"{r[key] / ref[key]:.2f}" if ref else "-"

    for name, r in results.items():
        print(f"| {name} | {r['train_tokens_per_s']:.1f} | {ratio(r, 'train_tokens_per_s')} | "
              f"{r['gen_tokens_per_s']:.1f} | {ratio(r, 'gen_tokens_per_s')} | {r['peak_mib']:,.0f} | "
              f"{ratio(r, 'peak_mib')} | {r['footprint_mib']:,.0f} | {ratio(r, 'footprint_mib')} | "
              f"{r['trainable_pct']:.2f} |")


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "HARNESS_PROGRESS"}


if __name__ == "__main__":
    from harness.spec.task import load_tasks

    load_tasks()  # the task plugins, as every program of the harness loads them first
    main()
