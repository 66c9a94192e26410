"""Generation speed: the harness's evaluation generation against the loop users write, side by side.

    python benchmarks/bench_generate.py                   # SmolLM2: merged LoRA, then QLoRA (NF4) + adapter
    python benchmarks/bench_generate.py --model tiny-llama --prompts 4 --max-new-tokens 8   # a smoke run

``harness`` is ``harness.cell.generate.generate`` as a cell's evaluation calls it (batches of --batch prompts,
greedy, KV cache). ``naive`` is one ``model.generate`` per prompt, greedy, with the same prompts, tokens and
stopping. ``continuous`` is transformers' own continuous batching, ``model.generate_batch`` (a paged KV cache that
admits a new prompt as soon as another finishes), greedy, with the same prompts and stopping; its time includes
setting up its manager, as a user's call does. All count generated tokens up to and including the first
end-of-sequence token, and the script checks that each produces the harness's text for every prompt.

The adapter is LoRA on the harness's target modules with random, non-zero A and B (B ~ N(0, --b-std)), so it
changes the model without wrecking it: merged into the float32 weights for ``lora-merged``, and kept as a
separate adapter over the NF4 weights for ``qlora4``, as the harness evaluates them. The variants alternate
(harness, naive, harness, naive) on the same loaded model; timings are never compared across runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODELS = ("lora-merged", "qlora4")


def cnn_prompts(tok, n: int, max_seq_len: int, max_new_tokens: int) -> list[str]:
    """The cnn task's own evaluation prompts from its embedded validation rows."""
    from harness.spec.config import RunConfig
    from harness.spec.task import Context, get_task

    task = get_task("cnn")
    ctx = Context(tok=tok, max_seq_len=max_seq_len, max_new_tokens=max_new_tokens, cfg=RunConfig())
    return [task.eval_prompt(r, ctx) for r in task.embedded("eval")[:n]]


def with_adapter(location: str, method: str, b_std: float, seed: int):
    """The model as the harness evaluates it after training ``method``, with a random non-zero adapter."""
    import torch
    from peft import LoraConfig, get_peft_model

    from harness.cell.load import load_model
    from harness.spec.config import RunConfig
    from harness.spec.methods import resolve_method

    spec, cfg = resolve_method(method), RunConfig()
    model = load_model(location, spec, "cpu")
    torch.manual_seed(seed)
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=spec.lora_target_modules, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, b_std)
    if not spec.quantized:
        model = model.merge_and_unload()
    return model.eval()


def naive(model, tok, prompts: list[str], max_new_tokens: int) -> tuple[list[str], int, float]:
    """One ``model.generate`` per prompt: (outputs, generated tokens, seconds)."""
    import torch

    from harness.cell.generate import eos_ids

    eos = eos_ids(tok, model)
    outputs, tokens, seconds = [], 0, 0.0
    with torch.inference_mode():
        for prompt in prompts:
            enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
            t0 = time.perf_counter()
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=eos)
            seconds += time.perf_counter() - t0
            new = out[0, enc["input_ids"].shape[1]:].tolist()
            cut = next((k + 1 for k, t in enumerate(new) if t in eos), len(new))
            tokens += cut
            outputs.append(tok.decode(new[:cut], skip_special_tokens=True).strip())
    return outputs, tokens, seconds


def continuous(model, tok, prompts: list[str], max_new_tokens: int) -> tuple[list[str], int, float]:
    """transformers' continuous batching: ``model.generate_batch`` over every prompt at once."""
    from transformers import GenerationConfig

    from harness.cell.generate import eos_ids

    eos = eos_ids(tok, model)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                              pad_token_id=tok.pad_token_id)
    t0 = time.perf_counter()
    results = model.generate_batch(ids, generation_config=config)
    seconds = time.perf_counter() - t0
    outputs, tokens = [], 0
    for key in sorted(results, key=lambda k: int(k.rsplit("_", 1)[1])):  # request ids req_0, req_1, ... in order
        new = results[key].generated_tokens
        cut = next((k + 1 for k, t in enumerate(new) if t in eos), len(new))
        tokens += cut
        outputs.append(tok.decode(new[:cut], skip_special_tokens=True).strip())
    return outputs, tokens, seconds


def harness_generate(model, tok, prompts: list[str], max_new_tokens: int, batch: int) -> tuple[list[str], int, float]:
    from harness.cell.generate import generate
    from harness.spec.task import GenerationStats

    stats = GenerationStats()
    outputs = generate(model, tok, prompts, max_new_tokens, batch, stats, label="generate")
    return outputs, stats.new_tokens, stats.seconds


