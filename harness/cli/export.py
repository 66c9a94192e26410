"""``run_matrix.py export RUN TASK METHOD OUT``: a deployable model from a cell's saved weights.

The work is harness/cell/export.py's; this is its command line."""

from __future__ import annotations

from pathlib import Path

from harness.cell.export import export, find_cell
from harness.cli.parser import Parser
from harness.core.console import quiet_libraries
from harness.core.errors import ConfigError

DESCRIPTION = "A deployable model from the weights a cell kept (LoRA merged, QLoRA adapter, or the full model)."


def cmd_export(argv: list[str]) -> int:
    p = Parser(prog="run_matrix.py export", description=DESCRIPTION)
    p.add_argument("run", help="a run folder, e.g. results/smollm2-135m-1a2b3c4d (or its name under results/)")
    p.add_argument("task", help="the cell's task, e.g. cnn")
    p.add_argument("method", help="the cell's method, e.g. lora (or its folder, e.g. lora-seed1)")
    p.add_argument("out", help="a new or empty folder to write the model to")
    args = p.parse_args(argv)
    quiet_libraries()
    store = find_cell(args.run, args.task, args.method)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not empty; pass a new folder to export into")
    what = export(store, out)
    print(f"exported {args.task} x {args.method} to {out}: {what}")
    return 0
