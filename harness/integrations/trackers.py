"""Log every cell of a run to the trackers users already run: MLflow, Weights & Biases and TensorBoard.

Used only with ``--report-to``; the tracker packages themselves are imported only there. Each cell becomes one
tracker run named ``TASK/METHOD`` (its folder in the run), grouped by the run name: one MLflow experiment per run,
one W&B group, one TensorBoard subfolder per cell under ``RUN/trackers/tensorboard``. Two things write to that run:

* during training, transformers' own callback (``report_to`` in SFTConfig) logs the loss curve. It reads
  its destination from environment variables, which ``trainer_report_to`` sets for the cell it is given, so
  the trainer's run is the cell's run;
* after the reports are written, ``log_run`` adds the resolved config (flattened) as params, the quality
  metrics with their CI bounds and the measurements as metrics, and ``report.html`` and
  ``predictions.jsonl`` as artifacts, from the records on disk alone.

A rerun that resumes logs only the cells whose ``status.json`` changed since they were last logged
(``RUN/trackers/logged.json``), so resuming never duplicates a tracker run.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import sys
from pathlib import Path

from harness.core.console import console
from harness.core.errors import ConfigError, HarnessError
from harness.core.files import atomic_write_json, read_json, sha256_file
from harness.integrations.tracker_backends import TRACKERS, CellLog, apply_env, mlflow_uri, tracker_dir


class TrackerError(HarnessError, kind="tracker"):
    """A tracker refused the run's results (they stay on disk; a rerun logs them)."""


def check_trackers(cfg) -> None:
    """Before any cell runs: every --report-to tracker is installed, with a one-line hint when one is not."""
    for name in cfg.report_to or ():
        tracker = TRACKERS.lookup(name)
        if importlib.util.find_spec(tracker.module) is None:
            raise ConfigError(f"--report-to {name} needs {tracker.package}, which is not installed; "
                              f"pip install -e \".[{name}]\" (or pip install {tracker.package})")
    if "mlflow" in (cfg.report_to or ()):
        uri = mlflow_uri(cfg.run_dir)
        if uri.split(":", 1)[0].split("+")[0] in ("sqlite", "postgresql", "mysql", "mssql") and \
                importlib.util.find_spec("sqlalchemy") is None:
            raise ConfigError(f"MLFLOW_TRACKING_URI={uri} is a database store, which mlflow-skinny lacks; "
                              "pip install mlflow, or unset MLFLOW_TRACKING_URI for a file store in the run folder")


def close_open_runs(cfg) -> None:
    """Before a cell trains: close a tracker run that an earlier cell's trainer left open in this process.

    With the inline executor one process trains cell after cell: W&B's callback never finishes its run, and
    MLflow's stays open when training raised; without this the callbacks would log this cell into that run.
    """
    if not cfg.report_to:
        return
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].run.finish()
    if "mlflow" in sys.modules and sys.modules["mlflow"].active_run() is not None:
        sys.modules["mlflow"].end_run()


def trainer_report_to(cfg, cell_dir: Path | None = None) -> list[str]:
    """SFTConfig's ``report_to``: the --report-to trackers, with their destinations set for the cell in
    ``cell_dir`` (so that the trainer's tracker runs are that cell's runs)."""
    names = list(cfg.report_to or ())
    if names:
        run_dir = Path(cfg.run_dir).resolve()
        key = Path(os.path.relpath(Path(cell_dir).resolve(), run_dir)).as_posix() if cell_dir is not None else None
        for name in names:
            apply_env(TRACKERS.lookup(name).env(run_dir, key))
        # The callback creates the experiment through mlflow's fluent API, which logs an INFO line about it.
        logging.getLogger("mlflow.tracking.fluent").setLevel(logging.WARNING)
    return names


def cell_log(run_dir: Path, rec: dict) -> CellLog:
    """One record from harness.records.load.load_records, as params, metrics and artifacts."""
    cell = Path(rec["dir"])
    status = rec["status"]
    metrics: dict[str, float] = {}
    m = rec.get("metrics") or {}
    for name, q in m.get("quality", {}).items():
        metrics.update({name: q["value"], f"{name}_ci_low": q["ci_low"], f"{name}_ci_high": q["ci_high"]})
    metrics.update(flatten(m.get("measurements", {})))
    metrics = {k: float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    artifacts = tuple(p for p in (Path(run_dir) / "report.html", cell / "predictions.jsonl") if p.is_file())
    return CellLog(key=Path(os.path.relpath(cell, run_dir)).as_posix(), status=status["status"],
                   status_sha=sha256_file(cell / "status.json"),
                   params={k: _param(v) for k, v in flatten(rec["config"]).items()},
                   metrics=metrics, artifacts=artifacts, message=status.get("message", ""))


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay whole."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _param(v):
    """A param value every tracker takes: scalars as they are, lists and mappings as JSON, None as text."""
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    return v if isinstance(v, (int, float, str, bool)) else str(v)


def log_run(cfg, run_dir: Path, records: list[dict]) -> None:
    """After the reports are written: log each cell to every --report-to tracker, once per cell state."""
    run_dir = Path(run_dir)
    ledger_path = tracker_dir(run_dir) / "logged.json"
    ledger = read_json(ledger_path) if ledger_path.is_file() else {}
    cells = [cell_log(run_dir, rec) for rec in records]
    for name in cfg.report_to or ():
        tracker = TRACKERS.lookup(name)
        where = tracker.destination(run_dir)
        seen = ledger.setdefault(where, {})
        todo = [c for c in cells if seen.get(c.key) != c.status_sha]

        def done(cell: CellLog, seen=seen):
            seen[cell.key] = cell.status_sha
            atomic_write_json(ledger_path, ledger)

        try:
            tracker.log(run_dir, todo, done)
        except Exception as e:  # noqa: BLE001  (a tracker's many failure types end the same way)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise TrackerError(f"cannot log to {where}: {first}; the results are in {run_dir}, so rerun the same "
                               "command to log them once the tracker works") from None
        console.print(f"{name}: logged {len(todo)} cell(s) to {where}"
                      + (f" ({len(cells) - len(todo)} already there)" if len(todo) < len(cells) else ""))
