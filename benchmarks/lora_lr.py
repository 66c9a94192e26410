"""Why LoRA's default learning rate is 1e-3 here: QLoRA's 2e-4 against 1e-3, side by side.

Same model, rows, steps and seed; only the learning rate differs. Prints the final training loss and the
ROUGE-L on 16 held-out rows for each, and the ratio of each to 2e-4.

    python benchmarks/lora_lr.py          # SmolLM2-135M on CPU, about 5 minutes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run(model_ref: str, lr: float, rows: int, eval_rows: int) -> dict:
    from harness.cell.generate import generate
    from harness.cell.load import load_model, load_tokenizer
    from harness.cell.measure import seed_everything
    from harness.cell.training import train
    from harness.core.console import quiet_libraries
    from harness.core.stats import mean
    from harness.spec.config import RunConfig
    from harness.spec.methods import resolve_method
    from harness.spec.metrics import rouge
    from harness.spec.models import resolve_model
    from harness.spec.task import Context, GenerationStats, get_task

    quiet_libraries()
    cfg = RunConfig(model=model_ref, lr=lr)
    task = get_task("cnn")
    loc = resolve_model(model_ref).location
    tok = load_tokenizer(loc)
    ctx = Context(tok=tok, max_seq_len=512, max_new_tokens=64)
    pairs = [task.train_pair(r, ctx) for r in task.embedded("train")[:rows]]
    ev = task.embedded("eval")[:eval_rows]
    seed_everything(0)
    model, record = train(load_model(loc, resolve_method("lora"), "cpu"), tok, resolve_method("lora"), pairs,
                          cfg, "cpu")
    outs = generate(model, tok, [task.eval_prompt(r, ctx) for r in ev], 64, 16, GenerationStats())
    return {"final_loss": record["final_loss"],
            "rougeL": mean(rouge(outs, [r["highlights"] for r in ev], types=("rougeL",))["rougeL"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--rows", type=int, default=48)
    p.add_argument("--eval-rows", type=int, default=16)
    args = p.parse_args()
    results = {lr: run(args.model, lr, args.rows, args.eval_rows) for lr in (2e-4, 1e-3)}
    ref = results[2e-4]
    print(f"model {args.model}, LoRA r=16 on all projections, {args.rows} cnn rows, batch 4, 1 epoch\n")
    print("| lr | final train loss | x 2e-4 | ROUGE-L (16 eval rows) | x 2e-4 |")
    print("|---|---|---|---|---|")
    for lr, r in results.items():
        print(f"| {lr:g} | {r['final_loss']:.3f} | {r['final_loss'] / ref['final_loss']:.2f} | "
              f"{r['rougeL']:.3f} | {r['rougeL'] / ref['rougeL']:.2f} |")


if __name__ == "__main__":
    from harness.spec.task import load_tasks

    load_tasks()  # the task plugins, as every program of the harness loads them first
    main()
