"""The trackers behind --report-to, one class each, in a registry filled by a decorator
(harness/integrations/trackers.py drives them).

A tracker says which environment variables point transformers' callback at a cell's run (``env``), where its
runs go (``destination``), and how it logs a cell's params, metrics and artifacts (``log``). The tracker
packages are imported inside ``log`` only, so this module loads with none of them installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.registry import Registry

TRACKERS = Registry("tracker")
WANDB_PROJECT = "llm-finetune-harness"  # W&B project when WANDB_PROJECT is unset
_OURS: dict[str, str] = {}  # environment values this module set, so a later cell or run may replace them


@dataclass(frozen=True)
class CellLog:
    """What one cell sends to a tracker, from its records alone."""

    key: str  # the cell folder relative to the run, e.g. cnn/lora: the tracker run's name
    status: str  # ok, failed or skipped
    status_sha: str  # sha256 of status.json, which holds the checksums of every other record
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    artifacts: tuple = ()
    message: str = ""


class Tracker:
    name = ""
    package = ""  # the PyPI package behind the extra, for the install hint
    module = ""  # what must be importable

    def env(self, run_dir: Path, key: str | None) -> dict[str, str]:
        """Environment variables through which transformers' callback logs the cell's training."""
        return {}

    def destination(self, run_dir: Path) -> str:
        """Where the runs go, in words; also the key of what has been logged there."""
        raise NotImplementedError

    def log(self, run_dir: Path, cells: list[CellLog], done) -> None:
        """Log each cell as one run; call ``done(cell)`` after each."""
        raise NotImplementedError


def register_tracker(cls):
    TRACKERS.add(cls.name, cls())
    return cls


def tracker_dir(run_dir: Path) -> Path:
    return Path(run_dir).resolve() / "trackers"


def user_env(key: str) -> str | None:
    """The user's own setting of an environment variable; None when unset or when this module set it."""
    value = os.environ.get(key)
    return None if value is None or _OURS.get(key) == value else value


def apply_env(env: dict[str, str | None]) -> None:
    for key, value in env.items():
        if value is None:
            if key in _OURS and os.environ.get(key) == _OURS.pop(key):
                del os.environ[key]
            continue
        if user_env(key) is None:
            os.environ[key] = _OURS[key] = value


def cell_id(run_dir: Path, key: str) -> str:
    """A stable run id per cell (W&B ids are at most 64 characters of [a-z0-9])."""
    return hashlib.sha256(f"{Path(run_dir).resolve()}/{key}".encode()).hexdigest()[:16]


def mlflow_uri(run_dir: Path) -> str:
    """MLFLOW_TRACKING_URI when set, else a file store inside the run folder.

    mlflow-skinny (the extra) has no SQL store; its file store is in maintenance mode and refuses to open
    unless MLFLOW_ALLOW_FILE_STORE is true, which ``_mlflow_env`` sets for file URIs only.
    """
    return user_env("MLFLOW_TRACKING_URI") or (tracker_dir(run_dir) / "mlruns").as_uri()


def _mlflow_env(uri: str) -> dict[str, str | None]:
    is_file = uri.startswith("file:") or "://" not in uri
    return {"MLFLOW_TRACKING_URI": uri, "MLFLOW_ALLOW_FILE_STORE": "true" if is_file else None}


