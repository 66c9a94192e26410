"""One rich console (on stderr, so stdout stays clean for piping) and progress bars for long work."""

from __future__ import annotations

import contextlib
import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Piped output (CI logs, files) has no width; rich would assume 80 columns and fold the tables, so give it room.
console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)


@contextlib.contextmanager
def progress_bar(description: str, total: int):
    """Yield ``advance(n=1, **fields)``; shows a bar with a count, elapsed and remaining time.

    HARNESS_PROGRESS=0 turns the bars off (the CI logs stay short); the work is the same.
    """
    if os.environ.get("HARNESS_PROGRESS", "1") == "0":
        yield lambda n=1, **fields: None
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields):
            info = " ".join(f"{k}={v}" for k, v in fields.items())
            progress.update(task, advance=n, info=info)

        yield advance
