"""Scorers against hand-computed values, and the statistics behind the confidence intervals."""

import math

import numpy as np
import pytest

from harness.core.stats import bootstrap_ci, macro_f1, mean, paired_bootstrap, perplexity
from harness.spec.metrics import METRICS, get_metric, rouge, summarise


def test_rouge_hand_checked():
    # ref: the cat sat on the mat / pred: the cat was on the mat
    # unigrams: 5 of 6 match both ways -> F1 = 5/6; bigrams: the-cat, on-the, the-mat = 3 of 5 -> 0.6;
    # LCS "the cat on the mat" = 5 -> 5/6.
    r = rouge(["the cat was on the mat"], ["the cat sat on the mat"])
    assert r["rouge1"][0] == pytest.approx(5 / 6)
    assert r["rouge2"][0] == pytest.approx(0.6)
    assert r["rougeL"][0] == pytest.approx(5 / 6)


def test_rouge_stemming_and_lsum_newlines():
    # Porter stemming maps "running"/"runs" to "run": a full unigram match.
    assert rouge(["dogs running"], ["dog runs"])["rouge1"][0] == pytest.approx(1.0)
    # Lsum takes the union LCS per reference sentence: order of the lines does not matter for it, but does
    # for plain rougeL on the joined text.
    ref = "alpha beta gamma\ndelta epsilon zeta"
    pred = "delta epsilon zeta\nalpha beta gamma"
    r = rouge([pred], [ref])
    assert r["rougeLsum"][0] == pytest.approx(1.0)
    assert r["rougeL"][0] == pytest.approx(0.5)


def test_metric_registry_carries_direction_and_aggregation():
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert METRICS[name].higher_is_better and METRICS[name].aggregation == "mean"
    assert METRICS["rougeL"].gain(0.5, 0.4) == pytest.approx(0.1)
    assert get_metric("ref_perplexity").gain(1.5, 2.0) == pytest.approx(0.5)  # lower is better
    assert get_metric("ref_perplexity").gain(2.0, 1.5) == pytest.approx(-0.5)


def test_bootstrap_ci_contains_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = list(rng.random(20))
    large = list(rng.random(2000))
    lo, hi = bootstrap_ci(small, n_boot=2000)
    assert lo < mean(small) < hi
    lo2, hi2 = bootstrap_ci(large, n_boot=2000)
    assert hi2 - lo2 < (hi - lo) / 4
    assert bootstrap_ci([0.3] * 10) == (pytest.approx(0.3), pytest.approx(0.3))
    assert bootstrap_ci(small, seed=5) == bootstrap_ci(small, seed=5)  # seeded


def test_summarise():
    out = summarise({"rougeL": [0.0, 1.0, 0.5, 0.5]}, n_boot=500, seed=0)["rougeL"]
    assert out["value"] == 0.5 and out["n"] == 4 and out["higher_is_better"] is True
    assert 0.0 <= out["ci_low"] <= 0.5 <= out["ci_high"] <= 1.0


def test_macro_f1_hand_checked():
    pairs = [("A", "A"), ("B", "A"), ("B", "B"), ("C", "B")]
    # A: tp1 fp0 fn1 -> 2/3; B: tp1 fp1 fn1 -> 1/2; mean = 7/12
    assert macro_f1(pairs) == pytest.approx(7 / 12)
    assert macro_f1([("A", "A"), ("B", "B")]) == 1.0


def test_perplexity_is_token_weighted():
    assert perplexity([(2.0, 1), (4.0, 3)]) == pytest.approx(math.exp(6 / 4))


def test_paired_bootstrap_detects_a_clear_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    a = list(rng.random(60) + 0.3)
    b = list(rng.random(60))
    res = paired_bootstrap(a, b)
    assert res["significant"] and res["ci_low"] > 0 and res["diff"] == pytest.approx(mean(a) - mean(b))
    null = paired_bootstrap(a, a)
    assert not null["significant"] and null["diff"] == 0 and null["p_value"] == 1.0
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])
