"""A tuned method's search as its records hold it: every trial's settings, state and validation figures, and the
choice.

Each trial is one tuning cell per seed (config.json ``tuning``: study, trial number, settings). A trial's figure is
the mean over its seeds of the choosing measure (the task's main metric, or the validation loss with --tune-by
loss); a trial that was pruned, failed, or lacks a seed takes no part. The best complete trial in the measure's
direction wins, a tie going to the lower validation loss, then to the earlier trial. The search engine
(harness/execute/search.py) tells Optuna the same figures, and the report makes the same choice, from the records
alone; the search's own record (``search/TASK/METHOD.json``) adds what the records of cells cannot say: the space as
searched (and widened), the settings left out, and the settings' importances.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from harness.core.files import read_json
from harness.core.stats import mean_of
from harness.records.load import load_records
from harness.spec.methods import folder_name
from harness.spec.metrics import get_metric
from harness.spec.search import KEYS, Dim, in_order

SEARCH_FOLDER = "search"


def search_path(run_dir, task: str, method) -> Path:
    """Where the engine writes a search's record: ``RUN/search/TASK/METHOD.json`` (``method``: a spec or a name)."""
    return Path(run_dir) / SEARCH_FOLDER / task / f"{folder_name(method)}.json"


def trial_outcome(stores: list, by: str) -> dict:
    """One trial from its cells' records (one per seed): {"state", "value", "loss", "losses"}. The state is "failed"
    when any cell failed or left no record, "pruned" when any was pruned, else "complete" with ``value`` the mean
    over seeds of ``by`` and ``loss`` of the validation loss; ``losses`` are the validation losses during training,
    {step: mean over seeds}, at the steps every seed evaluated."""
    values, final, steps, state = [], [], [], "complete"
    for store in stores:
        status, _ = store.state()
        if status != "complete":
            return {"state": "failed", "value": None, "loss": None, "losses": {}}
        outcome = store.read_json("status.json")["status"]
        if store.path("train.json").is_file():
            evals = (store.read_json("train.json").get("validation") or {}).get("evals", [])
            steps.append({e["step"]: e["loss"] for e in evals})
        if outcome == "pruned":
            state = "pruned"
        elif outcome != "ok":
            state = "failed"
        else:
            quality = store.read_json("metrics.json")["quality"]
            values.append(quality.get(by, {}).get("value"))
            final.append(quality.get("loss", {}).get("value"))
    shared = set.intersection(*(set(s) for s in steps)) if steps else set()
    losses = {k: sum(s[k] for s in steps) / len(steps) for k in sorted(shared)}
    if state == "complete" and (not values or None in values):
        state = "failed"
    if state != "complete":
        return {"state": state, "value": None, "loss": None, "losses": losses}
    return {"state": "complete", "value": sum(values) / len(values), "loss": mean_of(final), "losses": losses}


@dataclass(frozen=True)
class Trial:
    number: int
    params: dict  # the settings the trial ran with
    state: str  # complete, pruned or failed
    measure: float | None  # the mean over seeds of the choosing measure; None unless complete
    seeds: int
    metric: float | None  # the task's main metric on validation (mean over seeds), when it was generated
    loss: float | None  # the validation loss (mean over seeds)


@dataclass(frozen=True)
class Tuning:
    task: str
    method: str
    by: str
    main_metric: str
    trials: tuple
    chosen: int | None  # the chosen trial's number
    validation_rows: int | None
    record: dict = field(default_factory=dict)  # the search's own record, when it wrote one

    @property
    def keys(self) -> list[str]:
        """The settings the search covered, in harness.spec.search's order of them."""
        found = set(self.record.get("searched") or {}) | {k for t in self.trials for k in t.params}
        return [k for k in KEYS if k in found]

    @property
    def chosen_trial(self) -> Trial | None:
        return next((t for t in self.trials if t.number == self.chosen), None)

    @property
    def left_out(self) -> dict:
        return (self.record.get("space") or {}).get("left_out", {})

    @cached_property
    def _findings(self) -> tuple[dict, dict]:
        return edge_findings(self.record, self.chosen)  # once for both properties below

    @property
    def edges(self) -> dict:
        """{setting: side} where the chosen trial sits at the edge of its range as searched (see ``edge_findings``)."""
        return self._findings[0]

    @property
    def unexplored(self) -> dict:
        """{setting: ...} where the range widened but no trial reached the new part (see ``edge_findings``)."""
        return self._findings[1]


