"""Aggregations and bootstrap confidence intervals over per-example values.

An aggregation maps a list of per-example values to one number. Most metrics are means; macro-F1 needs the
(prediction, gold) pairs, and perplexity needs (summed negative log-likelihood, token count) pairs, so the
bootstrap resamples *examples* and re-aggregates, which works for all three.
"""

from __future__ import annotations

import math
import warnings
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


def mean_of(xs) -> float | None:
    """The mean of the numbers among ``xs`` (None, booleans and text left out); None when there are none."""
    xs = [x for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)]
    return float(np.mean(xs)) if xs else None


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


# --- several seeds: a cluster bootstrap over examples --------------------------------------------------------

def cluster_stats(per_seed: list[list[tuple[int, object]]], n_ids: int, aggregation: str, n_boot: int,
                  seed: int) -> np.ndarray:
    """For each bootstrap resample of the ``n_ids`` examples: the mean over seeds of each seed's aggregate.

    ``per_seed`` holds, per seed, (example position, value) pairs. The resamples are those of
    ``_resamples``, so two calls with the same ``n_ids`` and ``seed`` resample the same examples (paired).
    """
    idx = _resamples(n_ids, n_boot, seed)
    counts = np.zeros((n_boot, n_ids))
    np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1)
    per = []
    for items in per_seed:
        c = counts[:, [k for k, _ in items]]
        if aggregation == "mean":  # a weighted mean: each example counted as often as it was drawn
            with np.errstate(invalid="ignore", divide="ignore"):
                per.append(c @ np.asarray([v for _, v in items], dtype=float) / c.sum(axis=1))
        else:  # every aggregation is order-free, so repeating each value by its count is a resample
            agg = AGGREGATIONS[aggregation]
            per.append(np.array([agg([v for (_, v), n in zip(items, row) for _ in range(int(n))]) if row.any()
                                 else np.nan for row in c]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample that drew none of a seed's examples: NaN
        return np.nanmean(np.vstack(per), axis=0)


def _layout(values: dict, keep: dict) -> tuple[list[list[tuple[int, object]]], int]:
    """Per seed (position, value) pairs for the kept ids, with positions in first-seen id order."""
    ids = list(dict.fromkeys(i for s in keep for i in keep[s]))
    pos = {i: k for k, i in enumerate(ids)}
    return [[(pos[i], values[s][i]) for i in keep[s]] for s in keep], len(ids)


def _point(values: dict, keep: dict, aggregation: str) -> float:
    agg = AGGREGATIONS[aggregation]
    return float(np.mean([agg([values[s][i] for i in keep[s]]) for s in keep]))


def cluster_ci(values: dict, aggregation: str, n_boot: int, seed: int = 0,
               alpha: float = 0.05) -> tuple[float | None, float | None]:
    """95% cluster-bootstrap CI of the mean over seeds of each seed's aggregate, resampling examples.

    ``values`` maps seed -> {example id: value}; a None value leaves that example out of its seed."""
    keep = {s: [i for i, v in vals.items() if v is not None] for s, vals in values.items()}
    keep = {s: ids for s, ids in keep.items() if ids}
    if not keep:
        return None, None
    per_seed, n = _layout(values, keep)
    stats = cluster_stats(per_seed, n, aggregation, n_boot, seed)
    if np.isnan(stats).all():
        return None, None
    lo, hi = np.nanpercentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def paired_over_seeds(va: dict, vb: dict, aggregation: str, n_boot: int = 1000, seed: int = 0,
                      alpha: float = 0.05) -> dict | None:
    """Paired bootstrap of A - B over the (seed, example id) pairs both have; None with under 2 examples.

    ``va`` and ``vb`` map seed -> {id: value}. With one shared seed this is ``paired_bootstrap`` itself.
    """
    keep = {s: [i for i, v in va[s].items() if v is not None and vb[s].get(i) is not None]
            for s in va if s in vb}
    keep = {s: ids for s, ids in keep.items() if ids}
    n_ids = len({i for ids in keep.values() for i in ids})
    if n_ids < 2:
        return None
    if len(keep) == 1:
        (s, ids), = keep.items()
        res = paired_bootstrap([va[s][i] for i in ids], [vb[s][i] for i in ids], aggregation, n_boot, seed, alpha)
        return {**res, "n_seeds": 1}
    (sa, n), (sb, _) = _layout(va, keep), _layout(vb, keep)
    stats = cluster_stats(sa, n, aggregation, n_boot, seed) - cluster_stats(sb, n, aggregation, n_boot, seed)
    diff = _point(va, keep, aggregation) - _point(vb, keep, aggregation)
    lo, hi = np.nanpercentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    # The same two-sided p as paired_bootstrap: the share of resamples across zero from the observed diff.
    p = 1.0 if diff == 0 else min(1.0, 2 * float(np.nanmean(stats <= 0) if diff > 0 else np.nanmean(stats >= 0)))
    return {"diff": float(diff), "ci_low": float(lo), "ci_high": float(hi), "p_value": p,
            "significant": bool(lo > 0 or hi < 0), "n": sum(len(ids) for ids in keep.values()),
            "n_seeds": len(keep)}
