"""Training speed and memory: the harness's training path against two plain trl SFTTrainer scripts, side by side.

    python benchmarks/bench_train.py                      # SmolLM2, 24 cnn rows, batch 4, lora
    python benchmarks/bench_train.py --long               # 16 long ReAct rows at --max-seq-len 1024
    python benchmarks/bench_train.py --method qlora4      # every trained method: full, lora, qlora4, qlora8
    python benchmarks/bench_train.py --model tiny-llama --rows 8 --rounds 1   # a smoke run

Every variant trains the same rows (prompt/completion pairs rendered by the task, so the tokens are the same),
model, method, sequence length, batch, steps and seed:

* ``harness``: ``harness.cell.training.train`` as a cell calls it (its defaults: no recomputation);
* ``trl-documented``: a script written the way trl's documentation shows, a prompt/completion dataset and
  ``SFTConfig``'s defaults apart from what a CPU needs (so gradient checkpointing on, trl's default), with the same
  LoraConfig, quantization and learning rate;
* ``trl-best``: the same script at trl's best on this device: checkpointing off, and trl's padding-free collator
  (``padding_free=True``; transformers turns its position ids into a block-diagonal mask for SDPA, so rows do not
  see each other).

Each run is its own child process, so its peak resident memory (VmHWM) is its own, and the variants alternate
(harness, trl-documented, trl-best, harness, ...) in one run of this script, so all see the same machine load.
Timings are never compared across runs.

Per run it prints train tokens/s (the rows' tokens over the time in ``trainer.train()``), peak RSS, and the
first-step and final loss; then the ratios, harness / each trl variant. ``--json FILE`` writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VARIANTS = ("harness", "trl-documented", "trl-best")
GIB = 2**30


# --- rows ----------------------------------------------------------------------------------------------------

def cnn_pairs(tok, rows: int, max_seq_len: int) -> list[dict]:
    """The cnn task's own training pairs from its embedded rows (chat-rendered prompt, highlights completion)."""
    from harness.spec.config import RunConfig
    from harness.spec.task import Context, get_task

    task = get_task("cnn")
    ctx = Context(tok=tok, max_seq_len=max_seq_len, max_new_tokens=task.max_new_tokens, cfg=RunConfig())
    return [task.train_pair(r, ctx) for r in task.embedded("train")[:rows]]


def long_pairs(tok, rows: int, seed: int) -> list[dict]:
    """Long ReAct rows: each fever claim's gold trajectory, preceded by 1-11 Search steps over other pages of the
    embedded encyclopedia whose observations are what the tool returns. About 250 to 1100 tokens, so that a
    batch mixes short and long rows as real agent trajectories do."""
    from harness.spec.config import RunConfig
    from harness.spec.task import Context, get_task
    from tasks.docstore import Browser
    from tasks.embedded import fever_gen

    task = get_task("fever")
    ctx = Context(tok=tok, max_seq_len=4096, max_new_tokens=8, cfg=RunConfig(tasks=("fever",)))
    titles = [p["title"] for p in fever_gen.encyclopedia()[0]]
    rng = random.Random(seed)
    out = []
    for row in task.embedded("train")[:rows]:
        pair = task.train_pair(row, ctx)
        browser, steps = Browser(fever_gen.store()), []
        for k, title in enumerate(rng.sample(titles, rng.randint(1, 11)), 1):
            steps += [f"Thought {k}: I should first check what the encyclopedia says about {title}.",
                      f"Action {k}: Search[{title}]", f"Observation {k}: {browser.search(title)}"]
        shift = len(steps) // 3
        gold = re.sub(r"^(Thought|Action|Observation) (\d+):", lambda m, shift=shift: f"{m[1]} {int(m[2]) + shift}:",
                      pair["completion"], flags=re.M)
        out.append({"prompt": pair["prompt"], "completion": "\n".join(steps + [gold])})
    return out


def load_pairs(args, tok) -> list[dict]:
    if args.data:
        rows = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()]
        return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows[:args.rows]]
    if args.long:
        return long_pairs(tok, args.rows, args.seed)
    return cnn_pairs(tok, args.rows, args.max_seq_len)


# --- one run, in a child process -----------------------------------------------------------------------------

def peak_rss() -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", text, re.M).group(1)) * 1024


def run_harness(args, tok, pairs, location: str) -> dict:
    from harness.cell.load import load_model
    from harness.cell.measure import seed_everything
    from harness.cell.training import train
    from harness.spec.config import RunConfig
    from harness.spec.methods import resolve_method

    cfg = RunConfig(model=args.model, batch_size=args.batch, max_seq_len=args.max_seq_len, seed=args.seed,
                    gradient_checkpointing=args.gradient_checkpointing)
    spec = resolve_method(args.method)
    seed_everything(args.seed)
    model = load_model(location, spec, args.device)
    _, record = train(model, tok, spec, pairs, cfg, args.device)
    curve = record["loss_curve"]
    return {"tokens": record["train_tokens"], "train_s": record["train_s"], "steps": record["steps"],
            "first_loss": curve[0]["loss"], "final_loss": curve[-1]["loss"], "trl_changes": record["trl_changes"]}


