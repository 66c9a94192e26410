"""What fine-tuning cost on the run's other tasks (``--cross-eval``), from the stored records.

For each trained (task, method), the change of every other task's main metric against base, as "trained on cnn,
lora: guanaco ifeval_instruction_strict -0.21 [-0.30, -0.12]". The trained model's predictions on that task
(``predictions.<task>.jsonl``, harness/evaluate/cross_task.py) are paired by example id (and seed) with the
predictions of that task's base cell, which is the reference and is never evaluated again; the CI is the paired
bootstrap over examples (harness.core.stats ``paired_over_seeds``, as in the paired comparisons). A pair is made only
when both evaluated the same eval rows (the same content hash). The trained task's own column is the gain from
training, measured the same way, so one row reads "gained this, lost that".
"""

from __future__ import annotations

import html

from harness.core.stats import paired_over_seeds
from harness.records.load import eval_hash, example_values
from harness.records.store import predictions_file
from harness.report.plots import png, pyplot
from harness.report.render import html_table, markdown
from harness.report.seeds import groups, seed_of
from harness.report.table import Column, Table, Value
from harness.spec.metrics import get_metric

OWN = "own"
NOTE = ("Each cell: the trained model's main metric on that task minus base's on the same eval examples "
        "(paired bootstrap by example id, 95% CI); better/worse when the CI excludes 0. Base is the reference "
        "and is evaluated once per task, by its own cells. The trained task's own column is the gain from "
        "training; the others are what training cost (or gave) elsewhere.")


def is_base(rec: dict) -> bool:
    return rec["config"]["method"].get("finetune") == "none"


def base_groups(records: list[dict]) -> dict[str, list[dict]]:
    """task -> the cells of its reference method: the one named base, else the first untrained method."""
    out: dict[str, list[dict]] = {}
    for task, method, recs in groups(records):
        if is_base(recs[0]) and (task not in out or method == "base"):
            out[task] = recs
    return out


def change(trained: list[dict], file: str, hashes: set, base: list[dict] | None, metric: str, n_boot: int,
           seed: int = 0) -> dict:
    """Paired bootstrap of trained - base on ``metric``; ``note`` says why there is no number."""
    if not base:
        return {"note": "no base cell"}
    both = hashes | {eval_hash(b) for b in base}
    if len(both) != 1 or None in both:
        return {"note": "eval rows differ from base's"}
    m = get_metric(metric)
    vb = {seed_of(b): example_values(b, metric) for b in base}
    va = {}
    for r in trained:  # in base's example order, so the resamples do not depend on the order a file was written
        vals, s = example_values(r, metric, file), seed_of(r)
        va[s] = {i: vals[i] for i in vb.get(s, {}) if i in vals}
    res = paired_over_seeds(va, vb, m.aggregation, n_boot, seed)
    if res is None:
        return {"note": "under 2 paired examples"}
    # The gain is the change in the metric's better direction, so a point above 0 in the plots is an improvement.
    lo, hi = (res["ci_low"], res["ci_high"]) if m.higher_is_better else (-res["ci_high"], -res["ci_low"])
    verdict = ("better" if m.gain(res["diff"], 0.0) > 0 else "worse") if res["significant"] else ""
    return {**res, "gain": m.gain(res["diff"], 0.0), "gain_low": lo, "gain_high": hi, "verdict": verdict}


def cross_rows(records: list[dict], n_boot: int | None = None, seed: int = 0) -> list[dict]:
    """One row per (trained task, method, evaluated task), own task included, for methods that cross-evaluated."""
    if n_boot is None:
        n_boot = next((r["config"]["hyperparameters"]["bootstrap"] for r in records), 1000)
    bases = base_groups(records)
    rows = []
    for task, method, recs in groups(records):
        cross = recs[0]["metrics"].get("cross")
        if is_base(recs[0]) or not cross:
            continue
        metric = recs[0]["metrics"]["main_metric"]
        own = change(recs, "predictions.jsonl", {eval_hash(r) for r in recs}, bases.get(task), metric, n_boot, seed)
        rows.append({"trained_on": task, "method": method, "task": task, "metric": metric, OWN: True, **own})
        for other in cross:
            entries = [r["metrics"].get("cross", {}).get(other) for r in recs]
            if not all(entries):
                continue
            metric = entries[0]["main_metric"]
            hashes = {e["eval_data"]["sha256"] for e in entries}
            res = change(recs, predictions_file(other), hashes, bases.get(other), metric, n_boot, seed)
            rows.append({"trained_on": task, "method": method, "task": other, "metric": metric, OWN: False, **res})
    return rows


