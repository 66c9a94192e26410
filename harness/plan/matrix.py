"""The matrix: every task x method x seed of a run as a planned cell, each with its folder in the run.

A tuned method (--tune, NAME:lr=1e-4..1e-2, NAME:lr=a|b|c) has no cell here: its search (harness/execute/search.py)
makes one tuning cell per trial and seed (``trial_cells``), scored on the validation split, and, once a choice is
made from those cells' records, one test cell per seed with the chosen settings (``chosen_cells``).
A method that cannot apply to a task (retrieval on a task with no knowledge base) is left out of that task's cells,
with the task's one line on why and the fix (``left_out``); it is not run and is no failure, unless every cell is
left out: a run with nothing to do is bad input.

Planning reads names and settings only (no data, no model): an unknown task or method, a --data, --columns or
--corpus for a task the run does not have, --columns on data that is all embedded, or a split that is not train,
validation or test, is one line before anything else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from harness.core.errors import ConfigError
from harness.records.store import CellStore
from harness.spec.cell import CellSpec
from harness.spec.config import RunConfig
from harness.spec.splits import ALIASES, ROLES, uses_embedded
from harness.spec.task import get_task


@dataclass
class Cell:
    """A planned cell: its spec, its folder, its place in the plan, and (after the run) its outcome."""

    spec: CellSpec
    store: CellStore
    index: int = 0  # 1-based position in the plan, for progress lines
    of: int = 0
    outcome: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def task(self) -> str:
        return self.spec.task


def plan(cfg: RunConfig) -> list[Cell]:
    """The cells that can run now: every tuning cell (task x tuned method x grid point x seed) and the test cells of
    the methods that are not tuned. A tuned method's test cells follow its choice (``chosen_cells``)."""
    tasks = [get_task(name) for name in cfg.tasks]
    for key in list(cfg.data) + list(cfg.columns) + list(cfg.corpus):
        if key.split(".")[0] not in cfg.tasks:
            raise ConfigError(f"--data/--columns/--corpus name task {key.split('.')[0]!r}, which is not in --tasks "
                              f"({', '.join(cfg.tasks)})")
        if "." in key and key.split(".", 1)[1] not in (*ROLES, *ALIASES):
            raise ConfigError(f"--data {key}=...: the split must be train, validation or test, e.g. cnn.test=FILE")
    for task, mapping in cfg.columns.items():
        if mapping and uses_embedded(task, cfg.data):
            pairs = ",".join(f"{k}={v}" for k, v in mapping.items())
            raise ConfigError(f"--columns {task}:{pairs} maps the columns of your own data, and every split of {task} "
                              f"is the embedded data, which needs no mapping; add --data {task}=FILE, or drop "
                              "--columns")
    skipped = left_out(cfg)
    if len(skipped) == len(tasks) * len(cfg.specs):
        # Nothing would run: a run of no cells would exit 0 with an empty report, which reads as a pass.
        reasons = "; ".join(f"{t} x {m}: {why}" for (t, m), why in skipped.items())
        raise ConfigError(f"nothing to run: every cell is left out ({reasons}); add a method that applies to "
                          "these tasks")
    cells = [_cell(cfg, task, method, seed, None) for task in tasks for method in cfg.specs
             if (task.name, method.name) not in skipped and method.name not in cfg.searches for seed in cfg.seed_list]
    number(cells, run_size(cfg))
    return cells


def trial_cells(cfg: RunConfig, task, method, tuning: dict) -> list[Cell]:
    """One trial's tuning cells, one per seed: ``tuning`` holds its study, number, settings and pruning data."""
    return [_cell(cfg, task, method, seed, {**tuning, "role": "trial", "by": _by(cfg, task)})
            for seed in cfg.seed_list]


def chosen_cells(cfg: RunConfig, choices: dict) -> list[Cell]:
    """The test cells of the tuned methods with the settings each chose: ``choices`` maps (task, method) to
    {"number": the chosen trial, "params": its settings}."""
    cells = []
    for task in (get_task(name) for name in cfg.tasks):
        for method in cfg.specs:
            if (task.name, method.name) in choices:
                chosen = {"role": "chosen", "study": f"{task.name}/{method.name}", **choices[task.name, method.name],
                          "by": _by(cfg, task)}
                cells += [_cell(cfg, task, method, seed, chosen) for seed in cfg.seed_list]
    return cells


def number(cells: list[Cell], total: int, start: int = 0) -> None:
    """Each cell's place in the whole run (``total`` cells, ``run_size``), for progress lines."""
    for i, cell in enumerate(cells, start + 1):
        cell.index, cell.of = i, total


def run_size(cfg: RunConfig) -> int:
    """Every cell the run will have: each tuned method's trials and its test cell, every other method's cell, on
    every task it applies to (a search whose best sits at an edge may use fewer or, for a grid, more trials)."""
    skipped = left_out(cfg)
    per_seed = sum(trials(cfg, m.name) + 1 if m.name in cfg.searches else 1
                   for t in cfg.tasks for m in cfg.specs if (t, m.name) not in skipped)
    return per_seed * len(cfg.seed_list)


def trials(cfg: RunConfig, method: str) -> int:
    """The trials a method's search runs: --tune-trials, or a grid's points when the grid is the larger."""
    search = cfg.searches[method]
    return max(len(search.grid()), cfg.tune_trials) if search.is_grid else cfg.tune_trials


def left_out(cfg: RunConfig) -> dict:
    """{(task, method): why} for each method that cannot apply to a task of the run (``Task.method_issue``); a
    method whose grid sets shots or retrieve is judged with the grid's first value."""
    out = {}
    for task in (get_task(name) for name in cfg.tasks):
        for method in cfg.specs:
            search = cfg.searches.get(method.name)
            probe = dataclasses.replace(method, **{k: int(d.span[0]) for k, d in search.dims.items()
                                                   if k in ("shots", "retrieve")}) if search else method
            reason = task.method_issue(probe, cfg)
            if reason:
                out[task.name, method.name] = reason
    return out


def _cell(cfg: RunConfig, task, method, seed: int, tuning: dict | None) -> Cell:
    # Each seed's cell carries its own seed in its config, under the run's (unchanged) name.
    spec = CellSpec.create(dataclasses.replace(cfg, seed=seed, run_name=cfg.run_dir.name), task, method, tuning)
    return Cell(spec, CellStore(cfg.run_dir, task.name, spec.folder))


def _by(cfg: RunConfig, task) -> str:
    """What chooses a grid point: the task's main metric, or the validation loss."""
    return "loss" if cfg.tune_by == "loss" else task.main_metric
