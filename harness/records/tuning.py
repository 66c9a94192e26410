"""The learning-rate choice of a tuned method, from its tuning cells' records on the validation split.

Each grid point's figure is the mean over its seeds of the chosen measure (the task's main metric, or the
validation loss with --tune-by loss); the best point in the measure's direction wins, a tie going to the lower
validation loss, then to the point listed first. A point whose cells failed, or that lacks a seed, takes no part.
The runner chooses with this before it runs the test cells, and the report shows the same choice, so both read
it from the records alone and neither reads a test figure.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.stats import mean_of
from harness.records.load import load_records
from harness.spec.metrics import get_metric


@dataclass(frozen=True)
class Point:
    value: float
    measure: float | None  # mean over seeds of the choosing measure; None when a seed's cell did not finish
    seeds: int  # seeds with a figure
    statuses: tuple  # each cell's status (ok, failed, skipped)
    metric: float | None  # the task's main metric on validation (mean over seeds), when it was generated for
    loss: float | None  # the validation loss (mean over seeds)


@dataclass(frozen=True)
class Tuning:
    task: str
    method: str
    key: str
    by: str  # the measure that chooses: a metric name, or "loss"
    main_metric: str
    points: tuple  # Point per grid value, in grid order
    chosen: float | None
    validation_rows: int | None

    @property
    def higher_is_better(self) -> bool:
        return get_metric(self.by).higher_is_better

    @property
    def edge(self) -> str | None:
        """"lowest" or "highest" when the chosen value is the grid's smallest or largest: the best may lie beyond
        (a count of shots or passages cannot go below 1)."""
        values = [p.value for p in self.points]
        if self.chosen is None or len(values) < 3:
            return None
        if self.chosen == min(values):
            return None if self.key != "lr" and self.chosen <= 1 else "lowest"
        return "highest" if self.chosen == max(values) else None

    def edge_note(self) -> str:
        """What a choice at the edge of its grid means, and a grid that looks past it."""
        up = self.edge == "highest"
        if self.key == "lr":
            further = [f"{self.chosen * f:.3g}" for f in ((1, 3, 9) if up else (1 / 9, 1 / 3, 1))]
        else:  # counts: the next whole numbers that way
            c = int(self.chosen)
            further = [str(v) for v in ((c, 2 * c, 3 * c) if up else sorted({max(1, c // 3), max(1, c // 2), c}))]
        what = "rate" if self.key == "lr" else "count"
        return (f"{self.task} x {self.method}: the chosen {self.key} ({self.chosen:g}) is the {self.edge} of its "
                f"grid, so the best {what} may lie {'above' if up else 'below'} it; look further with --methods "
                f"'{self.method}:{self.key}={'|'.join(further)}'")


def tunings(records: list[dict], seeds: int | None = None) -> list[Tuning]:
    """One Tuning per (task, method) among tuning-cell records (``load_records(run, split="validation")``).

    ``seeds``: how many seeds each point needs for its mean (default: the most any point has)."""
    grouped: dict[tuple, list[dict]] = {}
    for r in records:
        grouped.setdefault((r["task"], r["method"]), []).append(r)
    out = []
    for (task, method), recs in grouped.items():
        tuning = recs[0]["config"]["tuning"]
        by_value: dict[float, list[dict]] = {v: [] for v in tuning["grid"]}
        for r in recs:
            by_value.setdefault(r["config"]["tuning"]["value"], []).append(r)
        need = seeds or max(len(v) for v in by_value.values())
        points = tuple(_point(v, rs, tuning["by"], need) for v, rs in by_value.items())
        main = next((r["metrics"]["main_metric"] for r in recs if r.get("metrics")), tuning["by"])
        rows = next((r["metrics"]["quality"][tuning["by"]]["n"] for r in recs if r.get("metrics")), None)
        out.append(Tuning(task, method, tuning["key"], tuning["by"], main, points,
                          choose(points, get_metric(tuning["by"]).higher_is_better), rows))
    return out


def _point(value: float, recs: list[dict], by: str, need: int) -> Point:
    done = [r for r in recs if r.get("metrics") and r["status"]["status"] == "ok"]

    def mean(name: str):
        vals = [r["metrics"]["quality"].get(name, {}).get("value") for r in done]
        return mean_of(vals) if vals and None not in vals else None

    measure = mean(by) if len(done) >= need else None
    main = done[0]["metrics"]["main_metric"] if done else None
    return Point(value, measure, len(done), tuple(r["status"]["status"] for r in recs), mean(main) if main else None,
                 mean("loss"))


def choose(points: tuple, higher_is_better: bool) -> float | None:
    """The value of the best point by its measure; None when no point has one."""
    scored = [p for p in points if p.measure is not None]
    if not scored:
        return None
    sign = 1 if higher_is_better else -1
    # A tie on the measure (a metric that rounds alike, e.g. 0 everywhere on a model that has learnt nothing yet)
    # goes to the lower validation loss, then to the point listed first.
    return max(scored, key=lambda p: (sign * p.measure, -(p.loss if p.loss is not None else float("inf")),
                                      -points.index(p))).value


def run_tunings(run_dir, seeds: int | None = None) -> list[Tuning]:
    """The tunings of a run folder, from its records."""
    return tunings(load_records(run_dir, split="validation"), seeds)
