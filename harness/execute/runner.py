"""Run the task x method matrix: plan, check, then hand each cell to an executor and read its record.

Everything that can be checked cheaply is checked before the first cell spends compute (harness/execute/preflight.py).
Each planned cell gets its folder and ``config.json`` here; how it runs (in this process, a child process, a Ray
task) is the executor's business (harness/execute/executors.py), and the outcome is read back from the record on
disk. A cell that fails is recorded with its error kind and message, and the matrix goes on. Completed cells are
skipped on a rerun with the same run name; interrupted or corrupted ones are reported and redone.
"""

from __future__ import annotations

from collections import Counter

from harness.core.console import console, quiet_libraries
from harness.core.files import atomic_write_json, read_json
from harness.execute.executors import make_executor
from harness.execute.preflight import check_integrations, check_prompting, check_resumable, check_writable
from harness.plan.budget import budget_skip, memory_budget, over_budget_before
from harness.plan.matrix import Cell, chosen_cells, left_out, number, plan, run_size
from harness.records.tuning import run_tunings
from harness.spec.config import RunConfig
from harness.spec.models import resolve_model
from harness.spec.overlap import describe
from harness.spec.precision import resolve_device
from harness.spec.task import get_task


def run_matrix(cfg: RunConfig, command: str | None = None) -> list[Cell]:
    cells = plan(cfg)
    executor = make_executor(cfg)  # an unknown or uninstalled executor fails here, before any work
    quiet_libraries()
    check_resumable(cells)
    device = resolve_device(cfg.device)
    datasets = {name: get_task(name).load(cfg) for name in cfg.tasks}
    check_prompting(cfg, datasets)
    warn_overlap(datasets)
    model = resolve_model(cfg.model)  # builds a catalogue model's cache once, before cells race to build it
    check_integrations(cfg, model)
    check_writable(cfg.run_dir)  # last: a run refused above leaves no folder behind
    write_manifest(cfg, cells, command)
    for (task, method), why in left_out(cfg).items():
        console.print(f"[yellow]left out: {task} x {method}: {why}[/]", soft_wrap=True)
    console.print(f"[bold]run[/] {cfg.run_dir}  model={cfg.model}  device={device}  cells={run_size(cfg)}  "
                  f"executor={cfg.executor}" + (f" x{cfg.parallel}" if cfg.parallel > 1 else ""))
    budget = memory_budget(cfg, device)
    run_cells(cells, executor, datasets, cfg, device, model.location, budget)
    if cfg.grids:  # each tuned method's rate, chosen on validation; then its test cells at that rate
        chosen = chosen_cells(cfg, choices(cfg))
        number(chosen, run_size(cfg), start=len(cells))
        write_manifest(cfg, cells + chosen, command)
        run_cells(chosen, executor, datasets, cfg, device, model.location, budget)
        cells += chosen
    for cell in cells:
        cell.outcome = read_outcome(cell)
    return cells


def run_cells(cells: list[Cell], executor, datasets: dict, cfg: RunConfig, device: str, model_location: str,
              budget) -> None:
    """Hand every cell that is not already complete to the executor; a completed cell is kept, a broken one redone."""
    todo = []
    for cell in cells:
        state, reason = cell.store.state()
        if state == "complete" and reason == "skipped" and over_budget_before(cell):
            cell.store.reset()  # the budget or --force may have changed: decide again
            state = "missing"
        if state == "complete" and cell.store.read_json("config.json").get("config_hash") != cell.spec.config_hash:
            # Only a tuned method's test cell gets here (check_resumable refused the rest): its grid chose again.
            console.print(f"[yellow]cell {cell.index}/{cell.of} {cell.label}: tuning chose another rate, redoing[/]")
            cell.store.reset()
            state = "missing"
        if state == "complete" and reason in ("ok", "skipped"):
            console.print(f"[dim]cell {cell.index}/{cell.of} {cell.label}: already complete, skipped[/]")
            continue
        if state != "missing":
            console.print(f"[yellow]cell {cell.index}/{cell.of} {cell.label}: {state} ({reason}), redoing[/]")
            cell.store.reset()
        cell.store.dir.mkdir(parents=True, exist_ok=True)
        cell.spec.write(cell.store.dir)
        reason = budget_skip(cell, cfg, device, model_location, budget)
        if reason:
            console.print(f"[yellow]cell {cell.index}/{cell.of} {cell.label}: skipped: {reason}[/]")
            cell.store.finish("skipped", error_kind="over_budget", message=reason)
            continue
        todo.append(cell)
    if todo:
        executor.run(todo, datasets)


