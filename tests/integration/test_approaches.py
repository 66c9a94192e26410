"""Prompting, retrieval and fine-tuning in one run, end to end on the tiny model: the methods that cannot apply are
left out with one line and the rest run; the records hold what each prompt held and cost; the report shows it."""

import json
import os
import subprocess
import sys

import pytest

from harness.core.files import read_json, read_jsonl
from tests.conftest import ROOT, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("approaches")]

COMMON = ("--model", "tiny-llama", "--train-limit", "8", "--eval-limit", "6", "--epochs", "1")


@pytest.fixture(scope="session")
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
    assert len(preds) == 6  # --eval-limit 6
    assert all(len(p["passages"]) == 3 and p["scores"]["recall_at_k"] in (0.0, 1.0) for p in preds)
    assert read_json(run_dir / "qa" / "rag" / "data.json")["knowledge_base"]["documents"] == 120
    few = read_json(run_dir / "cnn" / "fewshot" / "metrics.json")["measurements"]["prompts"]
    assert few["shots"]["asked"] == 3 and len(few["shots"]["draw"]) == 4
    assert few["prefix_cache"]["applied"] and few["prefix_cache"]["shared_tokens"] > 50
    # the trained method's training rows held passages: its eval prompts do, and it trained on the same builder
    trained = read_jsonl(run_dir / "fever" / "lora_retrieve=2" / "predictions.jsonl")
    assert len(trained) == 6
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


@pytest.fixture(scope="session")
def lively_model(tmp_path_factory, tiny_model_dir):
    """tiny-llama's shape and tokenizer with weights ten times larger. tiny-llama answers a chat prompt with its end
    token at once (tests/unit/test_generation.py), so its outputs would be empty whatever the prefix cache did;
    these weights write tokens that change with the prompt, shots included."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("lively")
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.initializer_range = 0.2
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_prefix_reuse_changes_no_output_of_a_fewshot_cell(lively_model, tmp_path):
    outputs, prompts = {}, {}
    for name, flags in (("on", ()), ("off", ("--no-prefix-cache",))):
        done = run_cli("--tasks", "cnn", "--methods", "fewshot", *COMMON, "--model", str(lively_model),
                       "--out", str(tmp_path), "--run-name", name, *flags)
        assert done.returncode == 0, done.stderr[-2000:]
        cell = tmp_path / name / "cnn" / "fewshot"
        outputs[name] = [p["output"] for p in read_jsonl(cell / "predictions.jsonl")]
        prompts[name] = read_json(cell / "metrics.json")["measurements"]["prompts"]
    assert outputs["on"] == outputs["off"] and len(outputs["on"]) == 6  # --eval-limit 6
    assert all(outputs["on"]) and len(set(outputs["on"])) > 1  # text that depends on the prompt, not one token
    assert prompts["on"]["prefix_cache"]["applied"] and prompts["on"]["prefix_cache"]["shared_tokens"] > 50
    assert "prefix_cache" not in prompts["off"]


@pytest.mark.parametrize("method, field, grid", [("fewshot", "shots", (1, 2)), ("rag", "retrieve", (1, 3))])
def test_prompting_fields_are_tuned_on_validation_like_a_learning_rate(tmp_path, method, field, grid):
    points = "|".join(map(str, grid))
    done = run_cli("--tasks", "qa", "--methods", f"{method}:{field}={points}", *COMMON, "--out", str(tmp_path),
                   "--run-name", "t")
    assert done.returncode == 0, done.stderr[-2000:]
    for number, value in enumerate(grid):  # the grid's points, as trials in the order written
        trial = tmp_path / "t" / "qa" / f"{method}.trial{number}"
        cfg = read_json(trial / "config.json")
        assert cfg["hyperparameters"]["eval_split"] == "validation" and cfg["tuning"]["params"] == {field: value}
        assert cfg["method"][field] == value
    chosen = read_json(tmp_path / "t" / "qa" / method / "config.json")
    assert chosen["tuning"]["role"] == "chosen" and chosen["method"][field] == chosen["tuning"]["params"][field]
    held = [p["shots"] if field == "shots" else len(p["passages"])
            for p in read_jsonl(tmp_path / "t" / "qa" / method / "predictions.jsonl")]
    assert held and set(held) == {chosen["method"][field]}  # the test prompts hold what was chosen
    report = (tmp_path / "t" / "report.md").read_text()
    assert "settings searched on validation" in report and f"over {field} {points} (grid)" in report


def test_a_run_retrieves_from_the_users_corpus_file(tmp_path):
    docs = [{"title": f"{town} guide", "text": f"{town} is a town where CNN reporters said much happens."}
            for town in ("Saltmarsh", "Harrowgate", "Dovecote", "Yarrowby")]
    corpus = tmp_path / "kb.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    done = run_cli("--tasks", "cnn", "--methods", "rag", *COMMON, "--corpus", f"cnn={corpus}", "--out", str(tmp_path),
                   "--run-name", "kb")
    assert done.returncode == 0, done.stderr[-2000:]
    cell = tmp_path / "kb" / "cnn" / "rag"
    record = read_json(cell / "metrics.json")["measurements"]["prompts"]["retrieve"]
    assert (record["source"], record["documents"], record["k"]) == (f"{corpus}", len(docs), 3)
    texts = {d["title"]: d["text"] for d in docs}
    preds = read_jsonl(cell / "predictions.jsonl")
    assert preds
    for p in preds:
        assert len(p["passages"]) == 3 and set(p["passages"]) <= set(texts)
        for i, title in enumerate(p["passages"], 1):
            assert f"[{i}] {title}\n{texts[title]}" in p["prompt"]


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
