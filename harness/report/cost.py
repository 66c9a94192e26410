"""What each method costs, set against what it scores: the view a user decides by.

A prompting method pays at every query (longer prompts: more prompt tokens and eval seconds per query); a trained
method pays once (training seconds) and then queries at its own prompt's price. So each method's cost is put on one
scale: its training seconds plus the eval seconds of 1,000 queries, with its peak memory beside it. The figures are
the cells' own (metrics.json ``measurements``), means over seeds where there are several.
"""

from __future__ import annotations

from harness.core.units import MIB
from harness.report.plots import png, pyplot
from harness.report.seeds import collapse
from harness.report.table import Column, Table, Value, mib
from harness.spec.metrics import get_metric

QUERIES = 1000  # the query count the total cost is stated for


def cost_of(rec: dict) -> dict:
    """{train_s, eval_s_per_query, total_s, peak_bytes, prompt_tokens} of a record (or a seed-mean row)."""
    meas = rec["metrics"]["measurements"]
    prompts = meas.get("prompts") or {}
    per_query = prompts.get("eval_s_per_example")
    if per_query is None:  # a record from before prompts were measured: its eval time over its examples
        first = (rec.get("seed_records") or [rec])[0]  # a seed-mean row has no example count; its seeds share one
        q = first["metrics"]["quality"].get(first["metrics"]["main_metric"]) or {}
        per_query = meas["timing"]["eval_s"] / q["n"] if q.get("n") else None
    train_s = meas["timing"].get("train_s") or 0.0
    return {"train_s": train_s, "eval_s_per_query": per_query,
            "total_s": None if per_query is None else train_s + QUERIES * per_query,
            "peak_bytes": meas["memory"].get("peak_bytes"), "prompt_tokens": prompts.get("prompt_tokens_mean")}


def cost_table(task: str, records: list[dict]) -> Table | None:
    """One row per method of ``task``: its main metric, then what it costs, to train and per query."""
    rows = [r for r in collapse(records) if r["task"] == task and r.get("metrics")]
    if not rows:
        return None
    metric = rows[0]["metrics"]["main_metric"]
    base = next((cost_of(r)["prompt_tokens"] for r in rows if r["method"] == "base"), None)
    columns = (Column("method"), Column(metric, get_metric(metric).higher_is_better, ci=True),
               Column("train s"), Column(f"eval s / {QUERIES:,} queries"), Column(f"train + {QUERIES:,} queries s"),
               Column("peak MiB"), Column("prompt tok / query"), *([Column("x base prompt")] if base else []))
    out = []
    for r in rows:
        c, q = cost_of(r), r["metrics"]["quality"].get(metric) or {}
        per_1k = None if c["eval_s_per_query"] is None else QUERIES * c["eval_s_per_query"]
        ratio = [Value(c["prompt_tokens"] / base, digits=2) if base and c["prompt_tokens"] else "-"] if base else []
        out.append((r["method"], Value(q.get("value"), (q.get("ci_low"), q.get("ci_high"))),
                    Value(c["train_s"], digits=0), Value(per_1k, digits=0), Value(c["total_s"], digits=0),
                    mib(c["peak_bytes"]), Value(c["prompt_tokens"], digits=0), *ratio))
    return Table(columns, tuple(out), title=f"{task}: quality against cost (training once, then {QUERIES:,} queries "
                                             "at each method's own prompt length)")


def cost_plot(task: str, records: list[dict]) -> str | None:
    """The main metric against training seconds plus the eval seconds of 1,000 queries (a log scale where they span
    a decade), each point labelled with its method and peak memory."""
    rows = [r for r in collapse(records) if r["task"] == task and r.get("metrics")]
    pts = []
    for r in rows:
        c, q = cost_of(r), r["metrics"]["quality"].get(r["metrics"]["main_metric"]) or {}
        if c["total_s"] and q.get("value") is not None:
            pts.append((c["total_s"], q["value"], r["method"], (c["peak_bytes"] or 0) / MIB, r))
    if not pts:
        return None
    metric = rows[0]["metrics"]["main_metric"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for x, y, name, peak, r in pts:
        trains = r["config"]["method"].get("finetune") != "none"
        ax.plot([x], [y], marker="s" if trains else "o", ms=8, color="tab:blue" if trains else "tab:orange")
        ax.annotate(f"{name} ({peak:,.0f} MiB)", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    xs = [x for x, *_ in pts]
    log = max(xs) / min(xs) >= 10  # a log scale only where the costs span a decade; else its ticks crowd
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(f"training s + eval s of {QUERIES:,} queries" + (" (log)" if log else ""))
    ax.set_ylabel(f"{metric} ({'higher' if get_metric(metric).higher_is_better else 'lower'} is better)")
    ax.set_title(f"{task}: quality against cost (squares train, circles prompt)")
    ax.grid(alpha=.3)
    return png(fig)


def prompt_notes(records: list[dict]) -> list[str]:
    """A line per cell whose prompts dropped shots to fit --max-seq-len (metrics.json ``prompts``)."""
    out = []
    for r in records:
        shots = ((r.get("metrics") or {}).get("measurements", {}).get("prompts") or {}).get("shots")
        if shots and shots.get("shots_dropped"):
            limit = r["config"]["hyperparameters"].get("max_seq_len")
            n = (r["metrics"]["measurements"]["prompts"] or {}).get("examples")
            out.append(f"Shots of {r['task']} x {r['method']}: {shots['rows_with_shots_dropped']} of {n} test prompts "
                       f"dropped shots to fit --max-seq-len {limit} ({shots['shots_dropped']} in all; "
                       f"{shots['mean_kept']:.1f} of {shots['asked']} kept on average).")
    return out
