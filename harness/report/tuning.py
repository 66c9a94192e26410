"""The tuning of a run in its report: per task, each tuned method's grid, its validation curve, and the choice.

The figures come from the tuning cells' records (harness/records/tuning.py makes the same choice the runner
made); the task's main table above it holds the chosen points' test figures only. A plot of each method's
validation curve goes into report.html.
"""

from __future__ import annotations

import dataclasses

from harness.records.tuning import Tuning
from harness.report.plots import png, pyplot
from harness.report.table import Column, Table, Value
from harness.spec.metrics import get_metric


def tested(tunings: list[Tuning], records: list[dict]) -> list[Tuning]:
    """The tunings with ``chosen`` set to the rate the test cells actually ran at (their config), which the records
    choose again unless a grid point was redone since; a method with no test cell keeps the records' choice."""
    ran = {(r["task"], r["method"]): r["config"]["tuning"]["value"] for r in records
           if (r["config"].get("tuning") or {}).get("role") == "chosen"}
    return [dataclasses.replace(t, chosen=ran.get((t.task, t.method), t.chosen)) for t in tunings]


def _what(key: str) -> str:
    return {"lr": "learning rate", "shots": "number of shots", "retrieve": "number of passages"}.get(key, key)


def tuning_table(task: str, tunings: list[Tuning]) -> Table | None:
    """One row per grid point of every tuned method of ``task``; the chosen one marked."""
    mine = [t for t in tunings if t.task == task]
    if not mine:
        return None
    metric = mine[0].main_metric
    one_key = len({t.key for t in mine}) == 1
    columns = (Column("method"), Column(mine[0].key if one_key else "setting"),
               Column(f"{metric} (validation)", get_metric(metric)
                                                               .higher_is_better),
               Column("loss (validation)", False), Column("seeds"), Column("chosen"))
    rows = []
    for t in mine:
        for p in t.points:
            done = all(s == "ok" for s in p.statuses)
            rows.append((t.method, f"{p.value:g}" if one_key else f"{t.key}={p.value:g}", Value(p.metric),
                         Value(p.loss), str(p.seeds),
                         "chosen" if p.value == t.chosen else ("" if done else "/".join(p.statuses))))
    by = mine[0].by
    rows_n = mine[0].validation_rows
    return Table(columns, tuple(rows), keys=2,
                 title=f"{task}: {' and '.join(sorted({_what(t.key) for t in mine}))} chosen on validation "
                       f"({rows_n} rows) by "
                       f"{'the validation loss' if by == 'loss' else by}, mean over seeds")


def tuning_note(tunings: list[Tuning]) -> str | None:
    """The line above the tables that says the test figures are the chosen points', chosen on validation."""
    if not tunings:
        return None
    chosen = "; ".join(f"{t.task} x {t.method}: {t.key}={t.chosen:g}" if t.chosen is not None else
                       f"{t.task} x {t.method}: none (no grid point finished)" for t in tunings)
    by = {t.by for t in tunings}
    edges = " ".join(f"Note: {t.edge_note()}." for t in tunings if t.edge)
    keys = " or ".join(sorted({_what(t.key) for t in tunings}))
    return (f"Tuning: each tuned method's {keys} was chosen on the validation split, by "
            f"{'the validation loss' if by == {'loss'} else 'the task main metric'} (mean over seeds), before any "
            f"test figure was computed; the tables show the chosen points on the test split only, and the paired "
            f"comparisons, the recommendation and the gate use them. Chosen: {chosen}."
            + (f" {edges}" if edges else ""))


def validation_curves(task: str, tunings: list[Tuning]) -> str | None:
    """Each tuned method's validation measure against its tuned setting (a learning rate on a log scale), the
    chosen point filled."""
    mine = [t for t in tunings if t.task == task and any(p.measure is not None for p in t.points)]
    if not mine:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for t in mine:
        pts = [(p.value, p.measure) for p in t.points if p.measure is not None]
        line, = ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=t.method)
        best = [(x, y) for x, y in pts if x == t.chosen]
        if best:
            ax.plot(*best[0], marker="o", ms=11, mfc="none", mec=line.get_color(), mew=2)
    by = mine[0].by
    if all(t.key == "lr" for t in mine):
        ax.set_xscale("log")
    ax.set_xlabel(" / ".join(sorted({t.key for t in mine})))
    ax.set_ylabel(f"{by} on validation ({'higher' if get_metric(by).higher_is_better else 'lower'} is better)")
    ax.set_title(f"{task}: validation curve (circled: chosen)")
    ax.legend(fontsize=8)
    ax.grid(alpha=.3)
    return png(fig)
