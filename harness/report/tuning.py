"""The search of a run in its report: per task, every tuned method's trials, the choice, and what the search found.

The figures come from the tuning cells' records and the searches' own records (harness/records/tuning.py makes the
same choice the runner made); the task's main table above holds the chosen trials' test figures only. Per tuned
method: every trial with its settings, validation figures and state (complete, pruned, failed), the chosen one
marked; the settings left out of its search and why; the ranges widened at an edge, and a best still at an edge;
the settings' importances. report.html adds a plot of the validation measure against each searched setting.
"""

from __future__ import annotations

import dataclasses

from harness.records.tuning import Tuning
from harness.report.plots import png, pyplot
from harness.report.table import Column, Table, Value
from harness.spec.metrics import get_metric
from harness.spec.search import Dim


def tested(tunings: list[Tuning], records: list[dict]) -> list[Tuning]:
    """The tunings with ``chosen`` set to the trial the test cells actually ran (their config), which the records
    choose again unless a trial was redone since; a method with no test cell keeps the records' choice."""
    ran = {(r["task"], r["method"]): r["config"]["tuning"].get("number") for r in records
           if (r["config"].get("tuning") or {}).get("role") == "chosen"}
    return [dataclasses.replace(t, chosen=ran.get((t.task, t.method), t.chosen)) for t in tunings]


def tuning_table(task: str, tunings: list[Tuning]) -> Table | None:
    """One row per trial of every tuned method of ``task``: its settings, validation figures and state."""
    mine = [t for t in tunings if t.task == task]
    if not mine:
        return None
    metric = mine[0].main_metric
    keys = list(dict.fromkeys(k for t in mine for k in t.keys))
    columns = (Column("method"), Column("trial"), *[Column(k) for k in keys],
               Column(f"{metric} (validation)", get_metric(metric).higher_is_better),
               Column("loss (validation)", False), Column("seeds"), Column("state"))
    rows = []
    for t in mine:
        for trial in t.trials:
            state = "chosen" if trial.number == t.chosen else trial.state
            rows.append((t.method, str(trial.number), *[_shown(trial.params.get(k)) for k in keys],
                         Value(trial.metric), Value(trial.loss, digits=4), str(trial.seeds), state))
    by = mine[0].by
    return Table(columns, tuple(rows), keys=2,
                 title=f"{task}: settings searched on validation ({mine[0].validation_rows} rows), chosen by "
                       f"{'the validation loss' if by == 'loss' else by}, mean over seeds")


def _shown(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def search_notes(tunings: list[Tuning]) -> list[str]:
    """Per tuned method: its search space and sampler, the settings left out, the ranges widened, a best still at
    an edge, and the settings' importances."""
    out = []
    for t in tunings:
        rec = t.record
        where = f"{t.task} x {t.method}"
        counts = {s: sum(x.state == s for x in t.trials) for s in ("complete", "pruned", "failed")}
        head = (f"Search of {where}: {len(t.trials)} trials ({', '.join(f'{n} {s}' for s, n in counts.items() if n)})"
                f" over {_space(rec.get('space', {}).get('dims', {}))}")
        if rec.get("sampler"):
            head += f"; sampler: {rec['sampler']}; pruner: {rec.get('pruner')}"
        out.append(head + ".")
        for key, why in t.left_out.items():
            out.append(f"{where}: {key} left out of the search ({why}).")
        for w in rec.get("widened", []):
            out.append(f"{where}: after trial {w['after_trial']} the best sat at the {w['side']} edge of {w['from']}; "
                       f"searched {w['to']}.")
        for key, side in t.edges.items():
            out.append(f"**{where}: the chosen trial still sits at the {side} edge of "
                       f"{Dim.from_dict(rec['searched'][key]).describe()}** when the budget of {rec.get('budget')} "
                       f"trials ended; the best {key} may lie beyond it.")
        if rec.get("importance"):
            shares = ", ".join(f"{k} {v:.2f}" for k, v in sorted(rec["importance"].items(), key=lambda kv: -kv[1]))
            out.append(f"{where}: importance of the searched settings (Optuna's default evaluator, over the "
                       f"complete trials): {shares}.")
    return out


def _space(dims: dict) -> str:
    return ", ".join(Dim.from_dict(d).describe() for d in dims.values()) or "-"


def tuning_note(tunings: list[Tuning]) -> str | None:
    """The line above the tables that says the test figures are the chosen trials', chosen on validation."""
    if not tunings:
        return None
    chosen = "; ".join(
        f"{t.task} x {t.method}: trial {t.chosen_trial.number} ("
        + ", ".join(f"{k}={_shown(t.chosen_trial.params[k])}" for k in t.keys if k in t.chosen_trial.params) + ")"
        if t.chosen_trial is not None else f"{t.task} x {t.method}: none (no trial completed)" for t in tunings)
    by = {t.by for t in tunings}
    return (f"Tuning: each tuned method's settings were searched on the validation split, by "
            f"{'the validation loss' if by == {'loss'} else 'the task main metric'} (mean over seeds), before any "
            f"test figure was computed; the tables show the chosen trials on the test split only, and the paired "
            f"comparisons, the recommendation and the gate use them. Chosen: {chosen}.")


def validation_curves(task: str, tunings: list[Tuning]) -> str | None:
    """Each tuned method's validation measure against each setting it searched (a learning rate on a log scale),
    one panel per setting, the chosen trial circled and pruned trials hollow."""
    mine = [t for t in tunings if t.task == task and any(x.measure is not None for x in t.trials)]
    if not mine:
        return None
    keys = list(dict.fromkeys(k for t in mine for k in t.keys))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False)
    by = mine[0].by
    for ax, key in zip(axes[0], keys):
        for t in mine:
            pts = [(x.params[key], x.measure if x.measure is not None else x.loss, x) for x in t.trials
                   if key in x.params and (x.measure is not None or (x.state == "pruned" and by == "loss"))]
            if not pts:
                continue
            done = [(a, b) for a, b, x in pts if x.state == "complete"]
            line = ax.scatter([a for a, _ in done], [b for _, b in done], label=t.method)
            pruned = [(a, b) for a, b, x in pts if x.state == "pruned" and b is not None]
            if pruned:
                ax.scatter([a for a, _ in pruned], [b for _, b in pruned], facecolors="none",
                           edgecolors=line.get_facecolor(), label=f"{t.method} (pruned)")
            best = [(a, b) for a, b, x in pts if x.number == t.chosen]
            if best:
                ax.plot(*best[0], marker="o", ms=12, mfc="none", mec=line.get_facecolor()[0], mew=2)
        if key == "lr" or key == "lora_r":
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"{by} on validation ({'higher' if get_metric(by).higher_is_better else 'lower'} is better)")
        ax.grid(alpha=.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{task}: trials of the search (circled: chosen)")
    return png(fig)