def run_trl(args, tok, pairs, location: str) -> dict:
    """The plain script: what trl's SFT documentation shows, with the harness's hyperparameters."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from harness.spec.config import RunConfig
    from harness.spec.methods import resolve_method

    spec, defaults = resolve_method(args.method), RunConfig()
    kwargs = {"dtype": torch.float32 if args.device == "cpu" else torch.bfloat16}
    if spec.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"])
    elif spec.load_in_8bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    peft_config = None
    if spec.finetune == "lora":
        peft_config = LoraConfig(r=defaults.lora_r, lora_alpha=defaults.lora_alpha,
                                 lora_dropout=defaults.lora_dropout, target_modules=spec.lora_target_modules,
                                 task_type="CAUSAL_LM")
    common = dict(output_dir=str(Path(args.scratch) / "trl"), per_device_train_batch_size=args.batch,
                  num_train_epochs=1, learning_rate=spec.lr, logging_steps=1, seed=args.seed, save_strategy="no",
                  report_to="none", include_num_input_tokens_seen="non_padding", use_cpu=args.device == "cpu",
                  bf16=args.device == "cuda")
    dataset = Dataset.from_list(pairs)
    if args.child == "trl-best":
        # trl refuses max_length with padding_free and no packing ("provide already truncated inputs"), so the
        # rows go through trl's own preparation first (tokenize, mask the prompt, truncate at --max-seq-len), as
        # in the documented variant, and train padding-free from those tokens.
        prepare = SimpleNamespace(_tokenizer=tok, chat_template=None, completion_only_loss=True)
        dataset = SFTTrainer._prepare_dataset(prepare, dataset, tok, SFTConfig(**common, max_length=args.max_seq_len),
                                              False, None, "train")
        training_args = SFTConfig(**common, max_length=None, gradient_checkpointing=False, padding_free=True)
    else:
        training_args = SFTConfig(**common, max_length=args.max_seq_len)  # trl's defaults: checkpointing on
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=tok,
                         peft_config=peft_config)
    losses = []

    class Losses(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    trainer.add_callback(Losses())
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    return {"tokens": int(trainer.state.num_input_tokens_seen), "train_s": seconds,
            "steps": trainer.state.global_step, "first_loss": losses[0], "final_loss": losses[-1],
            "gradient_checkpointing": training_args.gradient_checkpointing, "padding_free": training_args.padding_free}


def child(args) -> None:
    from harness.cell.load import load_tokenizer
    from harness.core.console import quiet_libraries
    from harness.spec.models import resolve_model

    quiet_libraries()
    location = resolve_model(args.model).location
    tok = load_tokenizer(location)
    pairs = load_pairs(args, tok)
    result = (run_harness if args.child == "harness" else run_trl)(args, tok, pairs, location)
    # Every variant divides the same count, the rows' own tokens (as describe_rows counts them): trainers count
    # "non-padding" tokens differently once a batch has no padding (trl's padding-free batches leave out the EOS
    # tokens that equal the pad token), which would move the ratio by a few percent.
    real = sum(row_tokens(tok, p, args.max_seq_len) for p in pairs)
    result.update(variant=args.child, peak_rss_bytes=peak_rss(), row_tokens=real, tokens_per_s=real / result["train_s"])
    print("RESULT " + json.dumps(result), flush=True)


# --- the side-by-side run ------------------------------------------------------------------------------------

def row_tokens(tok, pair: dict, max_seq_len: int) -> int:
    """A row's tokens as trained: prompt, completion and EOS, cut at the sequence length."""
    return min(max_seq_len, len(tok(pair["prompt"] + pair["completion"], add_special_tokens=False)["input_ids"]) + 1)


