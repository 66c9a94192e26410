"""What fine-tuning costs elsewhere, from the stored records: the cross-task table and plots, and lm-eval results.

Cross-task (``--cross-eval``, harness/evaluate/cross_task.py): for each trained (task, method), the change of every other
task's main metric against base, as "trained on cnn, lora: guanaco ifeval_instruction_strict -0.21 [-0.30, -0.12]".
The trained model's predictions on that task (``predictions.<task>.jsonl``) are paired by example id (and seed)
with the predictions of that task's base cell, which is the reference and is never evaluated again; the CI is
the paired bootstrap over examples (harness/report/seeds.py ``paired_over_seeds``, the same as the paired comparisons).
A pair is made only when both evaluated the same eval rows (the same content hash). The trained task's own
column is the gain from training, measured the same way, so one row reads "gained this, lost that".

lm-eval (``--lm-eval``, harness/evaluate/lm_eval.py): each cell's standard-benchmark scores with lm-eval's
standard error, and the difference from base, in a table under each task's own table.
"""

from __future__ import annotations

from pathlib import Path

from harness.core.files import read_json, read_jsonl
from harness.spec.metrics import get_metric
from harness.report.seeds import groups, label, paired_over_seeds, seed_of

OWN = "own"


# --- cross-task arithmetic ---------------------------------------------------------------------------------
def is_base(rec: dict) -> bool:
    return rec["config"]["method"].get("finetune") == "none"


def base_groups(records: list[dict]) -> dict[str, list[dict]]:
    """task -> the cells of its reference method: the one named base, else the first untrained method."""
    out: dict[str, list[dict]] = {}
    for task, method, recs in groups(records):
        if is_base(recs[0]) and (task not in out or method == "base"):
            out[task] = recs
    return out


def example_values(rec: dict, file: str, metric: str) -> dict:
    """id -> per-example value of ``metric`` in one predictions file of a cell (JSON lists become tuples)."""
    out = {}
    for i, p in enumerate(read_jsonl(Path(rec["dir"]) / file)):
        v = p.get("scores", {}).get(metric)
        out[str(p.get("id", i))] = tuple(v) if isinstance(v, list) else v
    return out


def _eval_hash(rec: dict) -> str | None:
    path = Path(rec["dir"]) / "data.json"
    return read_json(path).get("eval", {}).get("sha256") if path.is_file() else None


def change(trained: list[dict], file: str, hashes: set, base: list[dict] | None, metric: str, n_boot: int,
           seed: int = 0) -> dict:
    """Paired bootstrap of trained - base on ``metric``; ``note`` says why there is no number."""
    if not base:
        return {"note": "no base cell"}
    both = hashes | {_eval_hash(b) for b in base}
    if len(both) != 1 or None in both:
        return {"note": "eval rows differ from base's"}
    m = get_metric(metric)
    vb = {seed_of(b): example_values(b, "predictions.jsonl", metric) for b in base}
    va = {}
    for r in trained:  # in base's example order, so the resamples do not depend on the order a file was written
        vals, s = example_values(r, file, metric), seed_of(r)
        va[s] = {i: vals[i] for i in vb.get(s, {}) if i in vals}
    res = paired_over_seeds(va, vb, m.aggregation, n_boot, seed)
    if res is None:
        return {"note": "under 2 paired examples"}
    # The gain is the change in the metric's better direction, so a point above 0 in the plots is an improvement.
    lo, hi = (res["ci_low"], res["ci_high"]) if m.higher_is_better else (-res["ci_high"], -res["ci_low"])
    verdict = ("better" if m.gain(res["diff"], 0.0) > 0 else "worse") if res["significant"] else ""
    return {**res, "gain": m.gain(res["diff"], 0.0), "gain_low": lo, "gain_high": hi, "verdict": verdict}


_CACHE: dict[tuple, list[dict]] = {}


