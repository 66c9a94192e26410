"""The matrix: every task x method x seed of a run as a planned cell, each with its folder in the run.

A method with a learning-rate grid (--tune, NAME:lr=a|b|c) becomes one tuning cell per grid point, scored on the
validation split, and, once the runner has chosen its rate from those cells' records, one test cell at that rate.
A method that cannot apply to a task (retrieval on a task with no knowledge base) is left out of that task's cells,
with the task's one line on why and the fix (``left_out``); it is not run and is no failure.

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
    cells = []
    for task in tasks:
        for method in cfg.specs:
            if (task.name, method.name) in skipped:
                continue
            grid = cfg.grids.get(method.name)
            for value in (grid[1] if grid else (None,)):
                point = None if grid is None else {"role": "point", "key": grid[0], "value": value,
                                                   "grid": list(grid[1]), "by": _by(cfg, task)}
                cells += [_cell(cfg, task, method, seed, point) for seed in cfg.seed_list]
    number(cells, run_size(cfg))
    return cells


def chosen_cells(cfg: RunConfig, choices: dict) -> list[Cell]:
    """The test cells of the tuned methods, at the rate each chose: ``choices`` maps (task, method) to the value."""
    cells = []
    for task in (get_task(name) for name in cfg.tasks):
        for method in cfg.specs:
            if (task.name, method.name) in choices:
                key, grid = cfg.grids[method.name]
                chosen = {"role": "chosen", "key": key, "value": choices[task.name, method.name], "grid": list(grid),
                          "by": _by(cfg, task)}
                cells += [_cell(cfg, task, method, seed, chosen) for seed in cfg.seed_list]
    return cells


def number(cells: list[Cell], total: int, start: int = 0) -> None:
    """Each cell's place in the whole run (``total`` cells, ``run_size``), for progress lines."""
    for i, cell in enumerate(cells, start + 1):
        cell.index, cell.of = i, total


def run_size(cfg: RunConfig) -> int:
    """Every cell the run will have: each tuned method's grid points and its test cell, every other method's cell,
    on every task it applies to."""
    skipped = left_out(cfg)
    per_seed = sum(len(cfg.grids[m.name][1]) + 1 if m.name in cfg.grids else 1
                   for t in cfg.tasks for m in cfg.specs if (t, m.name) not in skipped)
    return per_seed * len(cfg.seed_list)


def left_out(cfg: RunConfig) -> dict:
    """{(task, method): why} for each method that cannot apply to a task of the run (``Task.method_issue``); a
    method whose grid sets shots or retrieve is judged with the grid's first value."""
    out = {}
    for task in (get_task(name) for name in cfg.tasks):
        for method in cfg.specs:
            grid = cfg.grids.get(method.name)
            probe = dataclasses.replace(method, **{grid[0]: grid[1][0]}) if grid else method
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
