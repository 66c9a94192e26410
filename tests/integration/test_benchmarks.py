"""Smoke runs of the benchmarks on the tiny model: each runs with one command and reports what it promises.

Timings are never asserted (they depend on the machine and its load); the loss and token checks are
behaviour: the harness trains on the same targets as plain trl, so its first-step loss and token count match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def _run(script: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_PROGRESS": "0"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize("extra", [(), ("--long", "--rows", "4", "--max-seq-len", "256", "--method", "qlora4")],
                         ids=["cnn-lora", "long-qlora4"])
def test_bench_train_reports_every_variant(tmp_path, tiny_model_dir, extra):
    out = tmp_path / "train.json"
    done = _run("bench_train.py", "--model", "tiny-llama", "--rows", "8", "--rounds", "1", "--json", str(out),
                *extra)
    result = json.loads(out.read_text())
    harness, documented, best = result["runs"]
    assert (harness["variant"], documented["variant"], best["variant"]) == ("harness", "trl-documented", "trl-best")
    assert (documented["gradient_checkpointing"], documented["padding_free"]) == (True, False)  # trl's defaults
    assert (best["gradient_checkpointing"], best["padding_free"]) == (False, True)
    for run in (harness, documented, best):
        assert run["tokens_per_s"] > 0 and run["peak_rss_bytes"] > 0 and run["steps"] >= 1
        assert run["row_tokens"] == harness["row_tokens"]  # every rate divides the same count
        # the same targets, so the same first-step loss, whether padded, padding-free or recomputed
        assert run["first_loss"] == pytest.approx(harness["first_loss"], abs=1e-4)
    assert harness["tokens"] == documented["tokens"]  # non-padding tokens, counted the same way
    assert {"padding_free", "compact_lm_head"} <= set(harness["trl_changes"]["applied"])
    for base in ("trl-documented", "trl-best"):
        assert set(result["ratios"][base]["mean"]) == {"speed", "peak_rss", "first_loss_diff", "final_loss_diff"}
        assert f"harness / {base}: speed" in done.stdout


def test_bench_generate_reports_speed_and_agreement(tmp_path, tiny_model_dir):
    out = tmp_path / "generate.json"
    done = _run("bench_generate.py", "--model", "tiny-llama", "--prompts", "3", "--max-new-tokens", "6",
                "--batch", "2", "--json", str(out))
    results = json.loads(out.read_text())["results"]
    assert [r["model"] for r in results] == ["lora-merged", "qlora4"]
    for r in results:
        assert {run["variant"] for run in r["runs"]} == {"harness", "naive", "continuous"}
        assert all(run["tokens"] > 0 and run["tokens_per_s"] > 0 for run in r["runs"])
        for other in ("naive", "continuous"):
            cmp = r["against"][other]
            assert cmp["speed_ratio"] > 0 and 0 <= cmp["identical"] <= r["prompts"] == 3
    # transformers' continuous batching is greedy over the same prompts: token for token the harness's text
    assert results[0]["against"]["continuous"]["identical"] == 3, results[0]["against"]["continuous"]
    assert "| lora-merged | continuous |" in done.stdout


def test_bench_e2e_breaks_the_wall_time_down(tmp_path, tiny_model_dir):
    out = tmp_path / "e2e.json"
    done = _run("bench_e2e.py", "--json", str(out), "--import-repeats", "1", "--", "--tasks", "cnn", "--methods",
                "lora", "--model", "tiny-llama", "--train-limit", "4", "--eval-limit", "2", "--max-new-tokens", "4",
                "--bootstrap", "20")
    result = json.loads(out.read_text())
    assert result["wall_s"] > 0 and result["exit_status"] == 0
    assert {"import", "model load", "train", "generate", "report"} <= set(result["phases"])
    assert all(v >= 0 for k, v in result["phases"].items() if not k.startswith("other"))
    assert [c["method"] for c in result["cells"]] == ["lora"]
    assert "| phase | seconds | share |" in done.stdout