def measure(args, which: str, location: str, tok, prompts: list[str]) -> dict:
    model = with_adapter(location, "lora" if which == "lora-merged" else "qlora4", args.b_std, args.seed)
    runs, outputs = [], {}
    variants = ("harness", *args.against)
    for r in range(args.rounds):
        for variant in variants:
            if variant == "harness":
                out, tokens, seconds = harness_generate(model, tok, prompts, args.max_new_tokens, args.batch)
            elif variant == "naive":
                out, tokens, seconds = naive(model, tok, prompts, args.max_new_tokens)
            else:
                out, tokens, seconds = continuous(model, tok, prompts, args.max_new_tokens)
            outputs.setdefault(variant, out)
            runs.append({"round": r + 1, "variant": variant, "tokens": tokens, "seconds": seconds,
                         "tokens_per_s": tokens / seconds})
            print(f"  {which:11s} round {r + 1} {variant:10s} {tokens / seconds:7.1f} tok/s ({tokens} tokens, "
                  f"{seconds:.1f} s)", flush=True)
    out = {"model": which, "runs": runs, "prompts": len(prompts), "against": {}}
    for other in args.against:  # harness / other per round, then the mean; and whether the texts agree
        mine = [x for x in runs if x["variant"] == "harness"]
        theirs = [x for x in runs if x["variant"] == other]
        speed = [h["tokens_per_s"] / o["tokens_per_s"] for h, o in zip(mine, theirs)]
        differ = [i for i, (a, b) in enumerate(zip(outputs["harness"], outputs[other])) if a != b]
        out["against"][other] = {"speed_ratio": sum(speed) / len(speed), "identical": len(prompts) - len(differ),
                                 "differing_prompts": differ, "examples": [
                                     {"harness": outputs["harness"][i], other: outputs[other][i]} for i in differ[:3]]}
    return out


def mean_rate(result: dict, variant: str) -> float:
    rates = [r["tokens_per_s"] for r in result["runs"] if r["variant"] == variant]
    return sum(rates) / len(rates)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="catalogue name or local folder")
    p.add_argument("--models", default=",".join(MODELS), help="which of lora-merged,qlora4 to measure")
    p.add_argument("--prompts", type=int, default=32, help="cnn evaluation prompts (the task's default: 32)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="the cnn task's default: 64")
    p.add_argument("--batch", type=int, default=16, help="the harness's --eval-batch-size (default 16)")
    p.add_argument("--rounds", type=int, default=1, help="rounds of every variant, interleaved")
    p.add_argument("--against", default="naive,continuous",
                   help="what the harness is compared with: naive (one generate per prompt), continuous "
                        "(transformers' generate_batch), comma-separated")
    p.add_argument("--b-std", type=float, default=0.01, help="standard deviation of the random LoRA B")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    args.against = tuple(a.strip() for a in args.against.split(",") if a.strip())
    if not args.against or set(args.against) - {"naive", "continuous"}:
        p.error("--against takes naive, continuous or both")

    from harness.cell.load import load_tokenizer
    from harness.core.console import quiet_libraries
    from harness.spec.models import resolve_model

    quiet_libraries()
    location = resolve_model(args.model).location
    tok = load_tokenizer(location)
    prompts = cnn_prompts(tok, args.prompts, 512, args.max_new_tokens)
    print(f"model {args.model}, {len(prompts)} cnn prompts, {args.max_new_tokens} new tokens at most, greedy, "
          f"harness batch {args.batch}, CPU", flush=True)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    results = [measure(args, which, location, tok, prompts) for which in args.models.split(",")]
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    print("\n| model | against | harness tok/s | their tok/s | harness / theirs | identical outputs |")
    print("|---|---|---|---|---|---|")
    for res in results:
        h = mean_rate(res, "harness")
        for other, cmp in res["against"].items():
            print(f"| {res['model']} | {other} | {h:.1f} | {mean_rate(res, other):.1f} | {cmp['speed_ratio']:.2f}x | "
                  f"{cmp['identical']} of {res['prompts']} |")
    for res in results:
        for other, cmp in res["against"].items():
            for ex in cmp["examples"]:
                print(f"differs ({res['model']}): harness {ex['harness'][:80]!r} / {other} {ex[other][:80]!r}")
    print(f"load average before {' '.join(load_before)}, after {' '.join(load_after)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": vars(args), "results": results,
                                               "load_before": load_before, "load_after": load_after}, indent=2))


if __name__ == "__main__":
    from harness.spec.task import load_tasks

    load_tasks()  # the task plugins, as every program of the harness loads them first
    main()
