"""Append-only run records: one folder per cell, one file per stage, each written atomically.

A cell is complete only when ``status.json`` exists and lists every other file (saved weights in sub-folders
too) with its SHA-256, and each file still matches. That file is written last, so a cell killed at any moment
is either complete or not, and a corrupted or truncated file is detected on resume and the cell redone.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from harness.core.files import atomic_write_json, atomic_write_jsonl, read_json, sha256_file

STATUS = "status.json"
PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "evaluate", "rouge-score",
            "accelerate", "numpy", "pandas")
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout, for git_state
# Set by the Ray executor's task in the environment of the cell process it starts (harness/execute/ray.py): the Ray
# worker's id and process id, which only a Ray worker has, for the cell to record beside its own.
RAY_WORKER_ENV = "HARNESS_RAY_WORKER"


def versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state() -> dict:
    def git(*args):
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except OSError:  # git not installed
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": None if dirty is None else bool(dirty)}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict:
    import torch

    env = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu": cpu_name(),
           "torch_threads": torch.get_num_threads(), "device": device, "gpu": None, "packages": versions(),
           "git": git_state()}
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def process_facts() -> dict:
    """Which process ran the cell and which started it (env.json): its own id and its parent's, and under Ray the
    worker that started it. Inline, ``pid`` is the driver's (run.json's ``driver_pid``); under the process executor
    ``parent_pid`` is; under Ray ``parent_pid`` is the Ray worker's (``ray``: its ``worker_id`` and ``worker_pid``)."""
    facts = {"pid": os.getpid(), "parent_pid": os.getppid()}
    worker = os.environ.get(RAY_WORKER_ENV)
    if worker:
        facts["ray"] = json.loads(worker)
    return facts


def predictions_file(task_name: str) -> str:
    """The cell-folder file that holds a trained model's predictions on another task of the run (--cross-eval)."""
    return f"predictions.{task_name}.jsonl"


class CellStore:
    """The folder ``<run>/<task>/<method>/`` of one cell."""

    def __init__(self, run_dir: Path, task: str, method_folder: str):
        self.dir = Path(run_dir) / task / method_folder

    def path(self, name: str) -> Path:
        return self.dir / name

    def write_json(self, name: str, obj) -> None:
        atomic_write_json(self.path(name), obj)

    def write_jsonl(self, name: str, rows) -> None:
        atomic_write_jsonl(self.path(name), rows)

    def read_json(self, name: str):
        return read_json(self.path(name))

    def finish(self, status: str, **fields) -> dict:
        """Write status.json last, with checksums of every other file in the cell.

        Files in sub-folders (saved weights: adapter/, model/) are listed by their path in the cell; hidden files
        and folders (temporary files, a multi-process job's scratch folder) are not.
        """
        files = {}
        for p in sorted(self.dir.rglob("*")):
            rel = p.relative_to(self.dir)
            if p.is_file() and rel.as_posix() != STATUS and not any(part.startswith(".") for part in rel.parts):
                files[rel.as_posix()] = sha256_file(p)
        record = {"status": status, "files": files, **fields}
        atomic_write_json(self.path(STATUS), record)
        return record

    def state(self) -> tuple[str, str]:
        """("complete" | "missing" | "incomplete" | "corrupt", reason)."""
        if not self.dir.exists():
            return "missing", ""
        status_path = self.path(STATUS)
        if not status_path.is_file():
            return "incomplete", "no status.json (interrupted)"
        try:
            record = read_json(status_path)
            files = record["files"]
        except (ValueError, KeyError, TypeError):
            return "corrupt", "status.json is unreadable"
        for name, digest in files.items():
            p = self.path(name)
            if not p.is_file():
                return "corrupt", f"{name} is missing"
            if sha256_file(p) != digest:
                return "corrupt", f"{name} does not match its checksum"
        return "complete", record.get("status", "")

    def reset(self) -> None:
        """Remove a partial or corrupt cell before redoing it (complete cells are never removed)."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
