"""A self-contained ``report.html``: the tables plus matplotlib plots embedded as PNG data URIs.

Plots: quality (the task's main metric) against peak memory with the Pareto frontier marked, training loss
curves per method, and tokens/s per method; with --cross-eval, one plot per trained task of its gain there
against the change on the other tasks (harness/report/cross_task.py). Everything is built from the stored records alone.
"""

from __future__ import annotations

import base64
import html
import io

from harness.spec.metrics import get_metric
from harness.report.seeds import collapse, label

MIB = 2**20
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:8px}.plots img{width:380px;border:1px solid #eee}
.fail{color:#b00}.note{color:#555;font-size:13px}.rec{max-width:900px;background:#f4f8f4;padding:8px 12px;
border-left:4px solid #2a7a2a}"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both memory (lower) and quality (better)."""
    sign = 1 if higher_is_better else -1
    front = []
    for i, (mem, q) in enumerate(points):
        dominated = any((m2 <= mem and sign * q2 >= sign * q) and (m2 < mem or sign * q2 > sign * q)
                        for j, (m2, q2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def quality_vs_memory(task: str, recs: list[dict]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in recs if r.get("metrics")]
    if not recs:
        return None
    metric = recs[0]["metrics"]["main_metric"]
    m = get_metric(metric)
    pts, labels, errs = [], [], []
    for r in recs:
        q = r["metrics"]["quality"].get(metric)
        if not q or q["value"] is None:
            continue
        pts.append((r["metrics"]["measurements"]["memory"]["peak_bytes"] / MIB, q["value"]))
        errs.append((q["value"] - (q["ci_low"] or q["value"]), (q["ci_high"] or q["value"]) - q["value"]))
        labels.append(r["method"])
    if not pts:
        return None
    front = pareto_front(pts, m.higher_is_better)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, ((x, y), lab) in enumerate(zip(pts, labels)):
        on = i in front
        ax.errorbar([x], [y], yerr=[[errs[i][0]], [errs[i][1]]], fmt="o", ms=8, capsize=3,
                    mfc="tab:red" if on else "white", mec="tab:red" if on else "tab:gray",
                    ecolor="tab:gray")
        ax.annotate(lab, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    fx = [pts[i][0] for i in front]
    fy = [pts[i][1] for i in front]
    ax.step(fx, fy, where="post", color="tab:red", lw=1.2, label="Pareto frontier")
    ax.set_xlabel("peak memory (MiB)")
    ax.set_ylabel(f"{metric} ({'higher' if m.higher_is_better else 'lower'} is better)")
    ax.set_title(f"{task}: quality vs memory")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=.3)
    return _png(fig)


def loss_curves(task: str, recs: list[dict]) -> str | None:
    import matplotlib.pyplot as plt

    curves = [(label(r, recs), r["train"]["loss_curve"]) for r in recs
              if r.get("train", {}).get("trained") and r["train"].get("loss_curve")]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, curve in curves:
        ax.plot([p["step"] for p in curve], [p["loss"] for p in curve], marker=".", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (completion tokens)")
    ax.set_title(f"{task}: training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=.3)
    return _png(fig)


def throughput(task: str, recs: list[dict]) -> str | None:
    import matplotlib.pyplot as plt
    import numpy as np

    recs = [r for r in recs if r.get("metrics")]
    if not recs:
        return None
    names = [r["method"] for r in recs]
    train = [r["metrics"]["measurements"]["timing"]["train_tokens_per_s"] or 0 for r in recs]
    gen = [r["metrics"]["measurements"]["timing"]["generation_tokens_per_s"] or 0 for r in recs]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.bar(x - 0.2, train, 0.4, label="train tokens/s")
    ax.bar(x + 0.2, gen, 0.4, label="generation tokens/s")
    ax.set_xticks(x, names)
    ax.set_ylabel("tokens per second")
    ax.set_title(f"{task}: throughput")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=.3)
    return _png(fig)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cls = ' class="fail"' if len(row) > 1 and str(row[1]).startswith(("failed", "skipped")) else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render(title: str, records: list[dict], tables: dict, comparisons: tuple, notes: list[str],
           recommendations: dict | None = None) -> str:
    """The page; ``recommendations`` ({task: paragraph}) go under each task's plots, beside the Pareto plot."""
    from harness.report import cross_task as forgetting  # imported here: it draws with this module's helpers
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
    for task, (header, rows) in tables.items():
        recs = [r for r in records if r["task"] == task]
        shown = [r for r in collapse(records) if r["task"] == task]  # one point and bar per method: seed means
        parts.append(f"<h2>{html.escape(task)}</h2>")
        parts.append(_table(header, rows))
        for r in recs:
            for name, t in ((r.get("metrics") or {}).get("extra") or {}).items():
                parts.append(f"<h4>{html.escape(label(r, recs))}: {html.escape(name)}</h4>")
                parts.append(_table(t["header"], t["rows"]))
        parts += forgetting.lm_eval_html(records, task)
        images = [(make.__name__, make(task, subset)) for make, subset in
                  ((quality_vs_memory, shown), (loss_curves, recs), (throughput, shown))]
        parts.append("<div class='plots'>" + "".join(f"<img alt='{name} {html.escape(task)}' src='{uri}'>"
                                                      for name, uri in images if uri) + "</div>")
        if (recommendations or {}).get(task):
            parts.append(f"<p class='rec'><b>Recommendation.</b> {html.escape(recommendations[task])}</p>")
    parts += forgetting.cross_html(records)  # --cross-eval: the task x method table and a plot per task
    header, rows = comparisons
    if rows:
        parts.append("<h2>Paired comparisons (main metric, paired bootstrap over eval examples)</h2>")
        parts.append(_table(header, rows))
    parts.append("</body></html>")
    return "\n".join(parts)
