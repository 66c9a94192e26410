"""The search of a run in its report: per task, every tuned method's trials, the choice, and what the search found.

The figures come from the tuning cells' records and the searches' own records (harness/records/tuning.py makes the
same choice the runner made); the task's main table above holds the chosen trials' test figures only. Per tuned
method: every trial with its settings, validation figures and state (complete, pruned, failed), the chosen one
marked; the settings left out of its search and why; the ranges widened at an edge, a best still at an edge, and a
range widened past the best that the budget never reached; the settings' importances. report.html adds a plot of the
validation measure against each searched setting. Settings are listed in harness.spec.search's order everywhere.
"""

from __future__ import annotations

import dataclasses

from harness.records.tuning import Tuning, unexplored_words
from harness.report.plots import png, pyplot
from harness.report.table import Column, Table, Value
from harness.spec.metrics import get_metric
from harness.spec.search import KEYS, Dim, in_order


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
    keys = _keys(mine)
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


def _keys(tunings: list[Tuning]) -> list[str]:
    """The settings any of ``tunings`` searched, in harness.spec.search's order."""
    found = {k for t in tunings for k in t.keys}
    return [k for k in KEYS if k in found]


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
        for key, why in in_order(t.left_out).items():
            out.append(f"{where}: {key} left out of the search ({why}).")
        for w in rec.get("widened", []):
            out.append(f"{where}: after trial {w['after_trial']} the best sat at the {w['side']} edge of {w['from']}; "
                       f"searched {w['to']}.")
        for key, side in t.edges.items():
            out.append(f"**{where}: the chosen trial still sits at the {side} edge of "
                       f"{Dim.from_dict(rec['searched'][key]).describe()}** when the budget of {rec.get('budget')} "
                       f"trials ended; the best {key} may lie beyond it.")
        for key, info in t.unexplored.items():
            out.append(f"**{where}: {key} {unexplored_words(info)}**; rerun with more --tune-trials (and the same "
                       f"--run-name) to go on from these trials.")
        if rec.get("importance"):
            shares = ", ".join(f"{k} {v:.2f}" for k, v in sorted(rec["importance"].items(), key=lambda kv: -kv[1]))
            out.append(f"{where}: importance of the searched settings (Optuna's default evaluator, over the "
                       f"complete trials): {shares}.")
    return out


def _space(dims: dict) -> str:
    return ", ".join(Dim.from_dict(d).describe() for d in in_order(dims).values()) or "-"


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
    """The search figure of ``task`` (``search_figure``) as a PNG data URI for report.html; None without one."""
    fig = search_figure(task, tunings)
    return png(fig) if fig is not None else None


def search_figure(task: str, tunings: list[Tuning]):
    """Each tuned method's validation measure against each setting it searched (a learning rate and a rank on a log
    scale), one panel per setting in harness.spec.search's order, each method in one colour on every panel, the
    chosen trial circled. A pruned trial has no final figure: with --tune-by loss it is drawn hollow at the
    validation loss where it stopped (from the search's record), else the legend says it is not drawn."""
    mine = [t for t in tunings if t.task == task and any(x.measure is not None for x in t.trials)]
    if not mine:
        return None
    keys, by = _keys(mine), mine[0].by
    colours = {t.method: f"C{i % 10}" for i, t in enumerate(mine)}  # by method, not by panel
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for t in mine:
            colour, trials = colours[t.method], [x for x in t.trials if key in x.params]
            if not trials:
                continue
            done = [(x.params[key], x.measure) for x in trials if x.state == "complete" and x.measure is not None]
            ax.scatter([a for a, _ in done], [b for _, b in done], color=colour, label=t.method)
            pruned = [x for x in trials if x.state == "pruned"]
            stopped = [(x.params[key], _stopped_at(t, x.number)) for x in pruned] if by == "loss" else []
            stopped = [(a, b) for a, b in stopped if b is not None]
            if stopped:
                ax.scatter([a for a, _ in stopped], [b for _, b in stopped], facecolors="none", edgecolors=colour,
                           label=f"{t.method} pruned (the loss where it stopped)")
            if len(stopped) < len(pruned):
                ax.scatter([], [], facecolors="none", edgecolors=colour,
                           label=f"{t.method}: {len(pruned) - len(stopped)} pruned, not drawn (no final {by})")
            best = [(x.params[key], x.measure) for x in trials if x.number == t.chosen and x.measure is not None]
            if best:
                ax.plot(*best[0], marker="o", ms=12, mfc="none", mec=colour, mew=2)
        if key in ("lr", "lora_r"):
            ax.set_xscale("log")
        ax.set_title(key)
        ax.set_xlabel(key)
        ax.set_ylabel(f"{by} on validation ({'higher' if get_metric(by).higher_is_better else 'lower'} is better)")
        ax.grid(alpha=.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{task}: trials of the search (circled: chosen)")
    return fig


def _stopped_at(t: Tuning, number: int) -> float | None:
    """A pruned trial's last validation loss before it stopped, from the search's record (mean over seeds)."""
    rec = next((x for x in t.record.get("trials", []) if x["number"] == number), None)
    losses = (rec or {}).get("losses") or {}
    return losses[max(losses, key=int)] if losses else None