def choices(cfg: RunConfig) -> dict:
    """{(task, method): chosen rate} from the tuning cells' records, each choice printed with its grid."""
    out = {}
    for t in run_tunings(cfg.run_dir, len(cfg.seed_list)):
        curve = ", ".join(f"{p.value:g}: {'-' if p.measure is None else format(p.measure, '.4f')}" for p in t.points)
        if t.chosen is None:
            console.print(f"[red]tuning {t.task} x {t.method}: no grid point finished ({curve}); its test cell does "
                          "not run[/]", soft_wrap=True)
            continue
        console.print(f"[bold]tuning[/] {t.task} x {t.method}: {t.by} on validation ({t.validation_rows} rows) "
                      f"by {t.key}: {curve}; chosen {t.key}={t.chosen:g}", soft_wrap=True)
        if t.edge:
            console.print(f"[yellow]warning: {t.edge_note()}[/]", soft_wrap=True)
        out[t.task, t.method] = t.chosen
    return out


def warn_overlap(datasets: dict) -> None:
    """One warning line per task whose test rows overlap its training rows (harness/spec/overlap.py)."""
    for name, data in datasets.items():
        text = describe(name, data["fingerprint"]["overlap"]) if "overlap" in data["fingerprint"] else None
        if text:
            console.print(f"[yellow]warning: {text}[/]", soft_wrap=True)


def read_outcome(cell: Cell) -> dict:
    """A cell's status from its record on disk; an executor that left none is itself a failure."""
    state, reason = cell.store.state()
    if state == "complete":
        return cell.store.read_json("status.json")
    return {"status": "failed", "error_kind": "lost", "message": f"the executor left no complete record ({reason})"}


def write_manifest(cfg: RunConfig, cells: list[Cell], command: str | None = None) -> None:
    """run.json: the latest invocation (command and config) and every cell the run has ever planned."""
    path = cfg.run_dir / "run.json"
    known = read_json(path).get("cells", []) if path.is_file() else []
    folders = {c["folder"] for c in known}
    for c in cells:
        folder = str(c.store.dir.relative_to(cfg.run_dir))
        if folder not in folders:
            known.append({"task": c.task, "method": c.spec.method.name, "folder": folder})
            folders.add(folder)
    skipped = [{"task": t, "method": m, "why": why} for (t, m), why in left_out(cfg).items()]
    atomic_write_json(path, {"command": command, "config": cfg.to_dict(), "cells": known,
                             **({"left_out": skipped} if skipped else {})})


def summary_line(cells: list[Cell]) -> tuple[int, str]:
    """(exit status, last line): non-zero when any cell failed or was skipped, with how many and why.

    A skipped cell (e.g. a CUDA-only method on a CPU machine) is not an error, but the matrix is incomplete,
    so a script that checks the status learns that some results are missing.
    """
    failed = [c for c in cells if c.outcome.get("status") == "failed"]
    skipped = [c for c in cells if c.outcome.get("status") == "skipped"]
    ok = len(cells) - len(failed) - len(skipped)
    text = f"{ok} of {len(cells)} cells ok"
    if skipped:
        reasons = "; ".join(f"{c.label}: {c.outcome.get('message')}" for c in skipped)
        text += f", {len(skipped)} skipped ({reasons})"
    if failed:
        kinds = Counter(c.outcome.get("error_kind", "error") for c in failed)
        why = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        text += f", {len(failed)} failed ({why}: " + "; ".join(
            f"{c.label}: {c.outcome.get('message')}" for c in failed) + ")"
    return (1 if failed or skipped else 0), text
