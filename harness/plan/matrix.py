"""The matrix: every task x method x seed of a run as a planned cell, each with its folder in the run.

Planning reads names and settings only (no data, no model): an unknown task or method, a --data or --columns
for a task the run does not have, or a split that is not train or eval, is one line before anything else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from harness.core.errors import ConfigError
from harness.records.store import CellStore
from harness.spec.cell import CellSpec
from harness.spec.config import RunConfig
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
    tasks = [get_task(name) for name in cfg.tasks]
    for key in list(cfg.data) + list(cfg.columns):
        if key.split(".")[0] not in cfg.tasks:
            raise ConfigError(f"--data/--columns name task {key.split('.')[0]!r}, which is not in --tasks "
                              f"({', '.join(cfg.tasks)})")
        if "." in key and key.split(".", 1)[1] not in ("train", "eval"):
            raise ConfigError(f"--data {key}=...: the split must be train or eval, e.g. cnn.eval=FILE")
    run_name = cfg.run_dir.name
    cells = []
    for task in tasks:
        for method in cfg.specs:
            for seed in cfg.seed_list:
                # Each seed's cell carries its own seed in its config, under the run's (unchanged) name.
                spec = CellSpec.create(dataclasses.replace(cfg, seed=seed, run_name=run_name), task, method)
                cells.append(Cell(spec, CellStore(cfg.run_dir, task.name, spec.folder)))
    for i, cell in enumerate(cells, 1):
        cell.index, cell.of = i, len(cells)
    return cells
