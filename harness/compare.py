"""Paired comparisons between methods on the same task and eval set, from the stored predictions.

For the task's main metric, a paired bootstrap over eval examples (resampling the same examples for both
methods) gives the difference, its 95% CI, and whether it is significant, so "lora beats qlora" is a
claim with evidence. Methods are only compared when their eval rows are identical (same content hash).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

from harness.io import read_json, read_jsonl
from harness.metrics import get_metric
from harness.stats import paired_bootstrap


def _values(rec: dict, metric: str) -> dict:
    """id -> per-example value of ``metric`` (lists from JSON become tuples again)."""
    out = {}
    for i, p in enumerate(read_jsonl(Path(rec["dir"]) / "predictions.jsonl")):
        v = p.get("scores", {}).get(metric)
        out[str(p.get("id", i))] = tuple(v) if isinstance(v, list) else v
    return out


def _eval_hash(rec: dict) -> str | None:
    path = Path(rec["dir"]) / "data.json"
    return read_json(path).get("eval", {}).get("sha256") if path.is_file() else None


def paired_comparisons(records: list[dict], n_boot: int = 1000, seed: int = 0) -> list[dict]:
    rows = []
    for task in dict.fromkeys(r["task"] for r in records):
        recs = [r for r in records if r["task"] == task and r.get("metrics")]
        for a, b in combinations(recs, 2):
            metric = a["metrics"]["main_metric"]
            if _eval_hash(a) != _eval_hash(b) or metric not in b["metrics"]["quality"]:
                continue
            va, vb = _values(a, metric), _values(b, metric)
            ids = [i for i in va if i in vb and va[i] is not None and vb[i] is not None]
            if len(ids) < 2:
                continue
            m = get_metric(metric)
            res = paired_bootstrap([va[i] for i in ids], [vb[i] for i in ids], m.aggregation, n_boot, seed)
            if not res["significant"]:
                verdict = "no significant difference"
            else:
                a_better = m.gain(res["diff"], 0.0) > 0  # diff is A - B
                verdict = f"{a['method'] if a_better else b['method']} better"
            rows.append({"task": task, "a": a["method"], "b": b["method"], "metric": metric, **res,
                         "verdict": verdict})
    return rows


def comparison_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["task", "A vs B", "metric", "A - B", "95% CI", "p", "verdict"]
    body = [[r["task"], f"{r['a']} vs {r['b']}", r["metric"], f"{r['diff']:+.3f}",
             f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]", f"{r['p_value']:.3f}", r["verdict"]] for r in rows]
    return header, body