@register_tracker
class MLflow(Tracker):
    name, package, module = "mlflow", "mlflow-skinny", "mlflow"

    def env(self, run_dir, key):
        tags = {"harness.run": Path(run_dir).name, **({"harness.cell": key} if key else {})}
        return {**_mlflow_env(mlflow_uri(run_dir)), "MLFLOW_EXPERIMENT_NAME": Path(run_dir).name,
                "MLFLOW_TAGS": json.dumps(tags)}

    def destination(self, run_dir):
        return f"mlflow {mlflow_uri(run_dir)} experiment {Path(run_dir).name}"

    def log(self, run_dir, cells, done):
        import time

        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        uri = mlflow_uri(run_dir)
        apply_env(_mlflow_env(uri))
        client = MlflowClient(uri)
        name = Path(run_dir).name
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else client.create_experiment(name)
        now = int(time.time() * 1000)
        for cell in cells:
            run_id = self._trainer_run(client, exp_id, cell.key)
            if run_id is None:
                run_id = client.create_run(exp_id, run_name=cell.key).info.run_id
            logged = client.get_run(run_id).data.params  # the trainer's own params (TrainingArguments)
            params = [Param(k if k not in logged else f"harness.{k}", str(v)[:MAX_PARAM_VAL_LENGTH])
                      for k, v in cell.params.items() if logged.get(k) != str(v)]
            metrics = [Metric(k, v, now, 0) for k, v in cell.metrics.items()]
            tags = [RunTag("mlflow.runName", cell.key), RunTag("harness.cell", cell.key),
                    RunTag("harness.run", name), RunTag("harness.status", cell.status),
                    RunTag("harness.status_sha", cell.status_sha)]
            if cell.message:
                tags.append(RunTag("harness.message", cell.message[:MAX_PARAM_VAL_LENGTH]))
            # log_batch takes at most 100 params and 1000 metrics per call (mlflow.utils.validation)
            for i in range(0, max(len(params), len(metrics), 1), 100):
                client.log_batch(run_id, metrics=metrics[i:i + 100], params=params[i:i + 100],
                                 tags=tags if i == 0 else [])
            for path in cell.artifacts:
                client.log_artifact(run_id, str(path))
            client.set_terminated(run_id, "FAILED" if cell.status == "failed" else "FINISHED")
            done(cell)

    @staticmethod
    def _trainer_run(client, exp_id: str, key: str) -> str | None:
        """The newest run the trainer's callback opened for this cell and log_run has not completed."""
        runs = client.search_runs([exp_id], filter_string=f"tags.`harness.cell` = '{key}'",
                                  order_by=["attributes.start_time DESC"], max_results=20)
        return next((r.info.run_id for r in runs if "harness.status" not in r.data.tags), None)


@register_tracker
class Wandb(Tracker):
    name, package, module = "wandb", "wandb", "wandb"

    def _project(self) -> str:
        return user_env("WANDB_PROJECT") or WANDB_PROJECT

    def env(self, run_dir, key):
        # WANDB_SILENT: the harness prints where the runs went; W&B's banner would repeat in every cell.
        env = {"WANDB_PROJECT": self._project(), "WANDB_RUN_GROUP": Path(run_dir).name,
               "WANDB_DIR": user_env("WANDB_DIR") or str(tracker_dir(run_dir)),
               "WANDB_SILENT": user_env("WANDB_SILENT") or "true"}
        if key:  # the trainer opens the run with the id that log_run resumes later: both write one run
            env.update(WANDB_NAME=key, WANDB_RUN_ID=cell_id(run_dir, key), WANDB_RESUME="allow")
        return env

    def destination(self, run_dir):
        return f"wandb project {self._project()} group {Path(run_dir).name} ({os.environ.get('WANDB_MODE', 'online')})"

    def log(self, run_dir, cells, done):
        import wandb

        folder = user_env("WANDB_DIR") or str(tracker_dir(run_dir))
        Path(folder).mkdir(parents=True, exist_ok=True)
        if wandb.run is not None:  # the last trainer's run, still open in this process (inline executor)
            wandb.run.finish()
        for cell in cells:
            run = wandb.init(project=self._project(), group=Path(run_dir).name, name=cell.key, job_type="cell",
                             id=cell_id(run_dir, cell.key), resume="allow", dir=folder, config=cell.params,
                             tags=[cell.status], reinit="create_new", settings=wandb.Settings(silent=True))
            run.log(cell.metrics)
            for path in cell.artifacts:  # files in the run's folder are uploaded when the run finishes
                shutil.copy(path, Path(run.dir) / Path(path).name)
            run.finish(exit_code=1 if cell.status == "failed" else 0)
            done(cell)


@register_tracker
class TensorBoard(Tracker):
    name, package, module = "tensorboard", "tensorboard", "tensorboard"

    def _dir(self, run_dir: Path, key: str | None) -> Path:
        return tracker_dir(run_dir) / "tensorboard" / (key or "_trainer")

    def env(self, run_dir, key):
        return {"TENSORBOARD_LOGGING_DIR": str(self._dir(run_dir, key))}

    def destination(self, run_dir):
        return f"tensorboard {tracker_dir(run_dir) / 'tensorboard'}"

    def log(self, run_dir, cells, done):
        from torch.utils.tensorboard import SummaryWriter

        for cell in cells:
            with SummaryWriter(log_dir=str(self._dir(run_dir, cell.key))) as writer:
                quality = {k: v for k, v in cell.metrics.items() if "." not in k}
                # run_name="." keeps the hparams in the cell's folder, not a timestamped subfolder
                writer.add_hparams(cell.params, quality, run_name=".")
                for k, v in cell.metrics.items():
                    if k not in quality:
                        writer.add_scalar(k, v, 0)
                writer.add_text("status", f"{cell.status} {cell.message}".strip())
                writer.add_text("artifacts", "\n\n".join(str(p) for p in cell.artifacts))
            done(cell)
