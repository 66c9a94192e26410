"""Few-shot evaluation with the shared prefix computed once, against the same cell recomputing it, side by side.

Every prompt of a ``fewshot`` cell starts with the same system prompt and shots (one seeded draw per cell). The
harness's HF backend can run that prefix through the model once and start each batch from a copy of its KV cache
(harness/cell/generate.py). This script builds the cnn few-shot prompts exactly as a cell does (the task, the
method's Prompting, the cell's batch size) and generates them with reuse off and on, alternating A B A B, so that
both see the same machine state. It prints each round's seconds and queries/s, the median ratio, and how many
outputs are token-identical between the two.

    python benchmarks/bench_prefix.py                                  # SmolLM2, CPU, 3 shots, 32 queries
    python benchmarks/bench_prefix.py --max-seq-len 512                # the default window: fewer shots fit
    python benchmarks/bench_prefix.py --device cuda --shape llama2-7b  # a Llama-2-7B-shaped random model, bf16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HARNESS_PROGRESS", "0")  # the rounds' own lines are the output

from benchmarks.synthetic import LLAMA2_7B
from harness.cell.generate import HFBackend
from harness.cell.load import load_model, load_tokenizer
from harness.core.console import quiet_libraries
from harness.spec.config import RunConfig
from harness.spec.methods import resolve_method
from harness.spec.models import resolve_model
from harness.spec.prompting import Prompting
from harness.spec.prompts import n_tokens
from harness.spec.task import Context, GenerationStats, get_task, load_tasks


def build(args):
    import torch

    location = resolve_model(args.model).location
    tok = load_tokenizer(location)
    if args.shape == "llama2-7b":  # the shape of Llama-2-7B with random weights, the tokenizer's vocabulary
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(**{**LLAMA2_7B, "vocab_size": len(tok)}, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
        with torch.device(args.device):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
    else:
        model = load_model(location, resolve_method("base"), args.device)
    return model, tok


def prompts(tok, args) -> tuple[list[str], float]:
    """The cnn few-shot cell's test prompts, and the shots they kept on average."""
    task = get_task("cnn")
    cfg = RunConfig(tasks=("cnn",), methods=(f"fewshot:shots={args.shots}",), max_seq_len=args.max_seq_len)
    ctx = Context(tok=tok, max_seq_len=args.max_seq_len, max_new_tokens=task.max_new_tokens, cfg=cfg)
    data = task.load(cfg)
    ctx.prompting = Prompting(task, cfg.specs[0], ctx, data["train"], cfg.seed)
    rows = (data["test"] * (args.rows // len(data["test"]) + 1))[:args.rows]
    out = [task.eval_prompt(r, ctx) for r in rows]
    kept = [ctx.prompting.notes[p]["shots"] for p in out]
    return out, sum(kept) / len(kept)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--shape", choices=("model", "llama2-7b"), default="model",
                   help="llama2-7b: a random model of that shape with --model's tokenizer (for a GPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--shots", type=int, default=3)
    p.add_argument("--max-seq-len", type=int, default=1024, help="1024 keeps all 3 cnn shots; 512 keeps 1-2")
    p.add_argument("--batch-size", type=int, default=16, help="the harness's --eval-batch-size default")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    load_tasks()
    quiet_libraries()
    model, tok = build(args)
    texts, kept = prompts(tok, args)
    lengths = [n_tokens(tok, t) for t in texts]
    print(f"bench_prefix: {args.model}{' as ' + args.shape if args.shape != 'model' else ''} on {args.device}, "
          f"cnn x fewshot:shots={args.shots}, {len(texts)} queries, max-seq-len {args.max_seq_len}, batch "
          f"{args.batch_size}; prompts {min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}), "
          f"{kept:.2f} of {args.shots} shots kept on average")
    results = {"off": [], "on": []}
    outputs = {}
    for r in range(args.rounds):
        for name in ("off", "on"):
            backend = HFBackend(prefix_cache=name == "on")
            stats = GenerationStats()
            t0 = time.perf_counter()
            out = backend.generate(model, tok, texts, get_task("cnn").max_new_tokens, args.batch_size, stats)
            seconds = time.perf_counter() - t0
            outputs.setdefault(name, out)
            results[name].append({"seconds": seconds, "queries_per_s": len(texts) / seconds,
                                  "new_tokens": stats.new_tokens, **({"prefix": backend.prefix_record}
                                                                     if name == "on" else {})})
            shared = backend.prefix_record.get("shared_tokens") if name == "on" else None
            print(f"  round {r + 1} {name:3}: {seconds:7.2f} s  {len(texts) / seconds:6.2f} queries/s  "
                  f"{stats.new_tokens} new tokens" + (f"  (prefix of {shared} tokens reused)" if shared else ""))
    same = sum(a == b for a, b in zip(outputs["off"], outputs["on"]))
    ratio = statistics.median(a["seconds"] for a in results["off"]) / statistics.median(
        b["seconds"] for b in results["on"])
    print(f"identical outputs: {same} of {len(texts)}")
    print(f"prefix reuse: {ratio:.2f}x the queries/s of recomputing it (median of {args.rounds} rounds each)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results, "identical": same,
                                               "queries": len(texts), "ratio": ratio, "shots_kept": kept},
                                              indent=1) + "\n")
    return 0 if same == len(texts) else 1


if __name__ == "__main__":
    sys.exit(main())