def edge_findings(record: dict, chosen: int | None) -> tuple[dict, dict]:
    """Where a search (its record, search/TASK/METHOD.json) left trial ``chosen``, from the record alone, so the
    terminal and the report say the same of a record written by any version:

    * ``{setting: side}`` where its value sits at the edge of the range as it stands after any widening (Dim.edge):
      the best may lie beyond it;
    * ``{setting: {"side", "to", "value", "failed"}}`` where the range was widened that way but no trial past the
      chosen value gave a figure (``failed`` counts those that ran and failed): the search never looked there, so
      that is a budget that ran out, not an edge."""
    trials = {t["number"]: t for t in record.get("trials", [])}
    best = trials.get(chosen)
    searched = record.get("searched") or {}
    at_edge, unexplored = {}, {}
    if best is None:
        return at_edge, unexplored
    sides = {(w["key"], w["side"]) for w in record.get("widened", [])}
    for key, raw in in_order(searched).items():
        if key not in best["drawn"]:
            continue
        d, v = Dim.from_dict(raw), best["drawn"][key]
        side = d.edge(v)
        if side is not None:
            at_edge[key] = side
            continue
        for side in (s for s in ("low", "high") if (key, s) in sides):
            past = [t for t in trials.values()
                    if key in t["drawn"] and (t["drawn"][key] < v if side == "low" else t["drawn"][key] > v)]
            if not any(t["state"] in ("complete", "pruned") for t in past):
                unexplored[key] = {"side": side, "to": d.describe(), "value": d.show(v), "failed": len(past)}
                break
    return at_edge, unexplored


def unexplored_words(info: dict) -> str:
    """What a range widened past the chosen value without a trial there means, in words (see ``edge_findings``)."""
    beyond = "below" if info["side"] == "low" else "above"
    if info["failed"]:
        return (f"widened to {info['to']}, but every trial {beyond} {info['value']} ({info['failed']}) failed "
                "before the budget ended")
    return f"widened to {info['to']}, but the budget ended before a trial {beyond} {info['value']} ran"


def tunings(records: list[dict], run_dir=None, seeds: int | None = None) -> list[Tuning]:
    """One Tuning per (task, method) among tuning-cell records (``load_records(run, split="validation")``).

    ``seeds``: how many seeds each trial needs for its mean (default: the most any trial has)."""
    grouped: dict[tuple, dict[int, list[dict]]] = {}
    for r in records:
        tuning = r["config"].get("tuning") or {}
        if tuning.get("role") != "trial":
            continue
        grouped.setdefault((r["task"], r["method"]), {}).setdefault(tuning["number"], []).append(r)
    out = []
    for (task, method), by_number in grouped.items():
        first = next(iter(by_number.values()))[0]
        by = first["config"]["tuning"]["by"]
        need = seeds or max(len(v) for v in by_number.values())
        trials = tuple(_trial(n, recs, by, need) for n, recs in sorted(by_number.items()))
        main = next((r["metrics"]["main_metric"] for recs in by_number.values() for r in recs if r.get("metrics")), by)
        rows = next((r["metrics"]["quality"][by]["n"] for recs in by_number.values() for r in recs
                     if r.get("metrics") and by in r["metrics"]["quality"]), None)
        record = {}
        if run_dir is not None:
            path = search_path(run_dir, task, method)
            record = read_json(path) if path.is_file() else {}
        out.append(Tuning(task, method, by, main, trials, choose(trials, get_metric(by).higher_is_better), rows,
                          record))
    return out


def _trial(number: int, recs: list[dict], by: str, need: int) -> Trial:
    statuses = [r["status"]["status"] for r in recs]
    done = [r for r in recs if r.get("metrics") and r["status"]["status"] == "ok"]

    def mean(name: str):
        vals = [r["metrics"]["quality"].get(name, {}).get("value") for r in done]
        return mean_of(vals) if vals and None not in vals else None

    state = "pruned" if "pruned" in statuses else "complete" if len(done) == len(recs) >= need else "failed"
    main = done[0]["metrics"]["main_metric"] if done else None
    return Trial(number, dict(recs[0]["config"]["tuning"]["params"]), state,
                 mean(by) if state == "complete" else None, len(done), mean(main) if main else None, mean("loss"))


def choose(trials: tuple, higher_is_better: bool) -> int | None:
    """The number of the best complete trial by its measure; None when no trial completed."""
    scored = [t for t in trials if t.state == "complete" and t.measure is not None]
    if not scored:
        return None
    sign = 1 if higher_is_better else -1
    # A tie on the measure (a metric that rounds alike, e.g. 0 everywhere on a model that has learnt nothing yet)
    # goes to the lower validation loss, then to the earlier trial.
    return max(scored, key=lambda t: (sign * t.measure, -(t.loss if t.loss is not None else float("inf")),
                                      -t.number)).number


def run_tunings(run_dir, seeds: int | None = None) -> list[Tuning]:
    """The tunings of a run folder, from its records."""
    return tunings(load_records(run_dir, split="validation"), run_dir, seeds)
