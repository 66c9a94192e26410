"""``run_matrix.py plan``: will each method fit, and how long will it take? Answered before any GPU time is spent.

    python run_matrix.py plan --model llama2-7b --gpu T4 --methods full,lora,qlora4,qlora8
    python run_matrix.py plan --model path/to/config.json --memory-budget 24GIB --max-seq-len 1024
    python run_matrix.py plan --tasks qa,cnn --methods base,fewshot,rag,lora:retrieve=3

With --tasks, the prompts each method sends on those tasks are estimated from the tasks' embedded rows (shots
and retrieved passages make them longer; harness/plan/prompts.py), and memory is estimated at those lengths
instead of at --max-seq-len.

Reads only a config.json (shipped ones for the common models, in harness/plan/model_configs), loads no weights
and imports no torch, so it answers offline in well under a second. Memory comes from harness.plan.estimate,
time from harness.plan.speed. The flags it shares with a run are the run's own (harness/cli/parser.py).
"""

from __future__ import annotations

import argparse

from harness.cli.parser import Parser, add_config_flags, config_from_args
from harness.core.errors import ConfigError
from harness.core.units import GIB, parse_bytes
from harness.plan import prompts
from harness.plan.budget import GPU_MEMORY
from harness.plan.estimate import OPTIMIZERS, estimate
from harness.plan.matrix import trials
from harness.plan.shape import shipped_names
from harness.plan.speed import (
    DEFAULT_MFU,
    FP16_GPUS,
    PEAK_TFLOPS,
    largest_batch,
    measured_rates,
    resolve_shape,
    time_line,
    unreadable_line,
)
from harness.report.render import plain
from harness.report.table import Column, Table, Value
from harness.spec.task import get_task

SHARED = ("model", "tasks", "data", "corpus", "fever_mode", "passage_words", "train_limit", "eval_limit",
          "max_new_tokens", "tune_trials", "methods", "batch_size", "eval_batch_size", "max_seq_len", "grad_accum",
          "lora_r", "gradient_checkpointing", "gpu", "memory_budget", "device", "out", "tune", "seeds")
COLUMNS = ("weights", "quant_constants", "adapters", "gradients", "optimizer", "activations", "logits",
           "kv_cache", "workspace")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="run_matrix.py plan", description=__doc__.split("\n\n")[0])
    add_config_flags(p, only=SHARED, aliases={"out": ("--results",)}, help_overrides={
        "model": f"shipped config ({', '.join(shipped_names())}), catalogue name, hub id with a shipped config, "
                 "local model folder or config.json",
        "device": "cuda plans for a GPU (auto: cuda with --gpu, else cpu)",
        "out": "folder of earlier runs to take measured tokens/s from",
    })
    only = p.add_argument_group("plan only")
    only.add_argument("--lora-target-modules", default=None, help="override the methods' targets, e.g. q_proj,v_proj")
    only.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS, help="optimizer whose states to count")
    only.add_argument("--mfu", type=float, default=DEFAULT_MFU,
                      help=f"model-FLOPs utilisation for the FLOPs estimate (default: {DEFAULT_MFU})")
    return p


