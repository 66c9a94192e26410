"""Prompting, retrieval and fine-tuning in one run, end to end on the tiny model: the methods that cannot apply are
left out with one line and the rest run; the records hold what each prompt held and cost; the report shows it."""

import os
import subprocess
import sys

import pytest

from harness.core.files import read_json, read_jsonl
from tests.conftest import ROOT, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("approaches")]

COMMON = ("--model", "tiny-llama", "--train-limit", "8", "--eval-limit", "6", "--epochs", "1")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("approaches")
    done = run_cli("--tasks", "cnn,qa,fever", "--fever-mode", "closed", "--methods",
                   "base,fewshot,rag,lora:retrieve=2", *COMMON, "--out", str(out), "--run-name", "r")
    return out / "r", done


def test_a_method_that_cannot_apply_is_left_out_with_one_line_and_the_rest_run(run):
    run_dir, done = run
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("left out:")]
    assert lines == ["left out: cnn x rag: cnn has no knowledge base; pass --corpus cnn=FILE.jsonl",
                     "left out: cnn x lora:retrieve=2: cnn has no knowledge base; pass --corpus cnn=FILE.jsonl"]
    assert not (run_dir / "cnn" / "rag").exists()
    for task, methods in (("cnn", ("base", "fewshot")), ("qa", ("base", "fewshot", "rag", "lora_retrieve=2")),
                          ("fever", ("base", "fewshot", "rag", "lora_retrieve=2"))):
        for m in methods:
            assert read_json(run_dir / task / m / "status.json")["status"] == "ok", (task, m)
    assert "10 of 10 cells ok" in done.stderr
    manifest = read_json(run_dir / "run.json")
    assert {(x["task"], x["method"]) for x in manifest["left_out"]} == {("cnn", "rag"), ("cnn", "lora:retrieve=2")}
    report = (run_dir / "report.md").read_text()
    assert "Left out of cnn: rag (cnn has no knowledge base; pass --corpus cnn=FILE.jsonl)." in report


def test_the_records_hold_what_each_prompt_held_and_what_a_query_cost(run):
    run_dir, _ = run
    rag = read_json(run_dir / "qa" / "rag" / "metrics.json")["measurements"]["prompts"]
    base = read_json(run_dir / "qa" / "base" / "metrics.json")["measurements"]["prompts"]
    assert rag["retrieve"]["k"] == 3 and rag["retrieve"]["source"] == "qa embedded"
    assert rag["prompt_tokens_mean"] > 2 * base["prompt_tokens_mean"] and rag["eval_s_per_example"] > 0
    preds = read_jsonl(run_dir / "qa" / "rag" / "predictions.jsonl")
    assert all(len(p["passages"]) == 3 and p["scores"]["recall_at_k"] in (0.0, 1.0) for p in preds)
    assert read_json(run_dir / "qa" / "rag" / "data.json")["knowledge_base"]["documents"] == 120
    few = read_json(run_dir / "cnn" / "fewshot" / "metrics.json")["measurements"]["prompts"]
    assert few["shots"]["asked"] == 3 and len(few["shots"]["draw"]) == 4
    assert few["prefix_cache"]["applied"] and few["prefix_cache"]["shared_tokens"] > 50
    # the trained method's training rows held passages: its eval prompts do, and it trained on the same builder
    trained = read_jsonl(run_dir / "fever" / "lora_retrieve=2" / "predictions.jsonl")
    assert all("Evidence: [1] " in p["prompt"] and len(p["passages"]) == 2 for p in trained)


def test_the_report_puts_every_method_on_quality_against_cost(run):
    run_dir, _ = run
    report = (run_dir / "report.md").read_text()
    for task in ("cnn", "qa", "fever"):
        assert f"**{task}: quality against cost (training once, then 1,000 queries" in report
    assert "| method | f1 ↑ | exact_match ↑ | f1_seen ↑ | f1_unseen ↑ | recall_at_k ↑ |" in report
    html = (run_dir / "report.html").read_text()
    assert "cost_plot qa" in html
    csv = (run_dir / "summary.csv").read_text().splitlines()[0]
    assert "prompt_tokens" in csv and "eval_s_per_example" in csv


def test_prefix_reuse_changes_no_output_of_a_fewshot_cell(run, tmp_path):
    run_dir, _ = run
    again = run_cli("--tasks", "cnn", "--methods", "fewshot", *COMMON, "--out", str(tmp_path), "--run-name", "off",
                    "--no-prefix-cache")
    assert again.returncode == 0, again.stderr[-2000:]
    on = [p["output"] for p in read_jsonl(run_dir / "cnn" / "fewshot" / "predictions.jsonl")]
    off = [p["output"] for p in read_jsonl(tmp_path / "off" / "cnn" / "fewshot" / "predictions.jsonl")]
    assert on == off
    assert "prefix_cache" not in read_json(tmp_path / "off" / "cnn" / "fewshot" / "metrics.json")["measurements"][
        "prompts"]


def test_shots_are_tuned_on_validation_like_a_learning_rate(tmp_path):
    done = run_cli("--tasks", "qa", "--methods", "fewshot:shots=1|2", *COMMON, "--out", str(tmp_path),
                   "--run-name", "t")
    assert done.returncode == 0, done.stderr[-2000:]
    for number, shots in enumerate((1, 2)):  # the grid's points, as trials in the order written
        cfg = read_json(tmp_path / "t" / "qa" / f"fewshot.trial{number}" / "config.json")
        assert cfg["hyperparameters"]["eval_split"] == "validation" and cfg["tuning"]["params"] == {"shots": shots}
        assert cfg["method"]["shots"] == shots
    chosen = read_json(tmp_path / "t" / "qa" / "fewshot" / "config.json")
    assert chosen["tuning"]["role"] == "chosen" and chosen["method"]["shots"] == chosen["tuning"]["params"]["shots"]
    report = (tmp_path / "t" / "report.md").read_text()
    assert "settings searched on validation" in report and "over shots 1|2 (grid)" in report


def test_an_unreachable_hub_model_is_the_harness_line_alone(tmp_path):
    """Without HF_HUB_OFFLINE, huggingface_hub logs each retry; the user sees the harness's own line only."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    done = subprocess.run([sys.executable, str(ROOT / "run_matrix.py"), "--model", "nobody/nothing", "--tasks", "cnn",
                           "--methods", "base", "--out", str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: cannot load config 'nobody/nothing' from the Hugging Face Hub (offline, gated or misspelt?); download "
        "it on a connected machine and pass the local folder to --model"]


def test_bitsandbytes_kernel_fetch_warning_stays_out_of_the_terminal():
    quiet = "from harness.core.console import quiet_libraries; quiet_libraries(); import bitsandbytes"
    done = subprocess.run([sys.executable, "-c", quiet], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0 and "gemm_4bit_forward" not in done.stderr, done.stderr
    if "avx512_bf16" not in open("/proc/cpuinfo").read():
        pytest.skip("bitsandbytes only tries the kernel on CPUs with AVX512-BF16; its line cannot appear here")
    loud = subprocess.run([sys.executable, "-c", "import bitsandbytes"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert "Failed to load CPU gemm_4bit_forward" in loud.stderr  # the line the harness keeps out is real here
