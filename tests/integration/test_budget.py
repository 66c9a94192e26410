"""A cell whose memory estimate exceeds --memory-budget is skipped before it runs, with the estimate."""

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration

SMALL = ["--model", "tiny-llama", "--tasks", "cnn", "--train-limit", "8", "--eval-limit", "2",
         "--max-new-tokens", "4", "--bootstrap", "50"]


def test_cell_over_the_memory_budget_is_skipped_before_it_runs_and_force_runs_it(tmp_path, tiny_model_dir):
    # The tiny model's full fine-tuning estimate is a few tens of MiB; 1 MiB fits nothing.
    done = run_cli(*SMALL, "--methods", "full", "--memory-budget", "1MiB", "--out", str(tmp_path), "--run-name", "b")
    assert done.returncode == 1, done.stderr[-2000:]
    cell = tmp_path / "b" / "cnn" / "full"
    status = json.loads((cell / "status.json").read_text())
    assert status["status"] == "skipped" and status["error_kind"] == "over_budget"
    assert status["message"].startswith("est. peak ") and "over --memory-budget 1MiB" in status["message"]
    assert "--force runs it anyway" in status["message"]
    assert sorted(p.name for p in cell.iterdir()) == ["config.json", "status.json"]  # nothing ran
    forced = run_cli(*SMALL, "--methods", "full", "--memory-budget", "1MiB", "--force", "--out", str(tmp_path),
                     "--run-name", "b")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert json.loads((cell / "status.json").read_text())["status"] == "ok"
