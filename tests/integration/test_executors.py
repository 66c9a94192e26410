"""Cells as isolated units: a child killed by SIGKILL, and a cell over its memory cap (test_executor_agreement.py
has the executors agreeing)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("executors")]  # its session fixture runs once

SMALL = ["--model", "tiny-llama", "--tasks", "cnn", "--train-limit", "8", "--eval-limit", "4",
         "--max-new-tokens", "8", "--bootstrap", "100", "--executor", "process"]


def status(run: Path, task: str, method: str) -> dict:
    return json.loads((run / task / method / "status.json").read_text())


def test_child_killed_mid_training_is_recorded_and_only_it_is_redone(tmp_path, tiny_model_dir):
    """SIGKILL the lora cell's own process while it trains: that cell fails as killed, and the base cell planned
    after it still runs."""
    # Six steps: the kill lands as the first step's line is read, with five still to run (each takes a good part of
    # a second here), so mid-training; and the redo below trains the same six again.
    args = [sys.executable, str(ROOT / "run_matrix.py"), *SMALL, "--train-limit", "24", "--epochs", "1",
            "--methods", "lora,base", "--out", str(tmp_path), "--run-name", "k"]
    env = {**os.environ, "HARNESS_PROGRESS": "plain"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "k"
    env_json = run / "cnn" / "lora" / "env.json"
    deadline = time.time() + 300
    pid = None
    for line in proc.stderr:  # wait for the lora cell to report a training step
        if pid is None and env_json.exists():
            pid = json.loads(env_json.read_text())["pid"]
        if pid and "[cnn x lora] train lora: step" in line:
            os.kill(pid, signal.SIGKILL)
            break
        assert time.time() < deadline, "the lora cell never started training"
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 1, rest[-2000:]
    killed = status(run, "cnn", "lora")
    assert killed["status"] == "failed" and killed["error_kind"] == "killed"
    assert "SIGKILL" in killed["message"] and "out-of-memory killer" in killed["message"]
    assert isinstance(killed["stderr_tail"], list) and killed["stderr_tail"]
    assert not (run / "cnn" / "lora" / "metrics.json").exists()
    assert status(run, "cnn", "base")["status"] == "ok"
    assert "1 killed" in rest.strip().splitlines()[-1]

    again = run_cli(*SMALL, "--train-limit", "24", "--epochs", "1", "--methods", "lora,base",
                    "--out", str(tmp_path), "--run-name", "k")
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("already complete, skipped") == 1
    assert "cnn x lora: complete (failed), redoing" in again.stderr
    assert status(run, "cnn", "lora")["status"] == "ok"


@pytest.fixture(scope="session")
def wide_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny Llama with a 65,536-wide MLP: inference stays small, while training keeps the MLP's
    activations for the backward pass (about 1,200 tokens x 65,536 x 4 bytes = 0.3 GiB per tensor, several per
    layer), so a lora cell needs gigabytes and a base cell well under one."""
    import shutil

    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("wide") / "wide-llama"
    shutil.copytree(tiny_model_dir, folder)
    config = AutoConfig.from_pretrained(folder)
    config.intermediate_size = 65536
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_cell_over_its_memory_limit_fails_as_oom_and_the_rest_complete(tmp_path, wide_model_dir):
    wide = [*SMALL[2:], "--model", str(wide_model_dir)]
    done = run_cli(*wide, "--methods", "base,lora", "--cell-memory-limit", "1500MiB",
                   "--out", str(tmp_path), "--run-name", "m")
    assert done.returncode == 1, done.stderr[-2000:]
    run = tmp_path / "m"
    over = status(run, "cnn", "lora")
    assert over["status"] == "failed" and over["error_kind"] == "oom", over
    assert "--cell-memory-limit 1500MiB" in over["message"]
    assert status(run, "cnn", "base")["status"] == "ok"
    again = run_cli(*wide, "--methods", "base,lora", "--out", str(tmp_path), "--run-name", "m")
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("already complete, skipped") == 1
    assert status(run, "cnn", "lora")["status"] == "ok"
