"""Run the task x method matrix: plan, validate, then hand each cell to an executor and read its record.

Everything that can be checked cheaply is checked before the first cell spends compute: names, sizes,
combinations, the output folder, every task's data, and the model. Each planned cell gets its folder and
``config.json`` here; how it runs (in this process, a child process, a Ray task) is the executor's business
(harness/execute/executors.py), and the outcome is read back from the record on disk. A cell that fails is recorded
with its error kind and message, and the matrix goes on. Completed cells are skipped on a rerun with the
same run name; interrupted or corrupted ones are reported and redone.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness.spec.config import RunConfig
from harness.core.console import console
from harness.core.errors import ConfigError
from harness.core.files import atomic_write_json, read_json, sha256_json
from harness.spec.methods import MethodSpec, folder_name, resolve_method
from harness.records.store import CellStore
from harness.spec.task import Task, get_task


@dataclass
class Cell:
    task: Task
    spec: MethodSpec
    store: CellStore
    config: dict
    hash: str
    seed: int = 0
    index: int = 0  # 1-based position in the plan, for progress lines
    of: int = 0
    outcome: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.task.name} x {self.spec.name}" + (f" seed {self.seed}" if self.of_seeds > 1 else "")

    @property
    def of_seeds(self) -> int:
        return len(self.config["run"].get("seeds") or [0])


def cell_config(cfg: RunConfig, task: Task, spec: MethodSpec) -> dict:
    """The resolved settings that determine a cell's results (hashed), plus the whole run config."""
    hp = {
        "lr": (cfg.lr if cfg.lr is not None else spec.lr) if spec.trains else None,
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
        "train_limit": cfg.train_limit or task.train_limit, "eval_limit": cfg.eval_limit or task.eval_limit,
        "max_seq_len": cfg.max_seq_len, "max_new_tokens": cfg.max_new_tokens or task.max_new_tokens,
        "eval_batch_size": cfg.eval_batch_size, "gradient_checkpointing": cfg.gradient_checkpointing,
        "seed": cfg.seed, "bootstrap": cfg.bootstrap, "template": cfg.template,
    }
    if spec.finetune == "lora":
        hp.update(lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout)
    if spec.trains and cfg.num_processes > 1:
        # Data-parallel training changes the global batch and the data order, so it changes results.
        hp.update(num_processes=cfg.num_processes, fsdp=cfg.fsdp, deepspeed=cfg.deepspeed)
    hp.update(task.options(cfg))
    if cfg.cross_eval and spec.trains:  # the cell's records then hold more: a new hash
        hp["cross_eval"] = True
    if spec.trains:  # the weights a cell keeps are part of its record (harness/cell/weights.py)
        from harness.cell.weights import save_kind

        hp["save"] = save_kind(cfg, spec)[0]
    if cfg.lm_eval:
        hp.update(lm_eval=list(cfg.lm_eval), lm_eval_limit=cfg.lm_eval_limit, lm_eval_include=cfg.lm_eval_include)
    data = {k: v for k, v in cfg.data.items() if k.split(".")[0] == task.name}
    cell = {"task": task.name, "method": dataclasses.asdict(spec), "model": cfg.model, "data": data,
            "columns": cfg.columns.get(task.name, {}), "hyperparameters": hp}
    return {**cell, "config_hash": sha256_json(cell), "run": cfg.to_dict()}


def plan(cfg: RunConfig) -> list[Cell]:
    tasks = [get_task(name) for name in cfg.tasks]
    specs = [resolve_method(text) for text in cfg.methods]
    for items, what in ((cfg.tasks, "task"), ([s.name for s in specs], "method")):
        dup = sorted({x for x in items if list(items).count(x) > 1})
        if dup:
            raise ConfigError(f"{what} {dup[0]!r} is listed twice; name each {what} once")
    for key in list(cfg.data) + list(cfg.columns):
        if key.split(".")[0] not in cfg.tasks:
            raise ConfigError(f"--data/--columns name task {key.split('.')[0]!r}, which is not in --tasks "
                              f"({', '.join(cfg.tasks)})")
        if "." in key and key.split(".", 1)[1] not in ("train", "eval"):
            raise ConfigError(f"--data {key}=...: the split must be train or eval, e.g. cnn.eval=FILE")
    cells = []
    seeds = cfg.seed_list
    run_name = cfg.run_dir.name
    for task in tasks:
        for spec in specs:
            for seed in seeds:
                # Each seed's cell carries its own seed in its config, under the run's (unchanged) name.
                seed_cfg = dataclasses.replace(cfg, seed=seed, run_name=run_name)
                conf = cell_config(seed_cfg, task, spec)
                folder = folder_name(spec) + (f"-seed{seed}" if len(seeds) > 1 else "")
                cells.append(Cell(task, spec, CellStore(cfg.run_dir, task.name, folder), conf,
                                  conf["config_hash"], seed))
    for i, cell in enumerate(cells, 1):
        cell.index, cell.of = i, len(cells)
    return cells


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out {run_dir.parent} is not writable ({e.strerror or e}); choose a writable "
                          "folder") from None


