"""Aggregations and bootstrap confidence intervals over per-example values.

An aggregation maps a list of per-example values to one number. Most metrics are means; macro-F1 needs the
(prediction, gold) pairs, and perplexity needs (summed negative log-likelihood, token count) pairs, so the
bootstrap resamples *examples* and re-aggregates, which works for all three.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def mean(values: Sequence) -> float:
    return float(np.mean(np.asarray(values, dtype=float))) if len(values) else float("nan")


def macro_f1(pairs: Sequence) -> float:
    """Macro-averaged F1 over the gold labels present, for (prediction, gold) pairs.

    Labels that occur only as predictions still cost precision through the false positives they add to no
    gold class, which is the scikit-learn convention for ``labels`` = the gold label set.
    """
    if not len(pairs):
        return float("nan")
    golds = sorted({g for _, g in pairs})
    f1s = []
    for label in golds:
        tp = sum(1 for p, g in pairs if p == label and g == label)
        fp = sum(1 for p, g in pairs if p == label and g != label)
        fn = sum(1 for p, g in pairs if p != label and g == label)
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def perplexity(pairs: Sequence) -> float:
    """exp(total NLL / total tokens): the token-weighted perplexity over (nll_sum, n_tokens) pairs."""
    nll = sum(p[0] for p in pairs)
    n = sum(p[1] for p in pairs)
    return float(math.exp(nll / n)) if n else float("nan")


def ratio(pairs: Sequence) -> float:
    """sum(numerators) / sum(denominators) over (num, den) pairs, e.g. instructions passed / instructions."""
    den = sum(p[1] for p in pairs)
    return float(sum(p[0] for p in pairs) / den) if den else float("nan")


AGGREGATIONS: dict[str, Callable[[Sequence], float]] = {"mean": mean, "macro_f1": macro_f1,
                                                          "perplexity": perplexity, "ratio": ratio}


def _resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(values: Sequence, aggregation: str = "mean", n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap (Efron & Tibshirani 1993) of the aggregated value, resampling examples."""
    agg = AGGREGATIONS[aggregation]
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    if aggregation == "mean":  # vectorised fast path; same resamples as the generic path
        arr = np.asarray(values, dtype=float)
        stats = arr[_resamples(n, n_boot, seed)].mean(axis=1)
    else:
        items = list(values)
        stats = np.array([agg([items[i] for i in idx]) for idx in _resamples(n, n_boot, seed)])
    lo, hi = np.nanpercentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def paired_bootstrap(a: Sequence, b: Sequence, aggregation: str = "mean", n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """Paired bootstrap of agg(a) - agg(b) over the same examples (Koehn 2004; Berg-Kirkpatrick et al. 2012).

    The difference is significant at level ``alpha`` when its (1 - alpha) percentile interval excludes zero.
    ``p_value`` is the two-sided share of resamples on the other side of zero from the observed difference.
    """
    if len(a) != len(b):
        raise ValueError(f"paired bootstrap needs equal lengths, got {len(a)} and {len(b)}")
    agg = AGGREGATIONS[aggregation]
    n = len(a)
    diff = agg(a) - agg(b)
    if n == 0:
        return {"diff": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan"),
                "significant": False, "n": 0}
    la, lb = list(a), list(b)
    stats = np.array([agg([la[i] for i in idx]) - agg([lb[i] for i in idx])
                      for idx in _resamples(n, n_boot, seed)])
    lo, hi = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    if diff == 0:
        p = 1.0
    else:
        p = min(1.0, 2 * float(np.mean(stats <= 0) if diff > 0 else np.mean(stats >= 0)))
    return {"diff": float(diff), "ci_low": float(lo), "ci_high": float(hi), "p_value": p,
            "significant": bool(lo > 0 or hi < 0), "n": n}
