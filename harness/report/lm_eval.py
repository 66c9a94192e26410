"""Standard benchmarks (``--lm-eval``, harness/evaluate/lm_eval.py) in the report: each cell's lm-eval scores with
lm-eval's standard error, and the difference from base, in a table under each task's own table."""

from __future__ import annotations

from harness.report.cross_task import is_base
from harness.report.render import markdown
from harness.report.seeds import label
from harness.report.table import Column, Table, Value


def lm_eval_table(records: list[dict], task: str) -> Table | None:
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
    rows = []
    for r in recs:
        cells = [label(r, records)]
        for bench, name in columns:
            v = r["metrics"]["lm_eval"]["results"].get(bench, {}).get(name)
            ref = (base["metrics"]["lm_eval"]["results"].get(bench, {}).get(name) or {}) if base else {}
            if v is None:
                cells.append("-")
                continue
            delta = f"({v['value'] - ref['value']:+.3f} vs base)" if r is not base and ref.get("value") is not None \
                else ""
            cells.append(Value(v["value"], stderr=v["stderr"], note=delta))
        rows.append(tuple(cells))
    return Table((Column("method"), *[Column(f"{b} {n}", d) for (b, n), d in columns.items()]), tuple(rows),
                 title=lm_eval_caption(records, task))


def lm_eval_caption(records: list[dict], task: str) -> str:
    recs = [r for r in records if r["task"] == task and (r.get("metrics") or {}).get("lm_eval")]
    lm = recs[0]["metrics"]["lm_eval"]
    limit = f", at most {lm['limit']} examples per task" if lm.get("limit") else ""
    return (f"Standard benchmarks on each {task} cell's final model (lm-evaluation-harness "
            f"{lm.get('lm_eval_version') or ''}{limit}): value ± lm-eval's standard error.")


def lm_eval_markdown(records: list[dict], task: str) -> list[str]:
    table = lm_eval_table(records, task)
    if table is None:
        return []
    return [f"**{table.title}**", "", markdown(table), ""]