def _cell(row: dict):
    if "diff" not in row:
        return row["note"]
    tags = [t for t in (row["verdict"], "trained task" if row[OWN] else "") if t]
    return Value(row["diff"], (row["ci_low"], row["ci_high"]), signed=True,
                 note=f"({', '.join(tags)})" if tags else "")


def cross_table(records: list[dict], rows: list[dict] | None = None) -> Table | None:
    """Rows (trained task, method) x columns (each task's main metric): change against base, or None."""
    rows = cross_rows(records) if rows is None else rows
    if not rows:
        return None
    tasks = list(dict.fromkeys([r["task"] for r in records] + [r["task"] for r in rows]))
    metric = {r["task"]: r["metric"] for r in rows}
    tasks = [t for t in tasks if t in metric]
    columns = (Column("trained on"), Column("method"),
               *[Column(f"{t}: {metric[t]}", get_metric(metric[t]).higher_is_better, ci=True) for t in tasks])
    body = []
    for key in dict.fromkeys((r["trained_on"], r["method"]) for r in rows):
        cells = {r["task"]: _cell(r) for r in rows if (r["trained_on"], r["method"]) == key}
        body.append((*key, *[cells.get(t, "not evaluated") for t in tasks]))
    return Table(columns, tuple(body), title="change against base on each task (95% paired bootstrap CI below)",
                 keys=2)


def cross_markdown(records: list[dict], table: Table | None = None) -> list[str]:
    table = cross_table(records) if table is None else table
    if table is None:
        return []
    return ["## Forgetting across tasks (--cross-eval)", "", NOTE, "", markdown(table), ""]


def gain_plot(task: str, records: list[dict], rows: list[dict] | None = None) -> str | None:
    """Trained on ``task``: each method's gain there (x) against its change on each other task (y), with CIs."""
    plt = pyplot()
    rows = [r for r in (cross_rows(records) if rows is None else rows) if r["trained_on"] == task and "gain" in r]
    own = {r["method"]: r for r in rows if r[OWN]}
    points = [r for r in rows if not r[OWN] and r["method"] in own]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, other in enumerate(dict.fromkeys(r["task"] for r in points)):
        for i, r in enumerate(p for p in points if p["task"] == other):
            o = own[r["method"]]
            ax.errorbar([o["gain"]], [r["gain"]], xerr=[[o["gain"] - o["gain_low"]], [o["gain_high"] - o["gain"]]],
                        yerr=[[r["gain"] - r["gain_low"]], [r["gain_high"] - r["gain"]]], fmt="os^Dv"[k % 5], ms=7,
                        capsize=3, color=f"C{k}", label=other if i == 0 else None)
            ax.annotate(r["method"], (o["gain"], r["gain"]), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.axhline(0, color="tab:gray", lw=0.8)
    ax.axvline(0, color="tab:gray", lw=0.8)
    ax.set_xlabel(f"gain on {task} ({next(iter(own.values()))['metric']}) vs base")
    ax.set_ylabel("change on the other task's main metric vs base\n(above 0 is better)")
    ax.set_title(f"trained on {task}: gain there vs change elsewhere")
    ax.legend(title="evaluated on", fontsize=8)
    ax.grid(alpha=.3)
    return png(fig)


def cross_html(records: list[dict], rows: list[dict] | None = None) -> list[str]:
    """The cross-task section of report.html: the table, then one plot per trained task."""
    rows = cross_rows(records) if rows is None else rows
    table = cross_table(records, rows)
    if table is None:
        return []
    parts = ["<h2>Forgetting across tasks (--cross-eval)</h2>", f"<p class='note'>{html.escape(NOTE)}</p>",
             html_table(table)]
    images = [(t, gain_plot(t, records, rows)) for t in dict.fromkeys(r["trained_on"] for r in rows)]
    parts.append("<div class='plots'>" + "".join(f"<img alt='gain vs change {html.escape(t)}' src='{uri}'>"
                                                  for t, uri in images if uri) + "</div>")
    return parts
