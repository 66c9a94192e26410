"""Paired comparisons between methods on the same task and eval set, from the stored predictions.

For the task's main metric, a paired bootstrap over eval examples (resampling the same examples for both
methods) gives the difference, its 95% CI, and whether it is significant, so "lora beats qlora" is a
claim with evidence. Methods are only compared when their eval rows are identical (same content hash). With
several seeds the values are paired by (seed, example id) and the bootstrap resamples examples (harness/report/seeds.py).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

from harness.core.files import read_json
from harness.spec.metrics import get_metric
from harness.report.seeds import groups, paired_over_seeds, seed_values


def _eval_hash(rec: dict) -> str | None:
    path = Path(rec["dir"]) / "data.json"
    return read_json(path).get("eval", {}).get("sha256") if path.is_file() else None


_CACHE: dict[tuple, list[dict]] = {}


def paired_comparisons(records: list[dict], n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Every two methods of a task, on the main metric; with several seeds, over all (seed, example) pairs."""
    grouped = groups(records)
    key = (tuple(r["dir"] for *_, recs in grouped for r in recs), n_boot, seed)
    if key in _CACHE:  # the report and the recommendation both ask; records on disk do not change
        return _CACHE[key]
    rows = []
    for task in dict.fromkeys(t for t, *_ in grouped):
        methods = [(m, recs) for t, m, recs in grouped if t == task]
        for (name_a, ra), (name_b, rb) in combinations(methods, 2):
            metric = ra[0]["metrics"]["main_metric"]
            hashes = {_eval_hash(r) for r in ra + rb}
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
    _CACHE[key] = rows
    return rows


def comparison_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["task", "A vs B", "metric", "A - B", "95% CI", "p", "verdict"]
    body = [[r["task"], f"{r['a']} vs {r['b']}", r["metric"], f"{r['diff']:+.3f}",
             f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]", f"{r['p_value']:.3f}", r["verdict"]] for r in rows]
    return header, body