def describe_rows(args) -> dict:
    from harness.cell.load import load_tokenizer
    from harness.spec.models import resolve_model

    tok = load_tokenizer(resolve_model(args.model).location)
    lengths = [row_tokens(tok, p, args.max_seq_len) for p in load_pairs(args, tok)]
    return {"rows": len(lengths), "mean_tokens": sum(lengths) / len(lengths), "min_tokens": min(lengths),
            "max_tokens": max(lengths)}


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def launch(args, variant: str) -> dict:
    argv = [sys.executable, __file__, "--child", variant, "--model", args.model, "--method", args.method,
            "--rows", str(args.rows), "--max-seq-len", str(args.max_seq_len), "--batch", str(args.batch),
            "--seed", str(args.seed), "--device", args.device, "--scratch", args.scratch]
    argv += ["--long"] * args.long + ["--gradient-checkpointing"] * args.gradient_checkpointing
    argv += ["--data", args.data] if args.data else []
    env = {**os.environ, "HARNESS_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{variant} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def ratios(runs: list[dict], baseline: str) -> dict:
    """harness / ``baseline`` per round (each harness run against the baseline run of its round), then the mean."""
    rounds = sorted({r["round"] for r in runs})
    pairs = [(next(r for r in runs if r["round"] == n and r["variant"] == "harness"),
              next(r for r in runs if r["round"] == n and r["variant"] == baseline)) for n in rounds]
    per_round = [{"speed": h["tokens_per_s"] / t["tokens_per_s"], "peak_rss": h["peak_rss_bytes"] / t["peak_rss_bytes"],
                  "first_loss_diff": h["first_loss"] - t["first_loss"],
                  "final_loss_diff": h["final_loss"] - t["final_loss"]} for h, t in pairs]
    mean = {k: sum(r[k] for r in per_round) / len(per_round) for k in per_round[0]}
    return {"per_round": per_round, "mean": mean}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="catalogue name or local folder")
    p.add_argument("--method", default="lora", choices=("full", "lora", "qlora", "qlora4", "qlora8"))
    p.add_argument("--long", action="store_true", help="long ReAct rows at --max-seq-len 1024 (16 rows)")
    p.add_argument("--data", help="a .jsonl of {prompt, completion} rows to train on instead")
    p.add_argument("--rows", type=int, help="training rows (default: 24, or 16 with --long)")
    p.add_argument("--max-seq-len", type=int, help="default: 512, or 1024 with --long")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=2, help="harness/trl pairs, interleaved")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="full recomputation in the harness variant (trl-documented has it on, trl-best off)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.rows = args.rows or (16 if args.long else 24)
    args.max_seq_len = args.max_seq_len or (1024 if args.long else 512)
    if args.child:
        child(args)
        return
    import tempfile

    args.scratch = tempfile.mkdtemp(prefix="bench-train-")
    rows = describe_rows(args)
    print(f"model {args.model}, method {args.method}, {rows['rows']} {'long ReAct' if args.long else 'cnn'} rows "
          f"({rows['min_tokens']}-{rows['max_tokens']} tokens, mean {rows['mean_tokens']:.0f}), max_seq_len "
          f"{args.max_seq_len}, batch {args.batch}, seed {args.seed}, gradient checkpointing "
          f"{'on' if args.gradient_checkpointing else 'off'} in harness (trl-documented: on, trl-best: off), device "
          f"{args.device}", flush=True)
    load_before = load_average()
    runs = []
    for r in range(args.rounds):
        for variant in VARIANTS:
            res = launch(args, variant)
            res["round"] = r + 1
            runs.append(res)
            print(f"  round {r + 1} {variant:14s} {res['tokens_per_s']:8.1f} tok/s  peak RSS "
                  f"{res['peak_rss_bytes'] / GIB:5.2f} GiB  loss {res['first_loss']:.6f} -> {res['final_loss']:.6f}"
                  f"  ({res['steps']} steps, {res['tokens']} tokens, {res['train_s']:.1f} s)", flush=True)
    load_after = load_average()
    summary = {base: ratios(runs, base) for base in VARIANTS[1:]}
    print()
    print("| round | variant | train tok/s | peak RSS GiB | first-step loss | final loss | steps | trainer tokens |")
    print("|---|---|---|---|---|---|---|---|")
    for res in runs:
        print(f"| {res['round']} | {res['variant']} | {res['tokens_per_s']:.1f} | {res['peak_rss_bytes'] / GIB:.2f} | "
              f"{res['first_loss']:.6f} | {res['final_loss']:.6f} | {res['steps']} | {res['tokens']} |")
    print()
    for base, ratio in summary.items():
        m = ratio["mean"]
        print(f"harness / {base}: speed {m['speed']:.2f}x, peak RSS {m['peak_rss']:.2f}x, first-step loss "
              f"difference {m['first_loss_diff']:+.2e}, final loss difference {m['final_loss_diff']:+.2e} "
              f"(mean of {len(ratio['per_round'])} rounds)")
    print(f"load average before {load_before}, after {load_after}")
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": {**vars(args), **rows}, "runs": runs, "ratios": summary,
                                               "load_before": load_before, "load_after": load_after}, indent=2))


if __name__ == "__main__":
    from harness.spec.task import load_tasks

    load_tasks()  # the task plugins, as every program of the harness loads them first
    main()