def check_resumable(cells: list[Cell]) -> None:
    for cell in cells:
        state, _ = cell.store.state()
        if state == "complete":
            stored = cell.store.read_json("config.json").get("config_hash")
            if stored != cell.hash:
                raise ConfigError(f"{cell.store.dir} holds results made with different settings; use another "
                                  "--run-name (or leave it out) to keep both")


def quiet_libraries() -> None:
    """Our own progress bars replace the libraries' per-call bars and known deprecation chatter."""
    import warnings

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)


def run_matrix(cfg: RunConfig, command: str | None = None) -> list[Cell]:
    from harness.execute.executors import make_executor
    from harness.cell.models import resolve_device, resolve_model

    cells = plan(cfg)
    executor = make_executor(cfg)  # an unknown or uninstalled executor fails here, before any work
    quiet_libraries()
    check_resumable(cells)
    device = resolve_device(cfg.device)
    datasets = {}
    for task in dict.fromkeys(c.task for c in cells):
        datasets[task.name] = task.load(cfg)
    model = resolve_model(cfg.model)  # builds a catalogue model's cache once, before cells race to build it
    check_model_and_integrations(cfg, model)
    check_writable(cfg.run_dir)  # last: a run refused above leaves no folder behind
    write_manifest(cfg, cells, command)
    console.print(f"[bold]run[/] {cfg.run_dir}  model={cfg.model}  device={device}  cells={len(cells)}  "
                  f"executor={cfg.executor}" + (f" x{cfg.parallel}" if cfg.parallel > 1 else ""))
    todo = []
    budget = memory_budget(cfg, device)
    for cell in cells:
        state, reason = cell.store.state()
        if state == "complete" and reason == "skipped" and over_budget_before(cell):
            cell.store.reset()  # the budget or --force may have changed: decide again
            state = "missing"
        if state == "complete" and reason in ("ok", "skipped"):
            console.print(f"[dim]cell {cell.index}/{cell.of} {cell.label}: already complete, skipped[/]")
            continue
        if state != "missing":
            console.print(f"[yellow]cell {cell.index}/{cell.of} {cell.label}: {state} ({reason}), redoing[/]")
            cell.store.reset()
        cell.store.dir.mkdir(parents=True, exist_ok=True)
        cell.store.write_json("config.json", cell.config)
        reason = budget_skip(cell, cfg, device, model.location, budget)
        if reason:
            console.print(f"[yellow]cell {cell.index}/{cell.of} {cell.label}: skipped: {reason}[/]")
            cell.store.finish("skipped", error_kind="over_budget", message=reason)
            continue
        todo.append(cell)
    if todo:
        executor.run(todo, datasets)
    for cell in cells:
        cell.outcome = read_outcome(cell)
    return cells


def check_model_and_integrations(cfg: RunConfig, model) -> None:
    """One line up front, not one failure per cell: the model resolves, and asked-for extras are installed."""
    from harness.cell.models import check_loadable

    check_loadable(model)
    if cfg.report_to:
        from harness.integrations.trackers import check_trackers

        check_trackers(cfg)
    if cfg.lm_eval:
        from harness.evaluate.lm_eval import check_lm_eval

        check_lm_eval(cfg)
    if cfg.generate_backend == "vllm":
        from harness.cell.models import resolve_device
        from harness.cell.vllm import check_available

        check_available(resolve_device(cfg.device))
    if cfg.cross_eval:
        from harness.evaluate.cross_task import check_cross_eval

        check_cross_eval(cfg)


def memory_budget(cfg: RunConfig, device: str) -> tuple[int, str] | None:
    """(bytes, where it comes from) that a cell's estimated peak must fit, or None when there is none."""
    from harness.spec.config import parse_bytes
    from harness.plan.estimate import device_memory

    if cfg.memory_budget:
        return parse_bytes(cfg.memory_budget), f"--memory-budget {cfg.memory_budget}"
    total = device_memory(device, cfg.gpu)
    if total is None:
        return None
    return total, f"--gpu {cfg.gpu}" if cfg.gpu else "the GPU's memory"


def budget_skip(cell: Cell, cfg: RunConfig, device: str, location: str, budget) -> str | None:
    """Why the cell is skipped before it runs (its estimate exceeds the budget), or None to run it."""
    if budget is None or cfg.force:
        return None
    from harness.plan.estimate import estimate_for_cell

    est = estimate_for_cell(location, cell.spec, cfg, device)
    if est is None or est.total_bytes <= budget[0]:
        return None
    return f"{est.describe()}; over {budget[1]} ({budget[0] / 2**30:.2f} GiB); --force runs it anyway"


def over_budget_before(cell: Cell) -> bool:
    return cell.store.read_json("status.json").get("error_kind") == "over_budget"


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
            known.append({"task": c.task.name, "method": c.spec.name, "folder": folder})
            folders.add(folder)
    atomic_write_json(path, {"command": command, "config": cfg.to_dict(), "cells": known})


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
