"""Results you can trust: determinism, resume after SIGKILL, failure isolation, corrupted records."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from tests.conftest import ROOT, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("reliability")]  # its session fixture runs once

SMALL = ["--model", "tiny-llama", "--tasks", "cnn", "--train-limit", "8", "--eval-limit", "4",
         "--max-new-tokens", "8", "--bootstrap", "100"]
# Tests that monkeypatch the cell code run cells in this process; the default executor would use a child.
INLINE = ["--executor", "inline"]


def quality(run: Path, task: str, method: str) -> str:
    m = json.loads((run / task / method / "metrics.json").read_text())
    return json.dumps(m["quality"], sort_keys=True)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, tiny_model_dir):
    """An uninterrupted run of base, lora and full, the yardstick for determinism and resume."""
    out = tmp_path_factory.mktemp("ref")
    done = run_cli(*SMALL, "--methods", "base,lora,full", "--out", str(out), "--run-name", "ref")
    assert done.returncode == 0, done.stderr[-2000:]
    return out / "ref"


def test_same_command_twice_gives_byte_identical_quality(reference_run, tmp_path):
    done = run_cli(*SMALL, "--methods", "base,lora,full", "--out", str(tmp_path), "--run-name", "again")
    assert done.returncode == 0
    for method in ("base", "lora", "full"):
        assert quality(tmp_path / "again", "cnn", method) == quality(reference_run, "cnn", method)
        a = (tmp_path / "again" / "cnn" / method / "predictions.jsonl").read_bytes()
        assert a == (reference_run / "cnn" / method / "predictions.jsonl").read_bytes()
    cfg = json.loads((reference_run / "cnn" / "lora" / "config.json").read_text())
    again = json.loads((tmp_path / "again" / "cnn" / "lora" / "config.json").read_text())
    assert cfg["config_hash"] == again["config_hash"]
    data = json.loads((reference_run / "cnn" / "lora" / "data.json").read_text())
    assert data["train"]["source"] == "embedded train" and len(data["test"]["sha256"]) == 64
    env = json.loads((reference_run / "cnn" / "lora" / "env.json").read_text())
    assert set(env["git"]) == {"commit", "dirty"} and env["python"] and env["packages"]["datasets"]


def test_resume_after_sigkill(reference_run, tmp_path):
    """Kill the matrix with SIGKILL while the second cell runs, rerun it, and get the uninterrupted result."""
    args = [sys.executable, str(ROOT / "run_matrix.py"), *SMALL, "--methods", "base,lora,full",
            "--out", str(tmp_path), "--run-name", "r"]
    env = {**os.environ, "HARNESS_PROGRESS": "0"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "r"
    deadline = time.time() + 300
    while time.time() < deadline and not ((run / "cnn" / "lora" / "config.json").exists()
                                          and (run / "cnn" / "base" / "status.json").exists()):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / "cnn" / "base" / "status.json").exists()
    assert not (run / "cnn" / "lora" / "status.json").exists(), "killed too late to test resume"
    base_before = (run / "cnn" / "base" / "metrics.json").stat().st_mtime_ns

    done = run_cli(*SMALL, "--methods", "base,lora,full", "--out", str(tmp_path), "--run-name", "r")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cnn x base: already complete, skipped" in done.stderr
    assert "cnn x lora: incomplete (no status.json (interrupted)), redoing" in done.stderr
    assert (run / "cnn" / "base" / "metrics.json").stat().st_mtime_ns == base_before
    for method in ("base", "lora", "full"):
        assert quality(run, "cnn", method) == quality(reference_run, "cnn", method)
        assert not [p for p in (run / "cnn" / method).iterdir() if p.name.startswith(".")]
    assert sorted(p.name for p in (run / "cnn").iterdir()) == ["base", "full", "lora"]


def test_corrupted_record_is_reported_and_redone(reference_run, tmp_path):
    run = tmp_path / "ref"
    shutil.copytree(reference_run, run)
    (run / "cnn" / "lora" / "predictions.jsonl").write_text('{"truncated": ')
    done = run_cli(*SMALL, "--methods", "base,lora,full", "--out", str(tmp_path), "--run-name", "ref")
    assert done.returncode == 0
    assert "cnn x lora: corrupt (predictions.jsonl does not match its checksum), redoing" in done.stderr
    assert quality(run, "cnn", "lora") == quality(reference_run, "cnn", "lora")


def test_injected_failure_is_isolated(monkeypatch, tmp_path, capsys, tiny_model_dir):
    import harness.cell.training as training

    real = training.train

    def flaky(model, tok, spec, *a, **kw):
        if spec.name == "full":
            raise RuntimeError("injected failure")
        return real(model, tok, spec, *a, **kw)

    monkeypatch.setattr(training, "train", flaky)
    code = main([*SMALL, *INLINE, "--methods", "base,full,lora", "--out", str(tmp_path), "--run-name", "f"])
    err = capsys.readouterr().err
    assert code == 1
    status = json.loads((tmp_path / "f" / "cnn" / "full" / "status.json").read_text())
    assert status["status"] == "failed" and status["error_kind"] == "error"
    assert status["message"] == "RuntimeError: injected failure"
    for ok in ("base", "lora"):
        assert json.loads((tmp_path / "f" / "cnn" / ok / "status.json").read_text())["status"] == "ok"
    assert "failed: error" in err and "  full: failed: RuntimeError: injected failure" in err  # the table
    assert err.strip().splitlines()[-1] == ("2 of 3 cells ok, 1 failed (1 error: cnn x full: RuntimeError: "
                                            "injected failure)")
    # the rerun retries only the failed cell
    monkeypatch.setattr(training, "train", real)
    assert main([*SMALL, *INLINE, "--methods", "base,full,lora", "--out", str(tmp_path), "--run-name", "f"]) == 0
    assert capsys.readouterr().err.count("already complete, skipped") == 2


def test_out_of_memory_is_recorded_memory_freed_and_the_matrix_goes_on(monkeypatch, tmp_path, capsys):
    import torch

    import harness.cell.measure as measure
    import harness.cell.training as training

    freed = []
    monkeypatch.setattr(measure, "free_memory", lambda device: freed.append(device))

    def oom(*a, **kw):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(training, "train", oom)
    code = main([*SMALL, *INLINE, "--methods", "full,base", "--out", str(tmp_path), "--run-name", "o"])
    assert code == 1 and freed == ["cpu"]
    status = json.loads((tmp_path / "o" / "cnn" / "full" / "status.json").read_text())
    assert status["error_kind"] == "oom" and "Tried to allocate" in status["message"]
    assert json.loads((tmp_path / "o" / "cnn" / "base" / "status.json").read_text())["status"] == "ok"
    assert "1 failed (1 oom" in capsys.readouterr().err.strip().splitlines()[-1]


def test_nan_loss_stops_training_and_names_the_step(tiny_model_dir, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "nan-model"
    shutil.copytree(tiny_model_dir, bad)
    weights = load_file(bad / "model.safetensors")
    key = next(k for k in weights if "layers.0.mlp.up_proj" in k)
    weights[key][0, 0] = float("nan")
    save_file(weights, bad / "model.safetensors", metadata={"format": "pt"})
    code = main(["--model", str(bad), "--tasks", "cnn", "--methods", "lora,base", "--train-limit", "8",
                 "--eval-limit", "2", "--max-new-tokens", "4", "--bootstrap", "50", "--out", str(tmp_path),
                 "--run-name", "n"])
    assert code == 1
    status = json.loads((tmp_path / "n" / "cnn" / "lora" / "status.json").read_text())
    assert status["error_kind"] == "nan_loss" and status["step"] == 1
    assert status["message"] == "training loss became nan at step 1; lower --lr or check the data"
    assert json.loads((tmp_path / "n" / "cnn" / "base" / "status.json").read_text())["status"] == "ok"
    assert torch.isnan(weights[key]).any()


def test_method_that_needs_cuda_is_skipped_with_its_reason(tmp_path, capsys):
    code = main([*SMALL, "--methods", "base,lora:requires_cuda=true", "--out", str(tmp_path), "--run-name", "c"])
    status = json.loads((tmp_path / "c" / "cnn" / "lora_requires_cuda=true" / "status.json").read_text())
    assert status["status"] == "skipped" and status["error_kind"] == "needs_cuda"
    assert "needs a CUDA device" in status["message"]
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("1 of 2 cells ok, 1 skipped (cnn x lora:requires_cuda=true: method")
    assert code == 1  # an incomplete matrix is not a clean pass


def test_bad_input_keeps_results_already_computed(reference_run, tmp_path, capsys):
    run = tmp_path / "ref"
    shutil.copytree(reference_run, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for argv in (["--methods", "base,nope"], ["--methods", "full:bits=8"], ["--train-limit", "-1"],
                 ["--data", "cnn=/missing.jsonl"], ["--eval-limit", "0"]):
        assert main([*SMALL, "--methods", "base,lora,full", *argv, "--out", str(tmp_path),
                     "--run-name", "ref"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.gpu
def test_cuda_out_of_memory_frees_memory_and_the_next_cell_runs(monkeypatch, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from harness.spec.task import get_task

    task = get_task("cnn")
    real = type(task).evaluate

    def hog(self, model, rows, ctx, stats):
        if getattr(model, "peft_config", None) is None and model.config.num_hidden_layers == 2 and rows[0]:
            hog.count += 1
            if hog.count == 1:
                torch.empty(10**13, dtype=torch.uint8, device="cuda")  # far more than any GPU holds
        return real(self, model, rows, ctx, stats)

    hog.count = 0
    monkeypatch.setattr(type(task), "evaluate", hog)
    code = main([*SMALL, *INLINE, "--methods", "base,lora", "--device", "cuda", "--out", str(tmp_path),
                 "--run-name", "g"])
    assert code == 1
    assert json.loads((tmp_path / "g" / "cnn" / "base" / "status.json").read_text())["error_kind"] == "oom"
    assert json.loads((tmp_path / "g" / "cnn" / "lora" / "status.json").read_text())["status"] == "ok"
    assert torch.cuda.memory_allocated() < 2**30
