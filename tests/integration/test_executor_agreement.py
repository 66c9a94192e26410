"""Executors agree: the same matrix gives byte-identical quality inline, in child processes (one at a time and
two side by side) and on Ray. Its own file so that pytest-xdist runs it beside test_executors.py."""

import json
import os

import pytest

from harness.core.files import read_json
from tests.cell_process import ran_apart
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

# One task: what an executor could change is how a cell runs, not what a task scores (each task's cells are run the
# same way), and each executor's run costs a child process's imports per cell (about 10 s here).
MATRIX = ["--model", "tiny-llama", "--tasks", "cnn", "--methods", "base,lora", "--train-limit", "8",
          "--eval-limit", "4", "--max-new-tokens", "8", "--bootstrap", "100"]
VARIANTS = {"inline": ["--executor", "inline"], "process": ["--executor", "process"],
            "parallel": ["--executor", "process", "--parallel", "2"], "ray": ["--executor", "ray"]}


def test_inline_process_parallel_and_ray_give_byte_identical_quality(tmp_path, tiny_model_dir):
    """The same 1 x 2 matrix under each executor; Ray on a local instance (this machine's 2 CPUs)."""
    runs, err = {}, {}
    for name, flags in VARIANTS.items():
        done = run_cli(*MATRIX, *flags, "--out", str(tmp_path), "--run-name", name)
        assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
        runs[name], err[name] = tmp_path / name, done.stderr
    assert "submitted to Ray" in err["ray"] and "finished on" in err["ray"]
    # Each cell ran where its executor runs cells: the driver's own process inline, a child of the driver, a child
    # of a Ray worker (tests/cell_process.py; tests/unit/test_executors.py shows the checks fail for an inline cell).
    for name, run in runs.items():
        driver = read_json(run / "run.json")["driver_pid"]
        for method in ("base", "lora"):
            env = read_json(run / "cnn" / method / "env.json")
            if name == "inline":
                assert env["pid"] == driver and ran_apart(env, driver, "process") and ran_apart(env, driver, "ray")
                continue
            executor = "ray" if name == "ray" else "process"
            assert ran_apart(env, driver, executor) == [], (name, method)
            # and each check tells the two apart: a child of the driver is no Ray worker's, nor the reverse
            assert ran_apart(env, driver, "process" if executor == "ray" else "ray"), (name, method)
            assert os.getpid() not in (env["pid"], env["parent_pid"])  # nor this test's process
    assert "[cnn x lora]" in err["parallel"]  # lines of cells running side by side name their cell
    for method in ("base", "lora"):
        q = [(runs[e] / "cnn" / method / "metrics.json").read_text() for e in runs]
        q = {json.dumps(json.loads(x)["quality"], sort_keys=True) for x in q}
        assert len(q) == 1, method
    # resume works the same way under ray: nothing left to do
    again = run_cli(*MATRIX, *VARIANTS["ray"], "--out", str(tmp_path), "--run-name", "ray")
    assert again.returncode == 0 and again.stderr.count("already complete, skipped") == 2
