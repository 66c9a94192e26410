"""One rich console (on stderr, so stdout stays clean for piping), progress for long work, and the libraries kept quiet.

On a terminal, progress is a bar. Without one (a CI log, a Slurm or Ray log file, a cell's child process
whose stderr the runner collects), a bar would print nothing until the work ends, so progress becomes a plain
line at a steady rhythm: every ``PLAIN_EVERY_S`` seconds or every tenth of the work, whichever comes first,
naming the cell, the stage, the step, the latest loss and an ETA.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PLAIN_EVERY_S = 30.0
# A cell's child process draws its bars through the runner's pipe when the runner itself is on a terminal.
FORCED = os.environ.get("HARNESS_FORCE_TERMINAL") == "1"
# Piped output (CI logs, files) has no width; rich would assume 80 columns and fold the tables, so give it room
# (a task's table with its memory, time, trainable-parameter and adapter-size columns fills about 200).
console = Console(stderr=True, highlight=False, force_terminal=True if FORCED else None,
                  width=None if sys.stderr.isatty() or FORCED else 200)


def progress_mode() -> str:
    """bar, plain or off. HARNESS_PROGRESS=0 turns progress off (the CI logs stay short); =plain forces lines."""
    setting = os.environ.get("HARNESS_PROGRESS", "1")
    if setting == "0":
        return "off"
    if setting == "plain":
        return "plain"
    return "bar" if console.is_terminal else "plain"


@contextlib.contextmanager
def progress_bar(description: str, total: int):
    """Yield ``advance(n=1, **fields)``; shows a bar, or plain progress lines without a terminal."""
    mode = progress_mode()
    if mode == "off":
        yield lambda n=1, **fields: None
        return
    if mode == "plain":
        yield PlainProgress(description, total).advance
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields):
            info = " ".join(f"{k}={v}" for k, v in fields.items())
            progress.update(task, advance=n, info=info)

        yield advance


class PlainProgress:
    """Progress as lines: '[cnn x lora] train lora: step 12/48 (25%) loss=1.234 elapsed 1m05s eta 3m15s'."""

    def __init__(self, description: str, total: int, every_s: float = PLAIN_EVERY_S, clock=time.monotonic):
        self.description, self.total, self.every_s, self.clock = description, max(total, 1), every_s, clock
        self.done, self.fields = 0, {}
        self.start = self.last_time = clock()
        self.last_tenth = 0
        cell = os.environ.get("HARNESS_CELL")
        self.prefix = f"[{cell}] " if cell else ""

    def advance(self, n: int = 1, **fields) -> None:
        self.done += n
        self.fields.update(fields)
        now = self.clock()
        tenth = 10 * self.done // self.total
        if n and (now - self.last_time >= self.every_s or tenth > self.last_tenth or self.done == self.total):
            self.last_time, self.last_tenth = now, tenth
            console.print(self.line(now), markup=False, highlight=False, soft_wrap=True)

    def line(self, now: float) -> str:
        elapsed = now - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        info = "".join(f" {k}={v}" for k, v in self.fields.items())
        return (f"{self.prefix}{self.description}: step {self.done}/{self.total} "
                f"({100 * self.done // self.total}%){info} elapsed {_dur(elapsed)} eta {_dur(eta)}")


def quiet_libraries() -> None:
    """Our own progress lines replace the libraries' per-call bars, and known chatter is dropped: a process that
    trains or evaluates calls this once, before its first model (and before bitsandbytes is imported).

    * huggingface_hub logs each retry of an unreachable Hub ("Name or service not known ... HEAD https://...")
      above the one line the harness prints for the same failure (harness/cell/load.py).
    * bitsandbytes 0.50, imported on a CPU with AVX512-BF16, tries to fetch a packed bfloat16 4-bit kernel from
      the Hub and logs "Failed to load CPU gemm_4bit_forward from kernels-community ... Set trust_remote_code=True"
      when it may not: that kernel serves the packed path the harness keeps 4-bit layers off on CPUs anyway
      (harness/cell/load.py, keep_4bit_unpacked), so the line reports nothing the run depends on.
    """
    import logging
    import warnings

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    import datasets
    import huggingface_hub
    import transformers

    huggingface_hub.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)


def _dur(seconds: float) -> str:
    if seconds != seconds:  # NaN: nothing done yet
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"
