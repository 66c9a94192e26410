"""The whole path, as a user runs it, for every method on the tiny random Llama model."""

import csv
import json

import pytest

from tests.conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("matrix")]  # its session fixture runs once

METHODS = ("base", "full", "lora", "qlora", "qlora4", "qlora8")


@pytest.fixture(scope="session")
def matrix_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("results")
    done = run_cli("--model", "tiny-llama", "--tasks", "cnn", "--methods", ",".join(METHODS),
                   "--train-limit", "8", "--eval-limit", "4", "--max-new-tokens", "8", "--bootstrap", "100",
                   "--out", str(out), "--run-name", "all")
    return done, out / "all"


def test_every_method_completes(matrix_run):
    done, run = matrix_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == f"{len(METHODS)} of {len(METHODS)} cells ok"
    for method in METHODS:
        cell = run / "cnn" / method
        names = {p.name for p in cell.iterdir()}
        # LoRA methods keep their adapter by default (--save auto); base and full keep no weights.
        weights = {"adapter"} if method.startswith(("lora", "qlora")) else set()
        assert names == {"config.json", "env.json", "data.json", "train.json", "predictions.jsonl",
                         "metrics.json", "status.json"} | weights, method
        assert json.loads((cell / "status.json").read_text())["status"] == "ok"


def test_records_hold_what_the_table_needs(matrix_run):
    _, run = matrix_run
    m = {meth: json.loads((run / "cnn" / meth / "metrics.json").read_text()) for meth in METHODS}
    t = {meth: json.loads((run / "cnn" / meth / "train.json").read_text()) for meth in METHODS}
    for meth in METHODS:
        q = m[meth]["quality"]
        assert set(q) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
        assert all(v["ci_low"] <= v["value"] <= v["ci_high"] and v["n"] == 4 for v in q.values())
        meas = m[meth]["measurements"]
        assert meas["memory"]["peak_rss_bytes"] > meas["memory"]["model_footprint_bytes"] > 0
        assert meas["timing"]["generation_tokens_per_s"] > 0 and meas["timing"]["eval_s"] > 0
    assert t["base"]["trained"] is False and m["base"]["measurements"]["params"]["trainable"] == 0
    assert m["full"]["measurements"]["params"]["trainable_pct"] == 100.0
    for meth in ("lora", "qlora", "qlora8"):
        assert 0 < m[meth]["measurements"]["params"]["trainable_pct"] < 5
        assert t[meth]["train_tokens"] > 0 and t[meth]["train_tokens_per_s"] > 0
        assert [p["step"] for p in t[meth]["loss_curve"]] == [1, 2]
    assert t["lora"]["adapter_merged"] and not t["qlora"]["adapter_merged"]
    cfg = json.loads((run / "cnn" / "qlora8" / "config.json").read_text())
    assert cfg["method"]["load_in_8bit"] and cfg["hyperparameters"]["lr"] == 1e-3
    assert cfg["run"]["model"] == "tiny-llama" and len(cfg["config_hash"]) == 64
    env = json.loads((run / "cnn" / "lora" / "env.json").read_text())
    assert env["device"] == "cpu" and env["packages"]["bitsandbytes"]
    preds = [json.loads(line) for line in (run / "cnn" / "lora" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4 and {"prompt", "reference", "output", "scores", "id"} <= set(preds[0])


def test_reports_written(matrix_run):
    done, run = matrix_run
    md = (run / "report.md").read_text()
    assert "## cnn" in md and "| qlora8 |" in md and "rougeL ↑" in md and "python run_matrix.py --model" in md
    rows = list(csv.DictReader((run / "summary.csv").open()))
    assert [r["method"] for r in rows] == list(METHODS)
    assert all(r["status"] == "ok" and float(r["peak_mem_mib"]) > 0 for r in rows)
    assert "qlora8" in done.stderr and "rougeL" in done.stderr  # the terminal table


def test_rerun_skips_completed_cells(matrix_run, tmp_path):
    _, run = matrix_run
    again = run_cli("--model", "tiny-llama", "--tasks", "cnn", "--methods", "base,lora",
                    "--train-limit", "8", "--eval-limit", "4", "--max-new-tokens", "8", "--bootstrap", "100",
                    "--out", str(run.parent), "--run-name", "all")
    assert again.returncode == 0
    assert again.stderr.count("already complete, skipped") == 2
    changed = run_cli("--model", "tiny-llama", "--tasks", "cnn", "--methods", "base", "--eval-limit", "5",
                      "--out", str(run.parent), "--run-name", "all")
    assert changed.returncode == 2 and "different settings" in changed.stderr


def test_fever_closed_mode_and_guanaco_llama2_template(tmp_path, tiny_model_dir):
    done = run_cli("--model", "tiny-llama", "--tasks", "fever,guanaco", "--methods", "base,lora",
                   "--fever-mode", "closed", "--template", "llama2", "--train-limit", "6", "--eval-limit", "3",
                   "--max-new-tokens", "6", "--bootstrap", "50", "--out", str(tmp_path), "--run-name", "x")
    assert done.returncode == 0, done.stderr[-2000:]
    m = json.loads((tmp_path / "x" / "fever" / "lora" / "metrics.json").read_text())
    assert set(m["quality"]) == {"label_accuracy", "macro_f1"}
    assert m["extra"]["confusion"]["header"][0] == "gold \\ predicted"
    assert "confusion" in (tmp_path / "x" / "report.html").read_text()  # and the report renders it
    pred = json.loads((tmp_path / "x" / "guanaco" / "base" / "predictions.jsonl").read_text().splitlines()[0])
    assert pred["prompt"].startswith("<s>[INST] ") and pred["prompt"].endswith(" [/INST]")
    cfg = json.loads((tmp_path / "x" / "fever" / "lora" / "config.json").read_text())
    assert cfg["hyperparameters"]["fever_mode"] == "closed" and "react_max_steps" not in cfg["hyperparameters"]


def test_missing_docstore_fails_before_any_cell(tmp_path):
    done = run_cli("--model", "tiny-llama", "--tasks", "fever", "--docstore", str(tmp_path / "pages.jsonl"),
                   "--out", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().endswith("pages.jsonl does not exist; pass a JSONL file of {title, text} pages")
    assert not any(tmp_path.glob("*/fever"))
