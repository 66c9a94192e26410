"""How a cell is launched: the one seam between planning and running.

The runner writes each cell's ``config.json`` and hands the cell folders to an executor; afterwards it reads
every outcome from the records on disk, never from the executor's memory. Executors, in one registry:

* ``inline``: in this process, one after another (debugging, and tests that monkeypatch the cell code);
* ``process`` (default): a fresh ``python -m harness.cell CELL_DIR`` per cell (harness/execute/child.py), up to
  ``--parallel`` at once, each with its own GPU when there are several, under an optional memory cap;
* ``ray``: a Ray task per cell (harness/execute/ray.py; Ray itself is imported only when that executor runs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

from harness.cell.job import run_cell
from harness.core.console import console
from harness.core.registry import Registry
from harness.core.units import parse_bytes
from harness.execute.child import POLL_S, Child
from harness.execute.ray import RayExecutor

EXECUTORS = Registry("executor")
STATUS_EVERY_S = 60.0  # with cells in parallel, the driver says which run where this often


def make_executor(cfg):
    return EXECUTORS.lookup(cfg.executor)(cfg)


@EXECUTORS.register("inline")
class InlineExecutor:
    """Every cell in this process, one after another: tracebacks and monkeypatches reach the cell code."""

    def __init__(self, cfg):
        self.cfg = cfg

    def run(self, cells: list, data: dict | None = None) -> None:
        before = os.environ.get("HARNESS_CELL")
        try:
            for cell in cells:
                console.rule(f"cell {cell.index}/{cell.of}: {cell.label}")
                os.environ["HARNESS_CELL"] = cell.label  # progress lines name this cell, as a child's do
                run_cell(cell.store.dir, (data or {}).get(cell.task))
        finally:
            if before is None:
                os.environ.pop("HARNESS_CELL", None)
            else:
                os.environ["HARNESS_CELL"] = before


def visible_gpus() -> list[str]:
    """The GPU ids this process may hand out, from CUDA_VISIBLE_DEVICES or torch's device count."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() != ""]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


@EXECUTORS.register("process")
class ProcessExecutor:
    """A fresh child process per cell, up to ``--parallel`` at once."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.limit = parse_bytes(cfg.cell_memory_limit) if cfg.cell_memory_limit else None

    def gpu_slots(self) -> list[list[str]]:
        """GPU groups, one per concurrent cell, each of --num-processes GPUs; [] on CPU."""
        if self.cfg.device == "cpu":
            return []
        gpus = visible_gpus()
        per = self.cfg.num_processes
        return [gpus[i:i + per] for i in range(0, len(gpus) - per + 1, per)] if gpus else []

    def run(self, cells: list, data: dict | None = None) -> None:
        slots = self.gpu_slots()
        width = min(self.cfg.parallel, len(slots)) if slots else self.cfg.parallel
        if slots and self.cfg.parallel > len(slots):
            console.print(f"[yellow]--parallel {self.cfg.parallel} but only {len(slots)} GPU group(s) of "
                          f"{self.cfg.num_processes}: running {width} at once[/]")
        free = list(range(max(width, 1)))
        pending, running = list(cells), {}
        try:
            self._loop(pending, running, free, slots, width)
        finally:  # Ctrl-C or an error in the runner: no cell goes on writing behind the user's back
            for child in running.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)

    def _loop(self, pending: list, running: dict, free: list, slots: list, width: int) -> None:
        tty = sys.stderr.isatty()
        next_status = time.monotonic() + STATUS_EVERY_S
        while pending or running:
            while pending and free:
                slot = free.pop(0)
                cell = pending.pop(0)
                env = {**os.environ, "HARNESS_CELL": cell.label, "PYTHONUNBUFFERED": "1"}
                if slots:
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(slots[slot])
                if width == 1 and tty:
                    # One cell at a time on a terminal: let the child draw its bars through our pipe.
                    env["HARNESS_FORCE_TERMINAL"], env["COLUMNS"] = "1", str(console.width)
                where = f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if slots else ""
                console.rule(f"cell {cell.index}/{cell.of}: {cell.label}{where}")
                prefix = f"[{cell.label}] " if width > 1 else ""
                running[slot] = Child(cell.store, env, self.limit, self.cfg.cell_memory_limit, prefix)
                running[slot].label = cell.label
            time.sleep(POLL_S)
            for slot, child in list(running.items()):
                code = child.poll()
                if code is not None:
                    child.finish(code)
                    del running[slot]
                    free.append(slot)
            if width > 1 and running and time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_EVERY_S
                where = (lambda slot: f" (GPU {','.join(slots[slot])})") if slots else (lambda slot: "")
                busy = ", ".join(c.label + where(slot) for slot, c in running.items())
                console.print(f"[dim]running: {busy}; waiting: {len(pending)}[/]")


EXECUTORS.add("ray", RayExecutor)
