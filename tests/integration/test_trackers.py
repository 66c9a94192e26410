"""--report-to for real: the tiny matrix logged to MLflow (always; it is in the test extra), TensorBoard and W&B
(offline) when installed, then read back and checked against the records on disk."""

import hashlib
import importlib.util
import json

import pytest

from tests.conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("trackers")]  # its session fixture runs once

pytest.importorskip("mlflow")
OPTIONAL = [t for t in ("tensorboard", "wandb") if importlib.util.find_spec(t) is not None]
ARGS = ("--model", "tiny-llama", "--tasks", "cnn", "--methods", "base,lora", "--train-limit", "8", "--eval-limit",
        "4", "--max-new-tokens", "8", "--bootstrap", "100", "--report-to", ",".join(["mlflow", *OPTIONAL]))


@pytest.fixture(scope="session")
def tracked(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        # The default stores inside the run folder are under test: none of the machine's tracker settings apply.
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_DIR", "WANDB_PROJECT", "WANDB_RUN_ID"):
            mp.delenv(key, raising=False)
        mp.setenv("WANDB_MODE", "offline")
        done = run_cli(*ARGS, "--out", str(out), "--run-name", "tracked")
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for reading back mlflow-skinny's file store, as the harness does
        yield done, out / "tracked"


def client(run):
    from mlflow import MlflowClient

    return MlflowClient((run / "trackers" / "mlruns").resolve().as_uri())


def records(run, method):
    cell = run / "cnn" / method
    return (json.loads((cell / "metrics.json").read_text()), json.loads((cell / "config.json").read_text()),
            json.loads((cell / "train.json").read_text()))


def cell_runs(run):
    c = client(run)
    exp = c.get_experiment_by_name("tracked")
    assert exp is not None, "one MLflow experiment per run name"
    runs = [r for r in c.search_runs([exp.experiment_id]) if "harness.status" in r.data.tags]
    return c, {r.info.run_name: r for r in runs}


def test_each_cell_is_one_mlflow_run_with_params_metrics_and_artifacts(tracked, tmp_path):
    done, run = tracked
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mlflow: logged 2 cell(s) to mlflow file://" in done.stderr
    c, runs = cell_runs(run)
    assert sorted(runs) == ["cnn/base", "cnn/lora"]
    for method in ("base", "lora"):
        r = runs[f"cnn/{method}"]
        metrics, config, _ = records(run, method)
        assert r.info.status == "FINISHED" and r.data.tags["harness.status"] == "ok"
        for name, q in metrics["quality"].items():
            assert r.data.metrics[name] == q["value"]
            assert r.data.metrics[f"{name}_ci_low"] == q["ci_low"]
            assert r.data.metrics[f"{name}_ci_high"] == q["ci_high"]
        meas = metrics["measurements"]
        assert r.data.metrics["memory.peak_bytes"] == meas["memory"]["peak_bytes"]
        assert r.data.metrics["timing.eval_s"] == meas["timing"]["eval_s"]
        assert r.data.metrics["timing.generation_tokens_per_s"] == meas["timing"]["generation_tokens_per_s"]
        params = r.data.params
        assert params["task"] == "cnn" and params["method.name"] == method
        assert params["config_hash"] == config["config_hash"]
        assert params["hyperparameters.max_new_tokens"] == "8" and params["run.model"] == "tiny-llama"
        for name, local in (("report.html", run / "report.html"),
                            ("predictions.jsonl", run / "cnn" / method / "predictions.jsonl")):
            got = c.download_artifacts(r.info.run_id, name, str(tmp_path))
            assert hashlib.sha256(open(got, "rb").read()).digest() == hashlib.sha256(local.read_bytes()).digest()
    assert runs["cnn/lora"].data.metrics["timing.train_tokens_per_s"] > 0


def test_the_trainer_loss_curve_is_in_the_cell_run(tracked):
    """transformers' MLflow callback logs the loss into the same run that holds the cell's metrics."""
    _, run = tracked
    c, runs = cell_runs(run)
    _, _, train = records(run, "lora")
    history = c.get_metric_history(runs["cnn/lora"].info.run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
        [(p["step"], pytest.approx(p["loss"])) for p in train["loss_curve"]]
    assert not c.get_metric_history(runs["cnn/base"].info.run_id, "loss")  # base does not train


def test_resuming_logs_nothing_twice(tracked):
    _, run = tracked
    done = run_cli(*ARGS, "--out", str(run.parent), "--run-name", "tracked")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mlflow: logged 0 cell(s)" in done.stderr and "(2 already there)" in done.stderr
    _, runs = cell_runs(run)
    assert len(runs) == 2


@pytest.mark.skipif("tensorboard" not in OPTIONAL, reason="tensorboard is not installed (pip install tensorboard)")
def test_tensorboard_event_files_hold_the_loss_and_the_metrics(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run = tracked
    for method in ("base", "lora"):
        folder = run / "trackers" / "tensorboard" / "cnn" / method
        assert list(folder.glob("events.out.tfevents.*"))
        events = EventAccumulator(str(folder))
        events.Reload()
        metrics, _, train = records(run, method)
        for name, q in metrics["quality"].items():
            assert events.Scalars(name)[-1].value == pytest.approx(q["value"], abs=1e-6)  # stored as float32
        if method == "lora":
            loss = [(s.step, s.value) for s in events.Scalars("train/loss")]
            assert loss == [(p["step"], pytest.approx(p["loss"], rel=1e-6)) for p in train["loss_curve"]]


@pytest.mark.skipif("wandb" not in OPTIONAL, reason="wandb is not installed (pip install wandb)")
def test_wandb_offline_run_folders(tracked):
    from harness.integrations.tracker_backends import cell_id

    _, run = tracked
    for method, trainer_runs in (("base", 0), ("lora", 1)):
        cell = run / "cnn" / method
        # the cell's run resumes the id the trainer's run was opened with, so `wandb sync` makes one run of both
        folders = sorted((run / "trackers" / "wandb").glob(f"offline-run-*-{cell_id(run, f'cnn/{method}')}"))
        assert len(folders) == 1 + trainer_runs, folders
        logged = folders[-1]
        assert (logged / "files" / "predictions.jsonl").read_bytes() == (cell / "predictions.jsonl").read_bytes()
        assert (logged / "files" / "report.html").read_bytes() == (run / "report.html").read_bytes()
        data = next(logged.glob("run-*.wandb")).read_bytes()
        metrics, _, _ = records(run, method)
        for name in metrics["quality"]:
            assert name.encode() in data and f"{name}_ci_high".encode() in data
        assert f"cnn/{method}".encode() in data and b"tracked" in data  # run name and group
