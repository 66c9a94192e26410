"""--report-to: the install hint for a missing tracker, and where the trainer's callbacks are pointed."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.errors import ConfigError
from harness.integrations import tracker_backends, trackers
from harness.spec.config import RunConfig

REAL_FIND_SPEC = importlib.util.find_spec


@pytest.fixture
def env(monkeypatch):
    """A private os.environ and a clean record of what trackers set, restored after the test."""
    monkeypatch.setattr(os, "environ", dict(os.environ))
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TAGS", "WANDB_PROJECT", "WANDB_DIR",
                "TENSORBOARD_LOGGING_DIR", "WANDB_RUN_ID", "MLFLOW_ALLOW_FILE_STORE"):
        os.environ.pop(key, None)
    monkeypatch.setattr(tracker_backends, "_OURS", {})
    return os.environ


@pytest.mark.parametrize("tracker, package", [("mlflow", "mlflow-skinny"), ("wandb", "wandb"),
                                              ("tensorboard", "tensorboard")])
def test_missing_tracker_is_one_line_with_the_install_hint(monkeypatch, capsys, tmp_path, tracker, package):
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == tracker else REAL_FIND_SPEC(name, *a))
    assert main(["--report-to", tracker, "--model", "tiny-llama", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --report-to {tracker} needs {package}, which is not installed; "
                   f"pip install -e \".[{tracker}]\" (or pip install {package})"]
    assert not list(tmp_path.glob("*/cnn"))  # refused before any cell folder was made


def test_a_database_store_without_sqlalchemy_is_refused_up_front(monkeypatch, env, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sqlalchemy" else REAL_FIND_SPEC(name, *a))
    env["MLFLOW_TRACKING_URI"] = "sqlite:///mlflow.db"
    with pytest.raises(ConfigError, match="is a database store, which mlflow-skinny lacks; pip install mlflow"):
        trackers.check_trackers(RunConfig(report_to=("mlflow",), out=str(tmp_path)))


def test_trainer_callbacks_point_at_the_cell_run(env, tmp_path):
    cfg = RunConfig(report_to=("mlflow", "wandb", "tensorboard"), out=str(tmp_path), run_name="r1")
    run_dir = (tmp_path / "r1").resolve()
    assert trackers.trainer_report_to(cfg, tmp_path / "r1" / "cnn" / "lora") == ["mlflow", "wandb", "tensorboard"]
    assert env["MLFLOW_TRACKING_URI"] == (run_dir / "trackers" / "mlruns").as_uri()
    assert env["MLFLOW_ALLOW_FILE_STORE"] == "true"  # mlflow-skinny's file store refuses to open otherwise
    assert env["MLFLOW_EXPERIMENT_NAME"] == "r1"
    assert json.loads(env["MLFLOW_TAGS"]) == {"harness.run": "r1", "harness.cell": "cnn/lora"}
    assert env["WANDB_RUN_GROUP"] == "r1" and env["WANDB_NAME"] == "cnn/lora"
    assert env["WANDB_RUN_ID"] == tracker_backends.cell_id(run_dir, "cnn/lora") and len(env["WANDB_RUN_ID"]) == 16
    assert Path(env["TENSORBOARD_LOGGING_DIR"]) == run_dir / "trackers" / "tensorboard" / "cnn" / "lora"

    # the next cell and the next run in the same process (inline executor) replace what was set for this one
    cfg2 = RunConfig(report_to=("mlflow", "tensorboard"), out=str(tmp_path), run_name="r2")
    trackers.trainer_report_to(cfg2, tmp_path / "r2" / "guanaco" / "base")
    assert env["MLFLOW_EXPERIMENT_NAME"] == "r2" and "r2" in env["MLFLOW_TRACKING_URI"]
    assert Path(env["TENSORBOARD_LOGGING_DIR"]).parts[-2:] == ("guanaco", "base")


def test_the_users_own_destinations_are_kept(env, tmp_path):
    env.update(MLFLOW_TRACKING_URI="http://tracking.example:5000", WANDB_PROJECT="mine")
    cfg = RunConfig(report_to=("mlflow", "wandb"), out=str(tmp_path), run_name="r1")
    trackers.trainer_report_to(cfg)
    assert env["MLFLOW_TRACKING_URI"] == "http://tracking.example:5000" and env["WANDB_PROJECT"] == "mine"
    assert "MLFLOW_ALLOW_FILE_STORE" not in env  # only a file store needs the opt-in


def test_no_report_to_sets_nothing(env, tmp_path):
    before = dict(env)
    assert trackers.trainer_report_to(RunConfig(out=str(tmp_path))) == []
    assert dict(env) == before


def test_a_cell_record_becomes_params_metrics_and_artifacts(tmp_path):
    run_dir = tmp_path / "run"
    cell = run_dir / "cnn" / "lora"
    cell.mkdir(parents=True)
    (cell / "predictions.jsonl").write_text("{}\n")
    (cell / "status.json").write_text('{"status": "ok"}')
    (run_dir / "report.html").write_text("<html></html>")
    rec = {"dir": str(cell), "status": {"status": "ok"},
           "config": {"task": "cnn", "hyperparameters": {"lr": 0.001, "seed": 0}, "run": {"tasks": ["cnn"],
                                                                                         "lr": None}},
           "metrics": {"quality": {"rougeL": {"value": 0.25, "ci_low": 0.2, "ci_high": 0.3, "n": 4}},
                       "measurements": {"memory": {"peak_bytes": 1024, "cuda": None},
                                        "timing": {"train_s": 2.5, "train_tokens_per_s": float("nan")},
                                        "precision": {"weight_dtype": "float32"}}}}
    log = trackers.cell_log(run_dir, rec)
    assert log.key == "cnn/lora" and log.status == "ok" and len(log.status_sha) == 64
    assert log.params == {"task": "cnn", "hyperparameters.lr": 0.001, "hyperparameters.seed": 0,
                          "run.tasks": '["cnn"]', "run.lr": "None"}
    # numbers only: None, NaN and text measurements are left out rather than logged as zeros
    assert log.metrics == {"rougeL": 0.25, "rougeL_ci_low": 0.2, "rougeL_ci_high": 0.3,
                           "memory.peak_bytes": 1024.0, "timing.train_s": 2.5}
    assert log.artifacts == (run_dir / "report.html", cell / "predictions.jsonl")


def test_a_failed_cell_is_logged_with_its_message_and_no_metrics(tmp_path):
    cell = tmp_path / "run" / "fever" / "qlora"
    cell.mkdir(parents=True)
    (cell / "status.json").write_text('{"status": "failed"}')
    rec = {"dir": str(cell), "config": {"task": "fever"},
           "status": {"status": "failed", "error_kind": "oom", "message": "CUDA out of memory"}}
    log = trackers.cell_log(tmp_path / "run", rec)
    assert (log.key, log.status, log.message) == ("fever/qlora", "failed", "CUDA out of memory")
    assert log.metrics == {} and log.artifacts == ()  # no report.html yet, no predictions
