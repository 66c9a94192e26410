"""Where the wall time of a whole matrix run goes: import, model load, data, train, generate, score, report.

    python benchmarks/bench_e2e.py                        # the README's default: --tasks cnn --methods qlora,lora
    python benchmarks/bench_e2e.py -- --tasks cnn --methods lora --model tiny-llama --train-limit 4 --eval-limit 2
    python benchmarks/bench_e2e.py --against 81d3460 --rounds 2   # today's code against a commit, interleaved

Runs ``python run_matrix.py ARGS --out TMP`` as a user would (after install, with the model already in the
cache) and times the whole command. The cells' records give model load, train and generation time; the rest
is measured here on the same machine, right after the run:

- import: a fresh interpreter importing what a cell process imports, times the number of processes (the runner,
  plus one per cell under the process executor);
- data: each task's ``load`` (the runner validates the data up front, then every cell loads it again) and the
  rendering and tokenizing of its training pairs; plus the tokenizer load every cell does;
- score: each cell's metrics and bootstrap CIs, recomputed from its stored predictions;
- report: reading the records and writing report.md, summary.csv and report.html.

What is left (``other``) is process start-up, planning, checks, records and waiting.

``--against REF`` also runs the same command from a git worktree of REF (made in a temporary folder, with this
interpreter and its packages, the worktree first on the import path), alternating today's code and REF's for
``--rounds`` rounds, and prints each run's wall time and main metric and the ratio today / REF per round, with
each cell's train and generation seconds side by side. A ratio is printed only where both runs finished the same
cells: a run that failed a cell did less work. ``--against-patch FILE`` applies a patch to REF's worktree first (a
fix REF needs to run on this machine, e.g. benchmarks/ref-fixes/); the output names it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_ARGS = ["--tasks", "cnn", "--methods", "qlora,lora"]
# What a cell process imports before its first record (harness/cell/job.py, harness/cell/training.py, trl, peft)
CELL_IMPORTS = ("import torch, transformers, datasets, peft, trl; import harness.cell.job, harness.cell.training, "
                "harness.cell.generate, harness.spec.metrics, harness.spec.task, tasks")


def import_seconds(repeats: int = 3) -> float:
    """Median wall time of a fresh interpreter that imports what a cell imports (interpreter start included)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", CELL_IMPORTS], cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_command(args: list[str], out: Path, root: Path = ROOT) -> tuple[float, int, Path]:
    cmd = [sys.executable, str(root / "run_matrix.py"), *args, "--out", str(out)]
    print("$ " + " ".join(cmd[1:]), flush=True)
    # The checkout's own packages first on the path, so that a worktree's code runs, not the installed one's.
    env = {**os.environ, "HARNESS_PROGRESS": "0", "PYTHONPATH": str(root)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    runs = [p for p in out.iterdir() if p.is_dir()]
    if len(runs) != 1:
        sys.exit(f"the command left no run folder (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return wall, done.returncode, runs[0]


def cell_records(run_dir: Path) -> list[dict]:
    manifest = json.loads((run_dir / "run.json").read_text())
    out = []
    for cell in manifest["cells"]:
        folder = run_dir / cell["folder"]
        metrics = folder / "metrics.json"
        if metrics.is_file():
            train = json.loads((folder / "train.json").read_text()) if (folder / "train.json").is_file() else {}
            out.append({**cell, "dir": folder, "metrics": json.loads(metrics.read_text()), "train": train})
    return out


def measure_rest(run_dir: Path, cells: list[dict]) -> dict:
    """Data, tokenizer, score and report seconds, measured in this process on the finished run."""
    from harness.cell.load import load_tokenizer
    from harness.core.console import console, quiet_libraries
    from harness.records.load import load_records
    from harness.report.document import write_reports
    from harness.spec.config import RunConfig
    from harness.spec.metrics import summarise
    from harness.spec.models import resolve_model
    from harness.spec.task import Context, get_task

    quiet_libraries()
    cfg = RunConfig.from_dict(json.loads((run_dir / "run.json").read_text())["config"])
    t0 = time.perf_counter()
    tok = load_tokenizer(resolve_model(cfg.model).location)
    tokenizer_s = time.perf_counter() - t0
    data_s, pairs_s = {}, {}
    for name in cfg.tasks:
        task = get_task(name)
        t0 = time.perf_counter()
        data = task.load(cfg)
        data_s[name] = time.perf_counter() - t0
        ctx = Context(tok=tok, max_seq_len=cfg.max_seq_len, max_new_tokens=cfg.max_new_tokens or task.max_new_tokens,
                      template=cfg.template, batch_size=cfg.eval_batch_size, cfg=cfg)
        t0 = time.perf_counter()
        [task.train_pair(r, ctx) for r in data["train"]]
        pairs_s[name] = time.perf_counter() - t0
    score_s = 0.0
    for cell in cells:
        task = get_task(cell["task"])
        predictions = [json.loads(line) for line in (cell["dir"] / "predictions.jsonl").read_text().splitlines()]
        t0 = time.perf_counter()
        summarise(task.score(predictions), cfg.bootstrap, cfg.seed)
        score_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    with open(os.devnull, "w") as null:
        quiet = console.file
        console.file = null
        try:
            write_reports(run_dir, load_records(run_dir), console=console)  # printed and written, as in a run
        finally:
            console.file = quiet
    report_s = time.perf_counter() - t0
    return {"tokenizer_s": tokenizer_s, "data_s": data_s, "pairs_s": pairs_s, "score_s": score_s,
            "report_s": report_s, "executor": cfg.executor}


def breakdown(wall: float, cells: list[dict], rest: dict, import_s: float) -> list[tuple[str, float]]:
    timing = [c["metrics"]["measurements"]["timing"] for c in cells]
    trained = {c["task"] for c in cells if c["metrics"]["measurements"]["timing"].get("train_s")}
    processes = 1 + (len(cells) if rest["executor"] != "inline" else 0)
    per_cell_data = rest["executor"] != "inline"  # the inline executor hands the runner's data to its cells
    data = sum(rest["data_s"].values()) * (1 + (len(cells) if per_cell_data else 0))
    data += sum(rest["pairs_s"][t] for t in rest["pairs_s"] if t in trained) * len(cells)
    data += rest["tokenizer_s"] * len(cells)
    generate = sum(t.get("generation_s", 0.0) for t in timing)
    phases = [
        ("import", import_s * processes),
        ("model load", sum(t.get("load_s", 0.0) for t in timing)),
        ("data (load, prompts, tokenizer)", data),
        ("train", sum(t.get("train_s", 0.0) for t in timing)),
        ("trainer setup (adapters, tokenizing)", sum(c["train"].get("setup_s", 0.0) for c in cells)),
        ("generate", generate),
        ("evaluation outside generate", sum(t.get("eval_s", 0.0) for t in timing) - generate),
        ("score (metrics, bootstrap)", rest["score_s"]),
        ("report", rest["report_s"]),
    ]
    return phases + [("other (start-up, planning, records, waiting)", wall - sum(s for _, s in phases))]


def main_metrics(run_dir: Path) -> dict:
    """{task x method: main metric value} of a finished run, from its cells' metrics.json."""
    return {f"{c['task']} x {c['method']}": c["metrics"]["quality"][c["metrics"]["main_metric"]]["value"]
            for c in cell_records(run_dir)}


def cell_timings(run_dir: Path) -> dict:
    """{task x method: {train_s, generation_s, load_s}} of a run's finished cells."""
    keys = ("load_s", "train_s", "generation_s")
    return {f"{c['task']} x {c['method']}": {k: c["metrics"].get("measurements", {}).get("timing", {}).get(k)
                                             for k in keys} for c in cell_records(run_dir)}


def comparable_ratios(runs: list[dict]) -> list[float]:
    """Today / REF wall time per round, over the rounds where both runs did the same work: both finished, with
    the same cells. ``runs`` alternates today's run and REF's."""
    return [t["wall_s"] / o["wall_s"] for t, o in zip(runs[::2], runs[1::2])
            if t["exit_status"] == 0 and o["exit_status"] == 0 and set(t["metrics"]) == set(o["metrics"])]


def against(ref: str, run_args: list[str], rounds: int, patch: str | None = None) -> dict:
    """Today's code and a worktree of ``ref``, the same command, alternating; wall times, metrics, ratios."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-e2e-against-"))
    tree = scratch / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=ROOT, check=True, capture_output=True)
    if patch:
        subprocess.run(["git", "apply", str(Path(patch).resolve())], cwd=tree, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True).stdout.strip()
    runs = []
    try:
        for r in range(rounds):
            for variant, root in (("today", ROOT), (ref, tree)):
                out = scratch / f"{variant}-{r}"
                out.mkdir()
                wall, code, run_dir = run_command(run_args, out, root)
                runs.append({"round": r + 1, "variant": variant, "wall_s": wall, "exit_status": code,
                             "metrics": main_metrics(run_dir), "cells": cell_timings(run_dir),
                             "run_dir": str(run_dir)})
                print(f"  round {r + 1} {variant:10s} {wall:7.1f} s  exit {code}  " + ", ".join(
                    f"{k} {v:.3f}" for k, v in runs[-1]["metrics"].items()), flush=True)
    finally:  # the run folders stay (the breakdown reads today's first); the caller removes ``scratch``
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    ratios = comparable_ratios(runs)
    return {"ref": ref, "commit": commit, "patch": patch, "runs": runs, "ratios": ratios,
            "mean_ratio": sum(ratios) / len(ratios) if ratios else None, "scratch": str(scratch)}


def print_against(result: dict) -> None:
    print("\n| round | code | wall s | main metric per cell |")
    print("|---|---|---|---|")
    for r in result["runs"]:
        print(f"| {r['round']} | {r['variant']} | {r['wall_s']:.1f} | "
              + ", ".join(f"{k} {v:.3f}" for k, v in r["metrics"].items()) + " |")
    print("\n| round | code | cell | load s | train s | generate s |")
    print("|---|---|---|---|---|---|")
    for r in result["runs"]:
        for cell, t in r["cells"].items():
            print(f"| {r['round']} | {r['variant']} | {cell} | "
                  + " | ".join("-" if t[k] is None else f"{t[k]:.1f}" for k in ("load_s", "train_s", "generation_s"))
                  + " |")
    ref = f"{result['ref']} ({result['commit'][:10]}" + (f", with {result['patch']})" if result["patch"] else ")")
    if not result["ratios"]:
        print(f"\ntoday / {ref}: no round where both runs finished the same cells, so no wall-time ratio")
        return
    print(f"\ntoday / {ref}: wall time " + ", ".join(f"{x:.2f}x" for x in result["ratios"])
          + f" over {len(result['ratios'])} of {len(result['runs']) // 2} rounds, mean {result['mean_ratio']:.2f}x")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", action="store_true", help="keep the run folder (printed at the end)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--import-repeats", type=int, default=3,
                   help="fresh interpreters timed for the import share; the median is used (default 3)")
    p.add_argument("--against", metavar="REF", help="also run the command from a worktree of this git commit")
    p.add_argument("--rounds", type=int, default=1, help="with --against: today/REF pairs, interleaved")
    p.add_argument("--against-patch", metavar="FILE",
                   help="with --against: apply this patch to REF's worktree first (a fix REF needs on this machine)")
    args = p.parse_args(own)
    run_args = run_args or DEFAULT_ARGS
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    if args.against_patch and not args.against:
        p.error("--against-patch needs --against REF")
    compared = against(args.against, run_args, args.rounds, args.against_patch) if args.against else None
    if compared:  # the breakdown of today's first round
        first = compared["runs"][0]
        out = Path(compared["scratch"])
        wall, code, run_dir = first["wall_s"], first["exit_status"], Path(first["run_dir"])
    else:
        out = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
        wall, code, run_dir = run_command(run_args, out)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    cells = cell_records(run_dir)
    import_s = import_seconds(args.import_repeats)
    rest = measure_rest(run_dir, cells)
    phases = breakdown(wall, cells, rest, import_s)
    print(f"\nwall time {wall:.1f} s ({wall / 60:.2f} min), exit status {code}, {len(cells)} cells, executor "
          f"{rest['executor']}; one cell's imports take {import_s:.1f} s")
    print("\n| phase | seconds | share |")
    print("|---|---|---|")
    for name, seconds in sorted(phases, key=lambda x: -x[1]):
        print(f"| {name} | {seconds:.1f} | {100 * seconds / wall:.0f}% |")
    print("\n| cell | load s | train s | train tok/s | generate s | gen tok/s |")
    print("|---|---|---|---|---|---|")
    for c in cells:
        t = c["metrics"]["measurements"]["timing"]
        print(f"| {c['task']} x {c['method']} | {t.get('load_s', 0):.1f} | {t.get('train_s', 0):.1f} | "
              f"{t.get('train_tokens_per_s') or 0:.1f} | {t.get('generation_s', 0):.1f} | "
              f"{t.get('generation_tokens_per_s') or 0:.1f} |")
    print(f"load average before {' '.join(load_before)}, after {' '.join(load_after)}")
    if compared:
        print_against(compared)
    if args.keep:
        print(f"run folder: {run_dir}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": run_args, "wall_s": wall, "exit_status": code, "import_s_per_process": import_s,
            "phases": dict(phases), "cells": [{"task": c["task"], "method": c["method"],
                                               "timing": c["metrics"]["measurements"]["timing"]} for c in cells],
            "load_before": load_before, "load_after": load_after, "against": compared}, indent=2))
    if not args.keep:
        import shutil

        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    from harness.spec.task import load_tasks

    load_tasks()  # the task plugins, as every program of the harness loads them first
    main()
