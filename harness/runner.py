"""Run the task x method matrix: plan, validate, then run each cell in isolation and record it.

Everything that can be checked cheaply is checked before the first cell spends compute: names, sizes,
combinations, the output folder, every task's data, and the model. A cell that fails is recorded with its
error kind and message, and the matrix goes on. Completed cells are skipped on a rerun with the same run
name; interrupted or corrupted ones are reported and redone.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import RunConfig
from harness.console import console
from harness.errors import ConfigError, classify, one_line
from harness.io import atomic_write_json, read_json, sha256_json
from harness.methods import MethodSpec, folder_name, resolve_method
from harness.records import CellStore, environment
from harness.tasks import Context, Task, get_task


@dataclass
class Cell:
    task: Task
    spec: MethodSpec
    store: CellStore
    config: dict
    hash: str
    outcome: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.task.name} x {self.spec.name}"


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
    hp.update(task.options(cfg))
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
    for task in tasks:
        for spec in specs:
            conf = cell_config(cfg, task, spec)
            cells.append(Cell(task, spec, CellStore(cfg.run_dir, task.name, folder_name(spec)), conf,
                              conf["config_hash"]))
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
    from harness.models import resolve_device, resolve_model

    cells = plan(cfg)
    quiet_libraries()
    check_writable(cfg.run_dir)
    check_resumable(cells)
    device = resolve_device(cfg.device)
    datasets = {}
    for task in dict.fromkeys(c.task for c in cells):
        datasets[task.name] = task.load(cfg)
    model = resolve_model(cfg.model)
    write_manifest(cfg, cells, command)
    console.print(f"[bold]run[/] {cfg.run_dir}  model={cfg.model}  device={device}  cells={len(cells)}")
    for i, cell in enumerate(cells, 1):
        state, reason = cell.store.state()
        if state == "complete" and reason in ("ok", "skipped"):
            cell.outcome = cell.store.read_json("status.json")
            console.print(f"[dim]cell {i}/{len(cells)} {cell.label}: already complete, skipped[/]")
            continue
        if state != "missing":
            console.print(f"[yellow]cell {i}/{len(cells)} {cell.label}: {state} ({reason}), redoing[/]")
            cell.store.reset()
        console.rule(f"cell {i}/{len(cells)}: {cell.label}")
        cell.outcome = run_cell(cell, cfg, datasets[cell.task.name], model.location, device)
    return cells


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


def run_cell(cell: Cell, cfg: RunConfig, data: dict, model_location: str, device: str) -> dict:
    """Run one cell; never raises for a failure inside the cell (it is recorded instead)."""
    from harness.measure import free_memory

    store = cell.store
    store.dir.mkdir(parents=True, exist_ok=True)
    store.write_json("config.json", cell.config)
    t0 = time.perf_counter()
    error = None
    try:
        env = environment(device)
        store.write_json("env.json", env)
        store.write_json("data.json", data["fingerprint"])
        skip = skip_reason(cell.spec, device)
        if skip:
            console.print(f"[yellow]skipped: {skip[1]}[/]")
            return store.finish("skipped", error_kind=skip[0], message=skip[1])
        _execute(cell, cfg, data, model_location, device)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001  (isolation: any failure is recorded, the matrix goes on)
        error = (classify(e), one_line(e), getattr(e, "step", None))
    if error is None:
        console.print(f"[green]done[/] {cell.label} in {time.perf_counter() - t0:.0f} s")
        return store.read_json("status.json")
    free_memory(device)  # after the except block, so the traceback no longer pins the model
    kind, message, step = error
    console.print(f"[red]failed[/] {cell.label}: {kind}: {message}")
    fields = {"error_kind": kind, "message": message}
    if step is not None:
        fields["step"] = step
    return store.finish("failed", **fields)


def skip_reason(spec: MethodSpec, device: str) -> tuple[str, str] | None:
    """(error kind, message) when this machine cannot run the method at all, else None."""
    if spec.requires_cuda and device != "cuda":
        return "needs_cuda", f"method {spec.name} needs a CUDA device and this run is on {device}"
    if spec.quantized and importlib.util.find_spec("bitsandbytes") is None:
        return "needs_bitsandbytes", (f"method {spec.name} needs bitsandbytes, which is not installed "
                                      "(pip install bitsandbytes)")
    return None


def _execute(cell: Cell, cfg: RunConfig, data: dict, model_location: str, device: str) -> None:
    from harness.generation import GenerationStats
    from harness.measure import PeakMemory, seed_everything
    from harness.metrics import summarise
    from harness.models import load_model, load_tokenizer
    from harness.training import count_parameters, train

    task, spec, store, hp = cell.task, cell.spec, cell.store, cell.config["hyperparameters"]
    seed_everything(cfg.seed)
    tok = load_tokenizer(model_location)
    ctx = Context(tok=tok, max_seq_len=cfg.max_seq_len, max_new_tokens=hp["max_new_tokens"],
                  template=cfg.template, batch_size=cfg.eval_batch_size, cfg=cfg)
    pairs = [task.train_pair(r, ctx) for r in data["train"]] if spec.trains else []
    stats = GenerationStats()
    with PeakMemory(device) as mem:
        t_load = time.perf_counter()
        model = load_model(model_location, spec, device)
        load_s = time.perf_counter() - t_load
        footprint = model.get_memory_footprint()
        if spec.trains:
            model, train_record = train(model, tok, spec, pairs, cfg, device)
        else:
            _, total = count_parameters(model)
            train_record = {"trained": False, "trainable_params": 0, "total_params": total}
        store.write_json("train.json", train_record)
        t_eval = time.perf_counter()
        predictions = task.evaluate(model, data["eval"], ctx, stats)
        eval_s = time.perf_counter() - t_eval
    del model
    values = task.score(predictions)
    for i, p in enumerate(predictions):
        p["scores"] = {name: vals[i] for name, vals in values.items()}
    store.write_jsonl("predictions.jsonl", predictions)
    quality = summarise(values, cfg.bootstrap, cfg.seed)
    total = train_record["total_params"]
    measurements = {
        "memory": {**mem.result, "peak_bytes": mem.peak_bytes, "model_footprint_bytes": footprint},
        "timing": {"load_s": load_s, "train_s": train_record.get("train_s", 0.0), "eval_s": eval_s,
                   "train_tokens_per_s": train_record.get("train_tokens_per_s"), **stats.to_dict()},
        "params": {"trainable": train_record["trainable_params"], "total": total,
                   "trainable_pct": 100.0 * train_record["trainable_params"] / total if total else 0.0},
    }
    store.write_json("metrics.json", {"task": task.name, "method": spec.name, "quality": quality,
                                      "main_metric": task.main_metric, "extra": task.extra_report(predictions),
                                      "measurements": measurements})
    store.finish("ok")


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