def cross_rows(records: list[dict], n_boot: int | None = None, seed: int = 0) -> list[dict]:
    """One row per (trained task, method, evaluated task), own task included, for methods that cross-evaluated."""
    from harness.evaluate.cross_task import predictions_file

    if n_boot is None:
        n_boot = next((r["config"]["hyperparameters"]["bootstrap"] for r in records), 1000)
    grouped = groups(records)
    key = (tuple(r["dir"] for *_, recs in grouped for r in recs), n_boot, seed)
    if key in _CACHE:  # markdown, terminal and html each ask; the records on disk do not change
        return _CACHE[key]
    bases = base_groups(records)
    rows = []
    for task, method, recs in grouped:
        cross = recs[0]["metrics"].get("cross")
        if is_base(recs[0]) or not cross:
            continue
        metric = recs[0]["metrics"]["main_metric"]
        own = change(recs, "predictions.jsonl", {_eval_hash(r) for r in recs}, bases.get(task), metric, n_boot, seed)
        rows.append({"trained_on": task, "method": method, "task": task, "metric": metric, OWN: True, **own})
        for other in cross:
            entries = [r["metrics"].get("cross", {}).get(other) for r in recs]
            if not all(entries):
                continue
            metric = entries[0]["main_metric"]
            hashes = {e["eval_data"]["sha256"] for e in entries}
            res = change(recs, predictions_file(other), hashes, bases.get(other), metric, n_boot, seed)
            rows.append({"trained_on": task, "method": method, "task": other, "metric": metric, OWN: False, **res})
    _CACHE[key] = rows
    return rows


# --- cross-task tables -------------------------------------------------------------------------------------
def _cell(row: dict, ci_sep: str) -> str:
    if "diff" not in row:
        return row["note"]
    text = f"{row['diff']:+.3f}{ci_sep}[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
    tags = [t for t in (row["verdict"], "trained task" if row[OWN] else "") if t]
    return text + (f" ({', '.join(tags)})" if tags else "")


def cross_table(records: list[dict], ci_sep: str = " ") -> tuple[list[str], list[list[str]]] | None:
    """Rows (trained task, method) x columns (each task's main metric): change against base, or None."""
    rows = cross_rows(records)
    if not rows:
        return None
    tasks = list(dict.fromkeys([r["task"] for r in records] + [r["task"] for r in rows]))
    metric = {r["task"]: r["metric"] for r in rows}
    tasks = [t for t in tasks if t in metric]
    header = ["trained on", "method"] + [
        f"{t}: {metric[t]} {'↑' if get_metric(metric[t]).higher_is_better else '↓'}" for t in tasks]
    body = []
    for key in dict.fromkeys((r["trained_on"], r["method"]) for r in rows):
        cells = {r["task"]: _cell(r, ci_sep) for r in rows if (r["trained_on"], r["method"]) == key}
        body.append([*key, *[cells.get(t, "not evaluated") for t in tasks]])
    return header, body


CROSS_NOTE = ("Each cell: the trained model's main metric on that task minus base's on the same eval examples "
              "(paired bootstrap by example id, 95% CI); better/worse when the CI excludes 0. Base is the reference "
              "and is evaluated once per task, by its own cells. The trained task's own column is the gain from "
              "training; the others are what training cost (or gave) elsewhere.")


def cross_markdown(records: list[dict]) -> list[str]:
    from harness.report.tables import markdown_table

    table = cross_table(records)
    if table is None:
        return []
    return ["## Forgetting across tasks (--cross-eval)", "", CROSS_NOTE, "", markdown_table(*table), ""]


def print_cross(records: list[dict], console) -> None:
    from rich.table import Table

    table = cross_table(records, ci_sep="\n")
    if table is None:
        return
    header, rows = table
    out = Table(title="change against base on each task (95% paired bootstrap CI below)", title_justify="left")
    for i, h in enumerate(header):
        out.add_column(h, justify="left" if i < 2 else "right", overflow="fold")
    for row in rows:
        out.add_row(*row)
    console.print(out)