def cmd_plan(argv: list[str]) -> int:
    flags = vars(parser().parse_args(argv))
    with_tasks = "tasks" in flags
    extra = {k: flags.pop(k) for k in ("lora_target_modules", "optimizer", "mfu")}
    cfg = config_from_args(flags)  # the run's own checks: sizes, methods, budget
    args = argparse.Namespace(**cfg.to_dict(), **extra)
    if not 0 < args.mfu <= 1:
        raise ConfigError(f"--mfu must be in (0, 1], got {args.mfu}")
    shape = resolve_shape(args.model)
    specs = cfg.specs
    device = args.device if args.device != "auto" else ("cuda" if args.gpu else "cpu")
    if device == "cpu" and args.gpu:
        raise ConfigError("--gpu plans for a CUDA device; drop --device cpu")
    precision = None if device == "cpu" else ("fp16" if args.gpu in FP16_GPUS else "bf16")
    budget = parse_bytes(args.memory_budget, "--memory-budget") if args.memory_budget else (
        GPU_MEMORY[args.gpu] if args.gpu else None)
    where = f"{args.gpu} ({GPU_MEMORY[args.gpu] / GIB:.0f} GiB datasheet)" if args.gpu else device
    size = f"{shape.n_params / 1e9:.2f}B" if shape.n_params >= 1e9 else f"{shape.n_params / 1e6:.1f}M"
    print(f"plan: {shape.name} ({size} params, {shape.num_hidden_layers} layers, hidden "
          f"{shape.hidden_size}) on {where}; train batch {args.batch_size} x {args.max_seq_len} tokens, "
          f"{'with' if args.gradient_checkpointing else 'no'} gradient checkpointing, {args.optimizer}, LoRA r="
          f"{args.lora_r}; base = generation, batch {args.eval_batch_size} x {args.max_seq_len}"
          + (" (with --tasks: each method's estimated prompt length instead of --max-seq-len)" if with_tasks else ""))
    if budget is not None:
        print(f"budget: {budget / GIB:.1f} GiB" + (" (--memory-budget)" if args.memory_budget else ""))
    columns = [Column("method")] + [Column(c.replace("quant_constants", "quant").replace("_", " ")) for c in COLUMNS]
    columns += [Column(c) for c in ("total GiB", "fits", "largest batch", "peak in")]
    sizes = {spec.name: [x for x in (prompts.estimate(t, spec, cfg) for t in cfg.tasks) if x is not None]
             for spec in specs} if with_tasks else {}
    rows, lengths, notes = [], [], {}
    for spec in specs:
        seq_len = args.max_seq_len
        if sizes.get(spec.name) and len(sizes[spec.name]) == len(cfg.tasks):  # every task's rows were estimated
            longest = max(x.train_tokens if spec.trains else x.eval_tokens + x.new_tokens for x in sizes[spec.name])
            seq_len = max(2, min(args.max_seq_len, longest))
        lengths.append(seq_len)
        kw = {"seq_len": seq_len, "lora_r": args.lora_r, "device": device, "mixed_precision": precision,
              "lora_target_modules": args.lora_target_modules or spec.lora_target_modules,
              "gradient_checkpointing": args.gradient_checkpointing, "optimizer": args.optimizer,
              "grad_accum": args.grad_accum}
        batch = args.batch_size if spec.trains else args.eval_batch_size
        est = estimate(shape, spec, batch_size=batch, **kw)
        fits = "-" if budget is None else ("yes" if est.fits(budget) else "NO")
        best = "-" if budget is None else str(largest_batch(shape, spec, budget, **kw) or "none")
        rows.append((spec.name, *[_gib(est.breakdown.get(c)) for c in COLUMNS], _gib(est.total_bytes), fits, best,
                     est.phase))
        for n in est.notes:  # a note that holds for several methods (a family's) is said once, naming them
            notes.setdefault(n, []).append(spec.name)
    print(plain(Table(tuple(columns), tuple(rows))))
    print("memory: GiB at the estimated peak; rules and their sources in harness/plan/estimate.py, checked against "
          "measurement in docs/memory.md")
    for n, names in notes.items():
        print(f"  note ({', '.join(names)}): {n}")
    if with_tasks:
        print_prompts(cfg, sizes, shape, args.gpu, args.mfu)
    rates, unreadable = measured_rates(args.out, args.model, device, args.gpu)
    print("time:")
    skipped = unreadable_line(unreadable)
    if skipped:
        print("  " + skipped)
    for spec, seq_len in zip(specs, lengths):
        line = time_line(shape, spec, rates, args.gpu, args.mfu, args.batch_size * seq_len)
        print("  " + line + tuning_cost(cfg, spec))
    return 0


def print_prompts(cfg, sizes: dict, shape, gpu: str | None, mfu: float) -> None:
    """Each task x method's prompt tokens per query, against the same task's zero-shot prompt: what a prompting
    method pays at every query; with --gpu, the prefill FLOPs of 1,000 queries (2N per prompt token) in seconds."""
    print(f"prompts: tokens per query, estimated from the embedded rows at {prompts.CHARS_PER_TOKEN} characters per "
          "token; memory above, and training time below, are estimated at each method's longest")
    for task in cfg.tasks:
        for spec in cfg.specs:
            size = next((x for x in sizes.get(spec.name, []) if x.task == task), None)
            why = get_task(task).method_issue(spec, cfg)
            if why:
                print(f"  {task} x {spec.name}: left out ({why})")
                continue
            if size is None:
                print(f"  {task} x {spec.name}: the rows are your own (--data), read only when the run starts; "
                      f"estimated at --max-seq-len {cfg.max_seq_len}")
                continue
            ratio = size.eval_tokens / size.zero_shot if size.zero_shot else 1.0
            cap = f"; capped by --max-seq-len {cfg.max_seq_len} (shots dropped, text cut)" if size.capped else ""
            train = f", training rows ~{size.train_tokens}" if spec.trains else ""
            prefill = ""
            if gpu:
                seconds = 1000 * 2 * shape.n_params * size.eval_tokens / (mfu * PEAK_TFLOPS[gpu] * 1e12)
                prefill = f"; prefill of 1,000 queries ~{seconds:.1f} s on {gpu} (FLOPs: 2N per prompt token)"
            print(f"  {task} x {spec.name}: ~{size.eval_tokens} ({ratio:.1f}x zero-shot){train}{cap}{prefill}")


def tuning_cost(cfg, spec) -> str:
    """How many times a method trains under --tune and --seeds: each trial of its search, then the chosen one."""
    search = cfg.searches.get(spec.name)
    seeds = len(cfg.seed_list)
    if not search and seeds == 1:
        return ""
    n = trials(cfg, spec.name) if search else 0
    runs = (n + 1 if search else 1) * seeds
    what = [f"{n} trials over {search.describe()} on validation, then the chosen one on test"] if search else []
    if seeds > 1:
        what.append(f"each for {seeds} seeds" if search else f"once for each of {seeds} seeds")
    verb = "trains" if spec.trains else "runs"
    return f"; the run {verb} it {runs} times ({'; '.join(what)}): {runs}x this time"


def _gib(x):
    return Value(x / GIB, digits=2) if x else "-"
