"""Run the task x method matrix: plan, check, then hand each cell to an executor and read its record.

Everything that can be checked cheaply is checked before the first cell spends compute (harness/execute/preflight.py).
Each planned cell gets its folder and ``config.json`` here; how it runs (in this process, a child process, a Ray
task) is the executor's business (harness/execute/executors.py), and the outcome is read back from the record on
disk. A cell that fails is recorded with its error kind and message, and the matrix goes on. Completed cells are
skipped on a rerun with the same run name; interrupted or corrupted ones are reported and redone.
"""

from __future__ import annotations

import os
from collections import Counter

from harness.core.console import console, quiet_libraries
from harness.core.files import atomic_write_json, read_json
from harness.execute.executors import make_executor
from harness.execute.preflight import check_integrations, check_prompting, check_resumable, check_writable
from harness.execute.search import run_searches
from harness.execute.study import check_optuna, check_studies
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
    if cfg.searches:
        check_optuna()
        check_studies(cfg)  # a study this command did not make is refused before any cell runs
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
    if cfg.searches:  # each tuned method's trials on validation; then its test cells with the chosen settings
        trials: list[Cell] = []

        def run_trials(batch: list[Cell]) -> None:
            number(batch, max(run_size(cfg), len(cells) + len(trials) + len(batch)), start=len(cells) + len(trials))
            trials.extend(batch)
            write_manifest(cfg, cells + trials, command)
            run_cells(batch, executor, datasets, cfg, device, model.location, budget)

        run_searches(cfg, run_trials)
        chosen = chosen_cells(cfg, choices(cfg))
        number(chosen, len(cells) + len(trials) + len(chosen), start=len(cells) + len(trials))
        write_manifest(cfg, cells + trials + chosen, command)
        run_cells(chosen, executor, datasets, cfg, device, model.location, budget)
        cells += trials + chosen
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
    """{(task, method): {"number", "params"}} of each search's chosen trial, from the tuning cells' records, each
    choice printed with its trials."""
    out = {}
    for t in run_tunings(cfg.run_dir, len(cfg.seed_list)):
        states = Counter(x.state for x in t.trials)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        chosen = t.chosen_trial
        if chosen is None:
            console.print(f"[red]search {t.task} x {t.method}: no trial completed ({counts}); its test cell does not "
                          "run[/]", soft_wrap=True)
            continue
        settings = ", ".join(f"{k}={chosen.params[k]:g}" for k in t.keys if k in chosen.params)
        console.print(f"[bold]search[/] {t.task} x {t.method}: {len(t.trials)} trials on validation "
                      f"({t.validation_rows} rows; {counts}), by {t.by}: chosen trial {chosen.number} ({settings}; "
                      f"{t.by} {chosen.measure:.4f})", soft_wrap=True)
        out[t.task, t.method] = {"number": chosen.number, "params": dict(chosen.params)}
    return out


def warn_overlap(datasets: dict) -> None:
    """One warning line per task whose test or validation rows overlap its training rows (harness/spec/overlap.py),
    and one where carving validation rows left fewer training rows than asked."""
    for name, data in datasets.items():
        fp = data["fingerprint"]
        for key, split in (("overlap", "test"), ("validation_overlap", "validation")):
            text = describe(name, fp[key], split) if key in fp else None
            if text:
                console.print(f"[yellow]warning: {text}[/]", soft_wrap=True)
        if fp.get("train", {}).get("asked"):
            console.print(f"[yellow]warning: {name}: holding out {fp['validation']['rows']} validation rows left "
                          f"{fp['train']['rows']} training rows of the {fp['train']['asked']} asked (--train-limit); "
                          f"give validation rows of their own with --data {name}.validation=FILE, or lower "
                          "--validation-limit[/]", soft_wrap=True)


def read_outcome(cell: Cell) -> dict:
    """A cell's status from its record on disk; an executor that left none is itself a failure."""
    state, reason = cell.store.state()
    if state == "complete":
        return cell.store.read_json("status.json")
    return {"status": "failed", "error_kind": "lost", "message": f"the executor left no complete record ({reason})"}


def write_manifest(cfg: RunConfig, cells: list[Cell], command: str | None = None) -> None:
    """run.json: the latest invocation (command, config, and the process id of the driver that ran it, which a cell's
    env.json holds as its own pid only when it ran inline) and every cell the run has ever planned."""
    path = cfg.run_dir / "run.json"
    known = read_json(path).get("cells", []) if path.is_file() else []
    folders = {c["folder"] for c in known}
    for c in cells:
        folder = str(c.store.dir.relative_to(cfg.run_dir))
        if folder not in folders:
            known.append({"task": c.task, "method": c.spec.method.name, "folder": folder})
            folders.add(folder)
    skipped = [{"task": t, "method": m, "why": why} for (t, m), why in left_out(cfg).items()]
    atomic_write_json(path, {"command": command, "driver_pid": os.getpid(), "config": cfg.to_dict(), "cells": known,
                             **({"left_out": skipped} if skipped else {})})


def summary_line(cells: list[Cell]) -> tuple[int, str]:
    """(exit status, last line): non-zero when any cell failed or was skipped, with how many and why.

    A skipped cell (e.g. a CUDA-only method on a CPU machine) is not an error, but the matrix is incomplete,
    so a script that checks the status learns that some results are missing.
    """
    failed = [c for c in cells if c.outcome.get("status") == "failed"]
    skipped = [c for c in cells if c.outcome.get("status") == "skipped"]
    pruned = [c for c in cells if c.outcome.get("status") == "pruned"]
    ok = len(cells) - len(failed) - len(skipped) - len(pruned)
    text = f"{ok} of {len(cells)} cells ok"
    if pruned:
        text += f", {len(pruned)} pruned (search trials stopped early, worse than the earlier ones)"
    if skipped:
        reasons = "; ".join(f"{c.label}: {c.outcome.get('message')}" for c in skipped)
        text += f", {len(skipped)} skipped ({reasons})"
    if failed:
        kinds = Counter(c.outcome.get("error_kind", "error") for c in failed)
        why = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        text += f", {len(failed)} failed ({why}: " + "; ".join(
            f"{c.label}: {c.outcome.get('message')}" for c in failed) + ")"
    return (1 if failed or skipped else 0), text
