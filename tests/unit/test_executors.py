"""The executor seam without running a model: death records, progress lines, sizes, and Ray as an extra."""

import importlib.util
import json
import os
import signal
import subprocess
import sys

import pytest
import tomllib

from harness.core.console import PlainProgress
from harness.cell import job
from harness.core.errors import ConfigError, DataError
from harness.core.units import parse_bytes
from harness.execute.child import record_death
from harness.execute.executors import EXECUTORS
from harness.plan.matrix import plan
from harness.records.store import RAY_WORKER_ENV, CellStore
from harness.spec.config import RunConfig
from tests.cell_process import ran_apart
from tests.conftest import ROOT


@pytest.mark.parametrize(("code", "limit", "kind", "words"), [
    (-signal.SIGKILL, None, "killed", "out-of-memory killer"),
    (-signal.SIGSEGV, None, "crashed", "SIGSEGV"),
    (3, None, "crashed", "exited with code 3"),
    (-signal.SIGKILL, "8GiB", "oom", "--cell-memory-limit 8GiB"),
])
def test_a_dead_child_is_recorded_with_its_kind(tmp_path, code, limit, kind, words):
    store = CellStore(tmp_path, "cnn", "lora")
    store.dir.mkdir(parents=True)
    (store.dir / "config.json").write_text("{}")
    record_death(store, code, [f"line {i}" for i in range(50)], limit, 9 * 2**30)
    status = json.loads((store.dir / "status.json").read_text())
    assert status["status"] == "failed" and status["error_kind"] == kind and words in status["message"]
    assert status["stderr_tail"][-1] == "line 49" and len(status["stderr_tail"]) == 20
    assert store.state() == ("complete", "failed")  # a rerun sees it, and redoes it


def test_plain_progress_prints_every_tenth_or_every_30_seconds(monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_CELL", "cnn x lora")
    now = [0.0]
    p = PlainProgress("train lora", 100, clock=lambda: now[0])
    for _ in range(5):
        now[0] += 1
        p.advance(1, loss="1.000")
    now[0] += 40  # a slow step: the 30 s rhythm prints although no tenth was crossed
    p.advance(1)
    for _ in range(4):
        p.advance(1)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 2
    assert lines[0].startswith("[cnn x lora] train lora: step 6/100 (6%) loss=1.000 elapsed 45s eta")
    assert lines[1].startswith("[cnn x lora] train lora: step 10/100 (10%)")


@pytest.mark.parametrize(("text", "expected"), [("8GiB", 8 * 2**30), ("16GB", 16 * 10**9), ("512MiB", 512 * 2**20),
                                                ("1.5g", int(1.5 * 2**30))])
def test_sizes_parse(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["lots", "8XB", "-1GiB", "0"])
def test_bad_sizes_get_one_line(bad):
    with pytest.raises(ConfigError, match="is not a size; write e.g. 8GiB"):
        RunConfig(cell_memory_limit=bad)


@pytest.mark.parametrize(("kw", "words"), [
    ({"executor": "inline", "parallel": 2}, "--parallel needs separate processes"),
    ({"executor": "inline", "cell_memory_limit": "1GiB"}, "--cell-memory-limit caps a child process"),
    ({"fsdp": True}, "--num-processes N with N >= 2"),
    ({"fsdp": True, "deepspeed": "x.json", "num_processes": 2}, "choose one"),
    ({"parallel": 0}, "must be positive"),
])
def test_impossible_execution_settings_are_refused(kw, words):
    with pytest.raises(ConfigError, match=words):
        RunConfig(**kw)


def test_execution_settings_do_not_change_the_run_name():
    assert RunConfig().run_dir == RunConfig(executor="inline").run_dir == RunConfig(parallel=3).run_dir


def test_ray_without_the_extra_prints_the_install_line(monkeypatch, tmp_path, capsys):
    from harness.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    code = main(["--model", "tiny-llama", "--executor", "ray", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ['error: the ray executor needs Ray, which is not installed; '
                                 'pip install -e ".[ray]"']
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_ray_is_an_optional_extra_that_the_harness_never_imports_unasked():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("ray") for d in meta["dependencies"])
    assert any(d.startswith("ray") for d in meta["optional-dependencies"]["ray"])
    code = ("import sys, harness.cli, harness.execute.runner, harness.execute.executors, harness.cell.job; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert set(EXECUTORS) == {"inline", "process", "ray"}


def test_the_executor_tests_marks_of_a_child_or_ray_process_are_absent_from_a_cell_run_in_the_driver(
        tmp_path, monkeypatch):
    """The inline executor runs the real cell code in this process, up to env.json (the rows are then refused, so
    no model loads): the checks that test_executor_agreement.py and test_search.py make of the process and Ray
    executors' cells (tests/cell_process.py) report it, so they fail if those executors ever ran a cell in the
    driver."""
    monkeypatch.delenv(RAY_WORKER_ENV, raising=False)
    def refuse(*_):
        raise DataError("stopped after env.json")

    monkeypatch.setattr(job, "rows_for", refuse)
    cfg = RunConfig(model="tiny-llama", tasks=("cnn",), methods=("base",), out=str(tmp_path), executor="inline")
    (cell,) = plan(cfg)
    cell.store.dir.mkdir(parents=True)
    cell.spec.write(cell.store.dir)
    EXECUTORS.lookup("inline")(cfg).run([cell])
    assert json.loads((cell.store.dir / "status.json").read_text())["message"] == "stopped after env.json"
    env = json.loads((cell.store.dir / "env.json").read_text())
    assert env["executor"] == "inline" and env["pid"] == os.getpid() and "ray" not in env
    assert ran_apart(env, os.getpid(), "process") == [
        f"the cell ran in the driver's own process ({os.getpid()})",
        f"the cell's parent is process {os.getppid()}, not the driver {os.getpid()}"]
    assert ran_apart(env, os.getpid(), "ray") == [
        f"the cell ran in the driver's own process ({os.getpid()})", "no Ray worker id recorded (None)"]
