"""The gate's comparison logic on hand-made baselines: direction from the registry, tolerances, CIs."""

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
