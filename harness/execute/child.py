"""A cell in a child process: started, its stderr streamed and kept, its memory watched, its death recorded.

The process executor runs one ``Child`` per cell and the Ray executor one per Ray task. A child that dies without
writing ``status.json`` is recorded here as failed: ``oom`` when it crossed ``--cell-memory-limit``, ``killed`` for
a SIGKILL from elsewhere (usually the kernel's OOM killer), ``crashed`` for any other signal or exit code, with
the last lines of its stderr.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness.core.units import GIB
from harness.records.store import CellStore

TAIL_LINES = 20  # stderr lines kept in a failed cell's record: enough for a Python traceback's end
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
POLL_S = 0.05  # memory watch period: a torch step allocates far slower than 50 ms can let slip past


def record_death(store: CellStore, returncode: int, tail: list[str], memory_limit_hit: str | None = None,
                 peak_rss: int | None = None) -> dict:
    """Write status.json for a cell whose process ended without writing its own."""
    if memory_limit_hit:
        kind = "oom"
        message = f"the cell exceeded --cell-memory-limit {memory_limit_hit} and was stopped"
        if peak_rss:
            message += f" (resident memory reached {peak_rss / GIB:.2f} GiB)"
    elif returncode == -signal.SIGKILL:
        kind = "killed"
        message = ("the cell's process was killed by SIGKILL, the usual sign of the out-of-memory killer; "
                   "lower --batch-size or --max-seq-len, or set --cell-memory-limit")
    elif returncode < 0:
        kind = "crashed"
        message = f"the cell's process died by signal {signal.Signals(-returncode).name}"
    else:
        kind = "crashed"
        message = f"the cell's process exited with code {returncode} without recording a result"
    store.dir.mkdir(parents=True, exist_ok=True)
    return store.finish("failed", error_kind=kind, message=message, stderr_tail=tail[-TAIL_LINES:])


def cell_command(cell_dir: Path) -> list[str]:
    return [sys.executable, "-m", "harness.cell", str(cell_dir)]


def process_tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (a cell may launch accelerate workers)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError, ValueError):
            continue  # exited meanwhile, or a kernel thread without VmRSS
    return total


def _child_setup() -> None:
    """In the child before exec: its own process group (so a memory kill takes its workers too), and death
    with the runner (so a runner killed by SIGKILL or Ctrl-C leaves no orphan cell writing records)."""
    import ctypes

    os.setpgrp()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG, prctl(2)
    except OSError:
        pass  # not glibc Linux: the child may outlive a killed runner, as any subprocess would


class Child:
    """One running cell process: streams its stderr (echoed and kept as a tail) and watches its memory."""

    def __init__(self, store: CellStore, env: dict, limit: int | None, limit_text: str | None, echo_prefix: str):
        self.store, self.limit, self.limit_text = store, limit, limit_text
        self.tail: collections.deque = collections.deque(maxlen=200)
        self.limit_hit = False
        self.peak_rss = 0
        # The full log sits beside the records, not in the cell folder: the cell's files are exactly its record.
        logs = store.dir.parent.parent / "logs"
        logs.mkdir(exist_ok=True)
        self.log = open(logs / f"{store.dir.parent.name}.{store.dir.name}.log", "ab")
        self.proc = subprocess.Popen(cell_command(store.dir), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env, preexec_fn=_child_setup)
        self.reader = threading.Thread(target=self._read, args=(echo_prefix,), daemon=True)
        self.reader.start()

    def _read(self, prefix: str) -> None:
        for raw in iter(self.proc.stderr.readline, b""):
            self.log.write(raw)
            self.log.flush()
            text = raw.decode(errors="replace")
            self.tail.append(ANSI.sub("", text).rstrip("\n"))
            out = sys.stderr.buffer
            plain = ANSI.sub("", text)
            out.write(raw if not prefix else (plain if plain.startswith(prefix) else prefix + plain).encode())
            out.flush()

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is None and self.limit:
            rss = process_tree_rss(self.proc.pid)
            self.peak_rss = max(self.peak_rss, rss)
            if rss > self.limit:
                self.limit_hit = True
                os.killpg(self.proc.pid, signal.SIGKILL)  # the whole group: accelerate workers too
        return code

    def finish(self, code: int) -> None:
        self.reader.join(timeout=10)
        self.log.close()
        store = self.store
        if (store.dir / "status.json").is_file() and not self.limit_hit:
            return
        tail = [line for line in self.tail if line.strip()]
        record_death(store, code, tail, self.limit_text if self.limit_hit else None, self.peak_rss)

    def wait(self) -> int:
        """Block until the child ends (watching its memory), record its death if it left no status."""
        while (code := self.poll()) is None:
            time.sleep(POLL_S)
        self.finish(code)
        return code
