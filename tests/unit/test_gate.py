"""The gate's comparison logic on hand-made baselines: direction from the registry, tolerances, CIs."""

import json

import pytest

from harness.core.errors import ConfigError
from harness.report.gate import compare, parse_tol


def cell(**metrics):
    return {"status": "ok", "metrics": {k: {"value": v[0], "ci_low": v[1], "ci_high": v[2], "n": 10}
                                        for k, v in metrics.items()}}


BASE = {"cells": {"cnn/lora": cell(rougeL=(0.50, 0.45, 0.55)),
                  "guanaco/lora": cell(ref_perplexity=(10.0, 9.0, 11.0))}}


def verdicts(cells, **kw):
    opts = {"abs_tol": 0.0, "rel_tol": 0.0, "tolerances": {}, "ci_aware": False, "allow_missing": False, **kw}
    return {(r["cell"], r["metric"]): r["verdict"] for r in compare(BASE, cells, **opts)}


def test_direction_comes_from_the_registry():
    better = {"cnn/lora": cell(rougeL=(0.6, 0.5, 0.7)), "guanaco/lora": cell(ref_perplexity=(8.0, 7.0, 9.0))}
    assert set(verdicts(better).values()) == {"pass"}
    worse = {"cnn/lora": cell(rougeL=(0.4, 0.3, 0.5)), "guanaco/lora": cell(ref_perplexity=(12.0, 11.0, 13.0))}
    assert set(verdicts(worse).values()) == {"REGRESSED"}  # lower ROUGE and higher perplexity are both worse


def test_absolute_relative_and_per_metric_tolerances():
    cur = {"cnn/lora": cell(rougeL=(0.48, 0.43, 0.53)), "guanaco/lora": cell(ref_perplexity=(10.5, 9.5, 11.5))}
    assert verdicts(cur)[("cnn/lora", "rougeL")] == "REGRESSED"
    assert verdicts(cur, abs_tol=0.03)[("cnn/lora", "rougeL")] == "pass"
    assert verdicts(cur, abs_tol=0.01)[("cnn/lora", "rougeL")] == "REGRESSED"
    assert verdicts(cur, rel_tol=0.06)[("guanaco/lora", "ref_perplexity")] == "pass"  # 0.5 <= 6% of 10
    assert verdicts(cur, rel_tol=0.04)[("guanaco/lora", "ref_perplexity")] == "REGRESSED"
    per = verdicts(cur, tolerances={"rougeL": {"abs": 0.05}})
    assert per[("cnn/lora", "rougeL")] == "pass" and per[("guanaco/lora", "ref_perplexity")] == "REGRESSED"


def test_ci_aware():
    inside = {"cnn/lora": cell(rougeL=(0.46, 0.40, 0.52)), "guanaco/lora": cell(ref_perplexity=(10.0, 9, 11))}
    assert verdicts(inside)[("cnn/lora", "rougeL")] == "REGRESSED"
    assert verdicts(inside, ci_aware=True)[("cnn/lora", "rougeL")] == "pass"  # 0.50 is inside [0.40, 0.52]
    outside = {"cnn/lora": cell(rougeL=(0.40, 0.35, 0.45)), "guanaco/lora": cell(ref_perplexity=(10.0, 9, 11))}
    assert verdicts(outside, ci_aware=True)[("cnn/lora", "rougeL")] == "REGRESSED"


def test_missing_cells_and_metrics():
    only_cnn = {"cnn/lora": cell(rougeL=(0.5, 0.45, 0.55))}
    assert verdicts(only_cnn)[("guanaco/lora", "ref_perplexity")] == "MISSING"
    assert verdicts(only_cnn, allow_missing=True)[("guanaco/lora", "ref_perplexity")] == "missing (allowed)"
    no_metric = {"cnn/lora": cell(rouge1=(0.5, 0.4, 0.6)), "guanaco/lora": cell(ref_perplexity=(10, 9, 11))}
    assert verdicts(no_metric)[("cnn/lora", "rougeL")] == "MISSING"


def test_parse_tol():
    assert parse_tol(["rougeL=abs:0.02", "ref_perplexity=rel:0.1"]) == {"rougeL": {"abs": 0.02},
                                                                       "ref_perplexity": {"rel": 0.1}}
    with pytest.raises(ConfigError, match="METRIC=abs:X"):
        parse_tol(["rougeL=0.02"])
    with pytest.raises(ConfigError, match="unknown metric 'bleu'"):
        parse_tol(["bleu=abs:1"])


def test_values_that_cannot_regress_are_listed_apart_not_gated():
    from harness.report.gate import cannot_regress

    assert cannot_regress("rougeL", {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}).startswith("at its floor")
    assert cannot_regress("f1", {"value": None}).startswith("no value")
    # Each of these can still get worse, so each stays a check:
    assert cannot_regress("rougeL", {"value": 0.0, "ci_low": 0.0, "ci_high": 0.1}) is None  # a wider interval
    assert cannot_regress("rougeL", {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}) is None  # a ceiling can drop
    assert cannot_regress("ref_perplexity", {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}) is None  # lower is better


def test_a_written_baseline_moves_values_at_their_floor_under_not_gated(tmp_path, monkeypatch):
    from harness.report import gate

    run = {"cnn/base": cell(rougeL=(0.0, 0.0, 0.0), rouge1=(0.2, 0.1, 0.3)), "qa/rag": cell(recall_at_k=(1.0, 1, 1))}
    monkeypatch.setattr(gate, "current_metrics", lambda run_dir: run)
    not_gated = gate.write_baseline(tmp_path, tmp_path / "b.json", {})
    stored = json.loads((tmp_path / "b.json").read_text())
    assert not_gated == stored["not_gated"] == {"cnn/base": {"rougeL": gate.cannot_regress(
        "rougeL", {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0})}}
    assert set(stored["cells"]["cnn/base"]["metrics"]) == {"rouge1"}
    assert set(stored["cells"]["qa/rag"]["metrics"]) == {"recall_at_k"}


def test_a_cell_the_run_has_but_that_failed_fails_even_with_allow_missing():
    failed = {"cnn/lora": {"status": "failed", "metrics": {}}}
    for allow in (False, True):
        got = verdicts(failed, allow_missing=allow)
        assert got[("cnn/lora", "rougeL")] == "FAILED"
        # the cell the run does not have at all is what --allow-missing lets through
        assert got[("guanaco/lora", "ref_perplexity")] == ("missing (allowed)" if allow else "MISSING")


def test_the_committed_baselines_gate_values_that_can_move():
    """At most 10% of the values the repository's own gate checks sit at 0 or 1 with a zero-width interval
    (such a value can only stay put or, at 1, fall), and every baseline gates something."""
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "baselines").glob("*.json"))
    assert files
    values = [m for f in files for c in json.loads(f.read_text())["cells"].values() for m in c["metrics"].values()]
    assert len(values) >= 10
    pinned = [m for m in values if m["value"] in (0, 1) and m["value"] == m["ci_low"] == m["ci_high"]]
    assert len(pinned) <= 0.10 * len(values), (len(pinned), len(values))
