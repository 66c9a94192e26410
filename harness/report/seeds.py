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

import numpy as np

from harness.core.stats import cluster_ci, mean_of
from harness.records.load import example_values
from harness.spec.metrics import get_metric


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


def seed_values(recs: list[dict], metric: str) -> dict:
    """seed -> {id: value} for one (task, method)."""
    return {seed_of(r): example_values(r, metric) for r in recs}


def seed_mean_ci(recs: list[dict], metric: str, aggregation: str, n_boot: int, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float | None, float | None]:
    """95% cluster-bootstrap CI of the mean over seeds of ``metric``, resampling eval examples."""
    return cluster_ci(seed_values(recs, metric), aggregation, n_boot, seed, alpha)


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
    first = recs[0]
    n_boot = first["config"].get("hyperparameters", {}).get("bootstrap", 1000)
    quality = {}
    for name in dict.fromkeys(n for r in recs for n in r["metrics"]["quality"]):
        vals = [r["metrics"]["quality"][name]["value"] for r in recs if name in r["metrics"]["quality"]]
        vals = [v for v in vals if v is not None]
        m = get_metric(name)
        lo, hi = seed_mean_ci(recs, name, m.aggregation, n_boot) if vals else (None, None)
        quality[name] = {"value": mean_of(vals), "ci_low": lo, "ci_high": hi, "n_seeds": len(vals),
                         "spread": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                         "higher_is_better": m.higher_is_better, "aggregation": m.aggregation}
    meas = [r["metrics"]["measurements"] for r in recs]
    memory = {k: mean_of(x["memory"].get(k) for x in meas) for k in meas[0]["memory"]}
    timing = {k: mean_of(x["timing"].get(k) for x in meas) for k in meas[0]["timing"]}
    prompts = {k: mean_of(x.get("prompts", {}).get(k) for x in meas)
               for k in meas[0].get("prompts", {}) if isinstance(meas[0]["prompts"][k], (int, float))}
    measurements = {"memory": memory, "timing": timing, "params": first["metrics"]["measurements"]["params"],
                    "prompts": prompts}
    metrics = {"task": first["task"], "method": first["method"], "main_metric": first["metrics"]["main_metric"],
               "quality": quality, "extra": {}, "measurements": measurements}
    return {"task": first["task"], "method": first["method"], "dir": first["dir"], "status": {"status": "ok"},
            "config": first["config"], "metrics": metrics, "train": {}, "seed_records": recs,
            "seeds": [seed_of(r) for r in recs]}
