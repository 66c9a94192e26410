"""--seeds runs every cell once per seed; the table shows the mean and the spread between seeds."""

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_two_seeds_give_two_cells_and_a_table_with_the_between_seed_spread(tmp_path, tiny_model_dir):
    done = run_cli("--model", "tiny-llama", "--tasks", "guanaco", "--methods", "lora", "--train-limit", "8",
                   "--eval-limit", "4", "--max-new-tokens", "8", "--bootstrap", "100", "--seeds", "0,1",
                   "--out", str(tmp_path), "--run-name", "s")
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "s"
    seeds = {json.loads((run / "guanaco" / f"lora-seed{s}" / "config.json").read_text())["hyperparameters"]["seed"]
             for s in (0, 1)}
    assert seeds == {0, 1}
    curves = [json.loads((run / "guanaco" / f"lora-seed{s}" / "train.json").read_text())["loss_curve"]
              for s in (0, 1)]
    assert curves[0] != curves[1]  # the seeds really differ (LoRA init, dropout, data order)
    report = (run / "report.md").read_text()
    assert "(2 seeds)" in report and "±" in report
