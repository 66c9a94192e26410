"""A cell trained by 2 CPU processes (torch.distributed, gloo): one record, disjoint halves of the data."""

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_lora_cell_on_two_processes_trains_disjoint_halves_and_writes_one_record(tmp_path, tiny_model_dir):
    done = run_cli("--model", "tiny-llama", "--tasks", "cnn", "--methods", "lora", "--train-limit", "8",
                   "--eval-limit", "2", "--max-new-tokens", "4", "--bootstrap", "50", "--num-processes", "2",
                   "--out", str(tmp_path), "--run-name", "d")
    assert done.returncode == 0, done.stderr[-3000:]
    cell = tmp_path / "d" / "cnn" / "lora"
    train = json.loads((cell / "train.json").read_text())
    dist = train["distributed"]
    assert dist["processes"] == 2 and dist["backend"] == "gloo" and dist["strategy"] == "ddp"
    first, second = (set(h) for h in dist["row_hashes"])
    assert len(first) == len(second) == 4 and not first & second  # 8 rows, split in two disjoint halves
    assert len(dist["peak_bytes_per_process"]) == 2 and dist["peak_bytes_total"] == sum(dist["peak_bytes_per_process"])
    assert train["steps"] == 1  # 4 rows per process at batch 4: one optimizer step, gradients averaged
    status = json.loads((cell / "status.json").read_text())
    assert status["status"] == "ok" and set(status["files"]) == {
        "config.json", "env.json", "data.json", "train.json", "predictions.jsonl", "metrics.json",
        "adapter/README.md", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"}  # --save auto
    # the adapter the processes trained is checked on the main process like a single-process one
    assert [c["name"] for c in train["checks"] if c["passed"]] == ["differs_from_base", "reload_matches",
                                                                   "merged_matches_unmerged"]
    assert sorted(p.name for p in (tmp_path / "d" / "cnn").iterdir()) == ["lora"]
