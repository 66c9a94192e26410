"""The matrix: every task x method x seed of a run as a planned cell, each with its folder in the run.

A method with a learning-rate grid (--tune, NAME:lr=a|b|c) becomes one tuning cell per grid point, scored on the
validation split, and, once the runner has chosen its rate from those cells' records, one test cell at that rate.
Planning reads names and settings only (no data, no model): an unknown task or method, a --data or --columns
for a task the run does not have, or a split that is not train, validation or test, is one line before anything
else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from harness.core.errors import ConfigError
from harness.records.store import CellStore
from harness.spec.cell import CellSpec
from harness.spec.config import RunConfig
from harness.spec.splits import ALIASES, ROLES
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
    for key in list(cfg.data) + list(cfg.columns):
        if key.split(".")[0] not in cfg.tasks:
            raise ConfigError(f"--data/--columns name task {key.split('.')[0]!r}, which is not in --tasks "
                              f"({', '.join(cfg.tasks)})")
        if "." in key and key.split(".", 1)[1] not in (*ROLES, *ALIASES):
            raise ConfigError(f"--data {key}=...: the split must be train, validation or test, e.g. cnn.test=FILE")
    cells = []
    for task in tasks:
        for method in cfg.specs:
            grid = cfg.grids.get(method.name)
            for value in grid or (None,):
                point = None if grid is None else {"role": "point", "key": "lr", "value": value, "grid": list(grid),
                                                   "by": _by(cfg, task)}
                cells += [_cell(cfg, task, method, seed, point) for seed in cfg.seed_list]
    number(cells, run_size(cfg))
    return cells


def chosen_cells(cfg: RunConfig, choices: dict) -> list[Cell]:
    """The test cells of the tuned methods, at the rate each chose: ``choices`` maps (task, method) to the value."""
    cells = []
    for task in (get_task(name) for name in cfg.tasks):
        for method in cfg.specs:
            if (task.name, method.name) in choices:
                chosen = {"role": "chosen", "key": "lr", "value": choices[task.name, method.name],
                          "grid": list(cfg.grids[method.name]), "by": _by(cfg, task)}
                cells += [_cell(cfg, task, method, seed, chosen) for seed in cfg.seed_list]
    return cells


def number(cells: list[Cell], total: int, start: int = 0) -> None:
    """Each cell's place in the whole run (``total`` cells, ``run_size``), for progress lines."""
    for i, cell in enumerate(cells, start + 1):
        cell.index, cell.of = i, total


def run_size(cfg: RunConfig) -> int:
    """Every cell the run will have: each tuned method's grid points and its test cell, every other method's cell."""
    per_task = sum(len(cfg.grids.get(m.name, ())) + 1 for m in cfg.specs)
    return per_task * len(cfg.tasks) * len(cfg.seed_list)


def _cell(cfg: RunConfig, task, method, seed: int, tuning: dict | None) -> Cell:
    # Each seed's cell carries its own seed in its config, under the run's (unchanged) name.
    spec = CellSpec.create(dataclasses.replace(cfg, seed=seed, run_name=cfg.run_dir.name), task, method, tuning)
    return Cell(spec, CellStore(cfg.run_dir, task.name, spec.folder))


def _by(cfg: RunConfig, task) -> str:
    """What chooses a grid point: the task's main metric, or the validation loss."""
    return "loss" if cfg.tune_by == "loss" else task.main_metric
