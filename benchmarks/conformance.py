"""The conformance matrix as a table: every family x trained method, each check with its measured deviation.

    python benchmarks/conformance.py > docs/conformance.md.new     # 9 families x 11 methods: 14 minutes on 2 CPU cores
    python benchmarks/conformance.py --families llama --methods lora,dora   # one family, two methods: a minute

Runs the checks of harness/conformance/checks.py (the test suite asserts them; this prints what they measured) on the
tiny random models of harness/conformance/families.py, and writes a markdown table: per family and method, the loss
deviation (worst step), the first-step gradient deviation (worst trainable tensor, over every trainable tensor), the
trained weights' deviation in learning-rate steps (elements with gradients above float32 noise; the noise-level
rest against Adam's bound), the base weights a start left (PiSSA, OLoRA, LoftQ), whether the changes to trl's path
that must apply did, and which the model left to trl, with the reason; then per family the fused-dropout gradient
deviation and batched against one-by-one generation; then, on the first family, the fused-dropout gradient
deviation of each method it applies to (harness/conformance/forward.py).

Time: 837 s for the whole matrix (99 rows, 4 of them not run, and the dropout and generation checks) on 2 CPU cores
(docs/conformance.md).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.cell.load import load_tokenizer  # noqa: E402
from harness.conformance import checks, compare, forward  # noqa: E402
from harness.conformance.families import FAMILIES, build  # noqa: E402
from harness.core.console import quiet_libraries  # noqa: E402
from harness.spec.models import smollm2_tokenizer_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", help="comma-separated (default: every family)")
    p.add_argument("--methods", default=",".join(checks.METHODS))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cuda: both paths in the device's mixed precision, held to the bfloat16 tolerances")
    args = p.parse_args(argv)
    unknown = [f for f in (args.families or "").split(",") if f and f not in FAMILIES] + [
        m for m in args.methods.split(",") if m not in checks.METHODS]
    if unknown:
        p.error(f"unknown family or method {', '.join(unknown)}; families: {', '.join(FAMILIES)}; methods: "
                f"{', '.join(checks.METHODS)}")
    quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="conformance-") as root:  # the tiny models, removed at the end
        return table(args, Path(root))


def table(args, root: Path) -> int:
    """Print the tables for ``args``' families and methods, with the models built under ``root``; 1 if any failed."""
    tok = load_tokenizer(str(smollm2_tokenizer_dir()))
    families = args.families.split(",") if args.families else list(FAMILIES)
    folders = {f: build(f, tok, root / f) for f in families}
    versions = ", ".join(f"{n} {importlib.metadata.version(n)}" for n in ("torch", "transformers", "peft", "trl",
                                                                          "bitsandbytes"))
    t0 = time.perf_counter()
    if args.device == "cpu":
        bar = (f"loss, gradients and base weights {compare.RTOL:g} of the tensor's largest value, trained weights "
               f"{compare.WEIGHTS_LR:g} learning-rate steps ({compare.NOISE_STEPS:g} a step where the gradient is "
               "float32 noise)")
    else:
        bar = (f"loss {compare.BF16['loss']:.3g}, gradients {compare.BF16['grads']:.3g} of the tensor's "
               f"largest value, trained weights {compare.BF16['weights']:g} learning-rate steps (bfloat16)")
    print(f"Measured on {args.device}, {versions}; tolerances: {bar}.\n")
    print("| family | method | loss | first-step gradients (tensors) | weights (lr steps) | noise-level weights "
          "(share) | base after the start | pass | changes applied (as required) | left to trl (why) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    failed = 0
    for family in families:
        for method in args.methods.split(","):
            why = checks.UNSUPPORTED.get((family, method))
            if why:
                print(f"| {family} | {method} | - | - | - | - | - | not run | - | {why} |", flush=True)
                continue
            try:
                got = checks.training(folders[family], method, tok, args.device)
            except compare.ConformanceError as e:  # a check that could not be made: the row fails, the rest run
                failed += 1
                print(f"| {family} | {method} | - | - | - | - | - | NO | - | {e} |", flush=True)
                continue
            required = compare.applied_as_expected(family, method, got["record"], args.device)
            ok = compare.passes(got, args.device) and required
            failed += not ok
            changes = got["record"]["trl_changes"]
            left = "; ".join(f"{k}: {v}" for k, v in changes["left_out"].items()) or "-"
            note = f" (LoRA dropout {got['record']['lora_dropout']})" if got["record"].get("lora_dropout") else ""
            print(f"| {family} | {method} | {got['loss']:.1e} | {got['grads']:.1e} ({got['compared']}) | "
                  f"{got['weights']:.3f} | {got['weights_noise']:.3f} ({got['noise_share']:.1e}) | "
                  f"{got['base']:.1e} | {'yes' if ok else 'NO'} | {', '.join(changes['applied'])} "
                  f"({'yes' if required else 'NO'}) | {left}{note} |", flush=True)
    print("\n| family | fused dropout: gradient deviation under the same masks | batched generation = one by one |")
    print("|---|---|---|")
    prompts = forward.eval_prompts(tok)
    for family in families:
        drop = "- (the adapter trains without dropout: peft's ParamWrapper)" if family == "mixtral" else \
            "- (CPU only)" if args.device != "cpu" else dropout(folders[family], tok, "lora")
        failed += drop.startswith("NO")
        same, n = forward.generation(folders[family], tok, prompts, device=args.device)
        failed += same != n
        print(f"| {family} | {drop} | {same} of {n} prompts |", flush=True)
    if args.device == "cpu" and families[0] != "mixtral":
        print(f"\n| method ({families[0]}) | fused dropout: gradient deviation under the same masks |\n|---|---|")
        for method in forward.DROPOUT_METHODS:
            if method.split(":")[0] in args.methods.split(","):
                drop = dropout(folders[families[0]], tok, method)
                failed += drop.startswith("NO")
                print(f"| {method} | {drop} |", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s; {'every check passed' if not failed else f'{failed} failed'}.")
    return 1 if failed else 0


def dropout(folder, tok, method: str) -> str:
    """The fused dropout's gradient deviation, or NO with the reason where it is over the bar or was not applied."""
    try:
        value = forward.dropout(folder, tok, method)
    except compare.ConformanceError as e:
        return f"NO: {e}"
    return f"{value:.1e}" if value <= compare.RTOL else f"NO: {value:.1e}"


if __name__ == "__main__":
    from harness.spec.task import load_tasks

    load_tasks()  # the task plugins, as every program of the harness loads them first
    sys.exit(main())
