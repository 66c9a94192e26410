"""Paired comparisons between methods on the same task and eval set, from the stored predictions.

For the task's main metric, a paired bootstrap over eval examples (resampling the same examples for both
methods) gives the difference, its 95% CI, and whether it is significant, so "lora beats qlora" is a
claim with evidence. Methods are only compared when their eval rows are identical (same content hash). With
several seeds the values are paired by (seed, example id) and the bootstrap resamples examples
(harness/core/stats.py).
"""

from __future__ import annotations

from itertools import combinations

from harness.core.stats import paired_over_seeds
from harness.records.load import eval_hash
from harness.report.seeds import groups, seed_values
from harness.report.table import Column, Table, Value
from harness.spec.metrics import get_metric


def paired_comparisons(records: list[dict], n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Every two methods of a task, on the main metric; with several seeds, over all (seed, example) pairs."""
    grouped = groups(records)
    rows = []
    for task in dict.fromkeys(t for t, *_ in grouped):
        methods = [(m, recs) for t, m, recs in grouped if t == task]
        for (name_a, ra), (name_b, rb) in combinations(methods, 2):
            metric = ra[0]["metrics"]["main_metric"]
            hashes = {eval_hash(r) for r in ra + rb}
            if len(hashes) != 1 or metric not in rb[0]["metrics"]["quality"]:
                continue
            m = get_metric(metric)
            res = paired_over_seeds(seed_values(ra, metric), seed_values(rb, metric), m.aggregation, n_boot, seed)
            if res is None:
                continue
            if not res["significant"]:
                verdict = "no significant difference"
            else:
                a_better = m.gain(res["diff"], 0.0) > 0  # diff is A - B
                verdict = f"{name_a if a_better else name_b} better"
            rows.append({"task": task, "a": name_a, "b": name_b, "metric": metric, **res, "verdict": verdict})
    return rows


def comparison_table(rows: list[dict]) -> Table:
    columns = tuple(Column(n) for n in ("task", "A vs B", "metric", "A - B", "95% CI", "p", "verdict"))
    body = tuple((r["task"], f"{r['a']} vs {r['b']}", r["metric"], Value(r["diff"], signed=True),
                  f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]", Value(r["p_value"]), r["verdict"]) for r in rows)
    return Table(columns, body, title="paired comparisons (main metric, paired bootstrap over eval examples)",
                 keys=3)