def gain_plot(task: str, records: list[dict]) -> str | None:
    """Trained on ``task``: each method's gain there (x) against its change on each other task (y), with CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report.html import _png

    rows = [r for r in cross_rows(records) if r["trained_on"] == task and "gain" in r]
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
    return _png(fig)


def cross_html(records: list[dict]) -> list[str]:
    """The cross-task section of report.html: the table, then one plot per trained task."""
    import html

    from harness.report.html import _table

    table = cross_table(records)
    if table is None:
        return []
    parts = ["<h2>Forgetting across tasks (--cross-eval)</h2>", f"<p class='note'>{html.escape(CROSS_NOTE)}</p>",
             _table(*table)]
    images = [(t, gain_plot(t, records)) for t in dict.fromkeys(r["trained_on"] for r in cross_rows(records))]
    parts.append("<div class='plots'>" + "".join(f"<img alt='gain vs change {html.escape(t)}' src='{uri}'>"
                                                  for t, uri in images if uri) + "</div>")
    return parts


# --- lm-eval -----------------------------------------------------------------------------------------------
def lm_eval_table(records: list[dict], task: str) -> tuple[list[str], list[list[str]]] | None:
    """The task's cells x (lm-eval task, metric): value ± stderr, and the difference from base's value."""
    recs = [r for r in records if r["task"] == task and (r.get("metrics") or {}).get("lm_eval")]
    if not recs:
        return None
    columns: dict[tuple, bool | None] = {}
    for r in recs:
        lm = r["metrics"]["lm_eval"]
        asked = lm.get("tasks", [])  # the order asked for first; a group's subtasks after it
        for bench in sorted(lm["results"], key=lambda b: asked.index(b) if b in asked else len(asked)):
            for name, v in lm["results"][bench].items():
                columns.setdefault((bench, name), v.get("higher_is_better"))
    base = next((r for r in recs if is_base(r)), None)
    arrow = {True: " ↑", False: " ↓", None: ""}
    header = ["method", *[f"{b} {n}{arrow[d]}" for (b, n), d in columns.items()]]
    rows = []
    for r in recs:
        cells = [label(r, records)]
        for bench, name in columns:
            v = r["metrics"]["lm_eval"]["results"].get(bench, {}).get(name)
            ref = (base["metrics"]["lm_eval"]["results"].get(bench, {}).get(name) or {}) if base else {}
            if v is None:
                cells.append("-")
                continue
            text = f"{v['value']:.3f}" + (f" ± {v['stderr']:.3f}" if v["stderr"] is not None else "")
            if r is not base and ref.get("value") is not None:
                text += f" ({v['value'] - ref['value']:+.3f} vs base)"
            cells.append(text)
        rows.append(cells)
    return header, rows


def lm_eval_caption(records: list[dict], task: str) -> str:
    recs = [r for r in records if r["task"] == task and (r.get("metrics") or {}).get("lm_eval")]
    lm = recs[0]["metrics"]["lm_eval"]
    limit = f", at most {lm['limit']} examples per task" if lm.get("limit") else ""
    return (f"Standard benchmarks on each {task} cell's final model (lm-evaluation-harness "
            f"{lm.get('lm_eval_version') or ''}{limit}): value ± lm-eval's standard error.")


def lm_eval_markdown(records: list[dict], task: str) -> list[str]:
    from harness.report.tables import markdown_table

    table = lm_eval_table(records, task)
    if table is None:
        return []
    return [f"**{lm_eval_caption(records, task)}**", "", markdown_table(*table), ""]


def print_lm_eval(records: list[dict], task: str, console) -> None:
    from rich.table import Table

    table = lm_eval_table(records, task)
    if table is None:
        return
    header, rows = table
    out = Table(title=lm_eval_caption(records, task), title_justify="left")
    for i, h in enumerate(header):
        out.add_column(h, justify="left" if i == 0 else "right", overflow="fold")
    for row in rows:
        out.add_row(*row)
    console.print(out)


def lm_eval_html(records: list[dict], task: str) -> list[str]:
    import html

    from harness.report.html import _table

    table = lm_eval_table(records, task)
    if table is None:
        return []
    return [f"<h4>{html.escape(lm_eval_caption(records, task))}</h4>", _table(*table)]
