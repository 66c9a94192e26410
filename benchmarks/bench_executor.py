"""Process-per-cell overhead: the same matrix under ``--executor inline`` and ``--executor process``.

    python benchmarks/bench_executor.py                        # SmolLM2, cnn x qlora,lora, small limits
    python benchmarks/bench_executor.py --model tiny-llama --rounds 1 --train-limit 8 --eval-limit 4

Each round runs both executors in a fresh run folder, alternating which goes first, so drift on a shared
machine hits both alike. A child process pays for its own imports and model load; the inline executor pays
them once. The script prints each run's wall time, the per-cell overhead in seconds, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_run(executor: str, args, out: Path) -> float:
    cmd = [sys.executable, str(ROOT / "run_matrix.py"), "--model", args.model, "--tasks", args.tasks,
           "--methods", args.methods, "--train-limit", str(args.train_limit), "--eval-limit", str(args.eval_limit),
           "--executor", executor, "--out", str(out), "--run-name", executor]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HARNESS_PROGRESS": "0"})
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{executor} run failed:\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tasks", default="cnn")
    p.add_argument("--methods", default="qlora,lora")
    p.add_argument("--train-limit", type=int, default=16)
    p.add_argument("--eval-limit", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    n_cells = len(args.tasks.split(",")) * len(args.methods.split(","))
    times: dict[str, list[float]] = {"inline": [], "process": []}
    print(f"model={args.model} tasks={args.tasks} methods={args.methods} cells={n_cells} "
          f"train_limit={args.train_limit} eval_limit={args.eval_limit} rounds={args.rounds}")
    for r in range(args.rounds):
        order = ("inline", "process") if r % 2 == 0 else ("process", "inline")
        for executor in order:
            with tempfile.TemporaryDirectory() as tmp:
                s = one_run(executor, args, Path(tmp))
            times[executor].append(s)
            print(f"round {r + 1}: {executor:8} {s:7.1f} s")
    inline, process = statistics.median(times["inline"]), statistics.median(times["process"])
    print(f"median wall: inline {inline:.1f} s, process {process:.1f} s")
    print(f"process / inline: {process / inline:.3f}x; overhead per cell: {(process - inline) / n_cells:+.1f} s")


if __name__ == "__main__":
    main()
