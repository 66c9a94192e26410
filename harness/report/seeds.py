"""Several seeds per (task, method): grouping, the mean and spread between seeds, and the bootstrap over examples.

With ``--seeds 0,1,2`` every method runs once per seed, in ``<task>/<method>-seed<N>/``. The report then shows
one row per (task, method): the mean over seeds, the standard deviation between seeds (n-1 denominator), and a
95% CI over eval examples. The paired comparison pairs values by (seed, example id).

Both CIs resample eval *examples* and keep every seed's value for an example together (a cluster bootstrap,
Field & Welsh 2007, "Bootstrapping clustered data"): all seeds are scored on the same examples, so their values
for one example are not independent, and resampling (seed, example) pairs one by one would count each example
once per seed and make the CI too narrow. The statistic is the mean over seeds of each seed's aggregate, which
is what the table shows. With one seed nothing changes: the record is shown as it is and the comparison is the
ordinary paired bootstrap.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from harness.core.files import read_jsonl
from harness.core.stats import AGGREGATIONS, _resamples, paired_bootstrap


def seed_of(rec: dict):
    return rec["config"].get("hyperparameters", {}).get("seed")


def groups(records: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """(task, method, its completed cells with metrics), in the order the records first name them.

    A row that ``collapse`` made stands for its seeds' cells, so grouping collapsed rows gives the same groups.
    """
    out: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r.get("metrics"):
            out.setdefault((r["task"], r["method"]), []).extend(r.get("seed_records") or [r])
    return [(task, method, recs) for (task, method), recs in out.items()]


def multi_seed(records: list[dict]) -> bool:
    return any(len(recs) > 1 for *_, recs in groups(records))


def label(rec: dict, records: list[dict]) -> str:
    """The method's name, plus the seed when the same (task, method) has cells for several seeds."""
    same = [r for r in records if r["task"] == rec["task"] and r["method"] == rec["method"]]
    return f"{rec['method']} (seed {seed_of(rec)})" if len(same) > 1 and "seed_records" not in rec else rec["method"]


def example_values(rec: dict, metric: str) -> dict:
    """id -> per-example value of ``metric`` (lists from JSON become tuples again)."""
    out = {}
    for i, p in enumerate(read_jsonl(Path(rec["dir"]) / "predictions.jsonl")):
        v = p.get("scores", {}).get(metric)
        out[str(p.get("id", i))] = tuple(v) if isinstance(v, list) else v
    return out


def seed_values(recs: list[dict], metric: str) -> dict:
    """seed -> {id: value} for one (task, method)."""
    return {seed_of(r): example_values(r, metric) for r in recs}


def cluster_stats(per_seed: list[list[tuple[int, object]]], n_ids: int, aggregation: str, n_boot: int,
                  seed: int) -> np.ndarray:
    """For each bootstrap resample of the ``n_ids`` examples: the mean over seeds of each seed's aggregate.

    ``per_seed`` holds, per seed, (example position, value) pairs. The resamples are those of
    ``stats._resamples``, so two calls with the same ``n_ids`` and ``seed`` resample the same examples (paired).
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


def seed_mean_ci(recs: list[dict], metric: str, aggregation: str, n_boot: int, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float | None, float | None]:
    """95% cluster-bootstrap CI of the mean over seeds of ``metric``, resampling eval examples."""
    values = seed_values(recs, metric)
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

    ``va`` and ``vb`` map seed -> {id: value}. With one shared seed this is ``stats.paired_bootstrap`` itself.
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
    # The same two-sided p as stats.paired_bootstrap: the share of resamples across zero from the observed diff.
    p = 1.0 if diff == 0 else min(1.0, 2 * float(np.nanmean(stats <= 0) if diff > 0 else np.nanmean(stats >= 0)))
    return {"diff": float(diff), "ci_low": float(lo), "ci_high": float(hi), "p_value": p,
            "significant": bool(lo > 0 or hi < 0), "n": sum(len(ids) for ids in keep.values()),
            "n_seeds": len(keep)}


def _mean(xs) -> float | None:
    xs = [x for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)]  # numbers only: means
    return float(np.mean(xs)) if xs else None


_COLLAPSED: dict[tuple, dict] = {}


def collapse(records: list[dict]) -> list[dict]:
    """One row per (task, method): the record itself when it has one seed, else a row of means over its seeds.

    Failed and skipped cells stay as they are. A mean row keeps its cells under ``seed_records``; each quality
    metric gets ``spread`` (standard deviation between seeds) and ``n_seeds``, and its CI is ``seed_mean_ci``.
    """
    grouped = {(t, m): recs for t, m, recs in groups(records)}
    out, done = [], set()
    for r in records:
        key = (r["task"], r["method"])
        if not r.get("metrics") or len(grouped[key]) < 2 or "seed_records" in r:
            out.append(r)
        elif key not in done:
            done.add(key)
            cache_key = tuple(c["dir"] for c in grouped[key])
            if cache_key not in _COLLAPSED:  # print, markdown and html each build the table: compute once
                _COLLAPSED[cache_key] = _mean_record(grouped[key])
            out.append(_COLLAPSED[cache_key])
    return out


def _mean_record(recs: list[dict]) -> dict:
    from harness.spec.metrics import get_metric

    first = recs[0]
    n_boot = first["config"].get("hyperparameters", {}).get("bootstrap", 1000)
    quality = {}
    for name in dict.fromkeys(n for r in recs for n in r["metrics"]["quality"]):
        vals = [r["metrics"]["quality"][name]["value"] for r in recs if name in r["metrics"]["quality"]]
        vals = [v for v in vals if v is not None]
        m = get_metric(name)
        lo, hi = seed_mean_ci(recs, name, m.aggregation, n_boot) if vals else (None, None)
        quality[name] = {"value": _mean(vals), "ci_low": lo, "ci_high": hi, "n_seeds": len(vals),
                         "spread": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                         "higher_is_better": m.higher_is_better, "aggregation": m.aggregation}
    meas = [r["metrics"]["measurements"] for r in recs]
    memory = {k: _mean(x["memory"].get(k) for x in meas) for k in meas[0]["memory"]}
    timing = {k: _mean(x["timing"].get(k) for x in meas) for k in meas[0]["timing"]}
    measurements = {"memory": memory, "timing": timing, "params": first["metrics"]["measurements"]["params"]}
    metrics = {"task": first["task"], "method": first["method"], "main_metric": first["metrics"]["main_metric"],
               "quality": quality, "extra": {}, "measurements": measurements}
    return {"task": first["task"], "method": first["method"], "dir": first["dir"], "status": {"status": "ok"},
            "config": first["config"], "metrics": metrics, "train": {}, "seed_records": recs,
            "seeds": [seed_of(r) for r in recs]}
