"""A self-contained ``report.html``: the report's tables plus its plots embedded as PNG data URIs.

Plots (harness/report/plots.py): quality (the task's main metric) against peak memory with the Pareto frontier
marked, quality against training plus per-query cost (harness/report/cost.py), training loss curves per method, and
tokens/s per method; with --cross-eval, one plot per trained task of
its gain there against the change on the other tasks (harness/report/cross_task.py). Everything is built from the
stored records alone.
"""

from __future__ import annotations

import html

from harness.report.cost import cost_plot
from harness.report.cross_task import cross_html
from harness.report.plots import loss_curves, quality_vs_memory, throughput
from harness.report.render import html_table
from harness.report.seeds import collapse
from harness.report.tuning import validation_curves

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:8px}.plots img{width:380px;border:1px solid #eee}
.fail{color:#b00}.note{color:#555;font-size:13px}.rec{max-width:900px;background:#f4f8f4;padding:8px 12px;
border-left:4px solid #2a7a2a}"""


def render(report) -> str:
    """The page of a harness.report.document.Report."""
    records = list(report.records)
    title = html.escape(report.title)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
             f"<style>{CSS}</style></head><body><h1>{title}</h1>"]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in report.notes]
    shown_all = collapse(records)
    for s in report.sections:
        recs = [r for r in records if r["task"] == s.task]
        shown = [r for r in shown_all if r["task"] == s.task]  # one point and bar per method: seed means
        parts.append(f"<h2>{html.escape(s.task)}</h2>")
        parts.append(html_table(s.table))
        if s.cost is not None:
            parts += [f"<h4>{html.escape(s.cost.title)}</h4>", html_table(s.cost)]
        for caption, table in s.extras:
            parts.append(f"<h4>{html.escape(caption)}</h4>")
            parts.append(html_table(table))
        if s.lm_eval is not None:
            parts += [f"<h4>{html.escape(s.lm_eval.title)}</h4>", html_table(s.lm_eval)]
        if s.tuning is not None:
            parts += [f"<h4>{html.escape(s.tuning.title)}</h4>", html_table(s.tuning)]
            parts += [f"<p class='note'>{html.escape(n.replace('**', ''))}</p>" for n in s.search]
        images = [(make.__name__, make(s.task, subset)) for make, subset in
                  ((quality_vs_memory, shown), (cost_plot, recs), (loss_curves, recs), (throughput, shown),
                   (validation_curves, list(report.tunings)))]
        parts.append("<div class='plots'>" + "".join(f"<img alt='{name} {html.escape(s.task)}' src='{uri}'>"
                                                      for name, uri in images if uri) + "</div>")
        if s.recommendation:
            parts.append(f"<p class='rec'><b>Recommendation.</b> {html.escape(s.recommendation)}</p>")
    parts += cross_html(records, list(report.cross_rows))  # --cross-eval: the table and a plot per trained task
    if report.comparisons is not None and report.comparisons.rows:
        parts.append("<h2>Paired comparisons (main metric, paired bootstrap over eval examples)</h2>")
        parts.append(html_table(report.comparisons))
    parts.append("</body></html>")
    return "\n".join(parts)
