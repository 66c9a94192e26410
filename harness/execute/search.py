"""The search: each tuned method's trials, asked of Optuna, run as tuning cells by the run's executor, told back.

For every task x tuned method, one Optuna study in the run folder (``search.db``, SQLite through Optuna's RDB
storage; study ``TASK/METHOD``), driven through its ask-and-tell interface:

* **Trials are cells.** Each asked trial becomes one tuning cell per seed (harness/plan/matrix.py ``trial_cells``),
  scored on the validation split, run by the run's executor, ``--parallel`` trials at once. Its value is the mean
  over seeds of the choosing measure (the task's main metric, or the validation loss with ``--tune-by loss``).
* **Sampler.** A range, or a setting --tune names, is searched by TPE, seeded per trial (seed and trial number), so
  a search with ``--parallel 1`` makes the same trials every time and after a resume. Its first three trials are a
  fixed design (enqueued): the method's own settings, then every range at its low end, then at its high end, so
  that a best at an edge shows at once; TPE models from there. A grid the user wrote is tried point by point in the
  order written (enqueued trials), as a grid search.
* **Pruning.** Each trial's cell evaluates its validation loss four times an epoch and stops when it is worse than
  the median of the earlier complete trials at the same step (Optuna's MedianPruner, run in the cell against the
  earlier trials' losses, which its config carries, so it works on any executor); it is recorded as pruned and
  takes no part in the choice. The design trials are never pruned: they run to the end, so that an edge always gets
  a value, and later trials are compared with them as with any complete trial (the rule is part of the study's
  identity, harness/execute/study.py ``PRUNING``).
* **Edges.** After each batch, a setting whose best trial sits at the edge of its range is widened one step that
  way (harness/spec/search.py ``Dim.extend``) while trials remain. When the budget ends, the terminal and the report
  say where the chosen trial still sits at the edge of its range as widened, and where a range was widened past it
  but no trial reached the new part (harness/records/tuning.py ``edge_findings``).
* **Resume.** A rerun opens the same study: finished trials are kept, a trial whose cell was killed mid-run is run
  again with its own settings, and the search goes on to its budget, each trial once. A stored study whose search
  space or seed differs from the command's is refused in one line.

The choice itself is made from the trial cells' records (harness/records/tuning.py), the same way the report makes
it; the record of the search (``search/TASK/METHOD.json``: the space as searched, every trial, the widenings, the
settings' importances by Optuna's default evaluator) is what the report shows next to it. The study file itself
(its identity, the refusal of a different search, the importances and the edge warnings) is harness/execute/study.py.
"""

from __future__ import annotations

import math
from pathlib import Path

from harness.core.console import console
from harness.core.files import atomic_write_json
from harness.execute.study import PRUNE_STARTUP, STUDY_FILE, importance, same_search, say_edges, signature, storage
from harness.plan.matrix import left_out, trial_cells, trials
from harness.records.tuning import edge_findings, search_path, trial_outcome
from harness.spec.metrics import get_metric
from harness.spec.search import KEYS, Dim
from harness.spec.task import get_task

# The first trials of a sampled search: the method's own settings and the two ends of every range. TPE needs some
# trials before its model means anything (Optuna's default is 10 random ones); with budgets of about 6, these three
# stand in for them. The harness's choice for budgets this small, not a published rule.
DESIGN = ("own", "low", "high")


def run_searches(cfg, run_cells) -> dict:
    """Every tuned method's search on every task it applies to; {(task, method): {"number", "params"}} of each
    search's choice. ``run_cells(cells)`` runs cells with the run's executor (harness/execute/runner.py)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage(cfg.run_dir)
    skipped = left_out(cfg)
    chosen = {}
    for task in (get_task(name) for name in cfg.tasks):
        for method in cfg.specs:
            if method.name in cfg.searches and (task.name, method.name) not in skipped:
                result = MethodSearch(cfg, task, method, url).run(run_cells)
                if result is not None:
                    chosen[task.name, method.name] = result
    return chosen


class MethodSearch:
    def __init__(self, cfg, task, method, url: str):
        import optuna

        self.cfg, self.task, self.method = cfg, task, method
        self.search = cfg.searches[method.name]
        self.name = f"{task.name}/{method.name}"
        self.by = "loss" if cfg.tune_by == "loss" else task.main_metric
        self.higher = get_metric(self.by).higher_is_better
        self.budget = trials(cfg, method.name)
        wanted = signature(cfg, task, method)
        self.study = optuna.create_study(study_name=self.name, storage=url, load_if_exists=True,
                                         direction="maximize" if self.higher else "minimize")
        stored = self.study.user_attrs.get("signature")
        if stored is None:
            self.study.set_user_attr("signature", wanted)
            self.study.set_user_attr("dims", {k: d.to_dict() for k, d in self.search.dims.items()})
            self.study.set_user_attr("widened", [])
        else:
            same_search(Path(cfg.run_dir) / STUDY_FILE, self.name, stored, wanted)
        stored_dims = self.study.user_attrs["dims"]  # JSON in SQLite: the keys come back sorted
        self.dims = {k: Dim.from_dict(stored_dims[k]) for k in KEYS if k in stored_dims}

    # --- the loop ----------------------------------------------------------------------------------------
    def run(self, run_cells) -> dict | None:
        import optuna

        State = optuna.trial.TrialState
        while True:
            trials_now = self.study.trials
            running = [t for t in trials_now if t.state == State.RUNNING]  # a killed run's: redone as they were
            batch = [optuna.Trial(self.study, t._trial_id) for t in running[:self.cfg.parallel]]
            while len(batch) < self.cfg.parallel and len(self.study.trials) < self.budget and self._more():
                batch.append(self._ask())
            if not batch:
                break
            cells = {t.number: trial_cells(self.cfg, self.task, self.method, self._tuning(t)) for t in batch}
            run_cells([c for cs in cells.values() for c in cs])
            for trial in batch:
                self._tell(trial, cells[trial.number])
            self._widen()
        return self._finish()

    def _more(self) -> bool:
        """A grid search goes on only while grid points remain untried; a sampled search until its budget."""
        if not self.search.is_grid:
            return True
        return self._next_point() is not None

    def _next_point(self) -> dict | None:
        """The first grid point (in the order written, then the widened ones) no trial has taken yet."""
        tried = [t.params for t in self.study.trials]
        for point in self._points():
            if not any(_same(point, p) for p in tried):
                return point
        return None

    def _points(self) -> list[dict]:
        """The grid points of the current dims (a widened grid has more), in the order the user wrote them."""
        grids = {k: d for k, d in self.dims.items() if d.kind == "grid"}
        points = [{}]
        for key, d in grids.items():
            points = [{**p, key: v} for p in points for v in d.choices]
        return points if grids else []

    def _ask(self):
        import optuna

        n = len(self.study.trials)
        self.study.sampler = optuna.samplers.TPESampler(seed=self.cfg.seed * 100003 + n, n_startup_trials=len(DESIGN))
        point = self._next_point() if self.search.is_grid else {**self._design(n), **self._cycle(n)}
        if point:
            self.study.enqueue_trial(point)
        return self.study.ask(fixed_distributions=self._distributions())

    def _design(self, n: int) -> dict:
        """Trial ``n``'s fixed settings while the design lasts (DESIGN): the method's own, or every range's end."""
        if n >= len(DESIGN):
            return {}
        out = {}
        for key, d in self.dims.items():
            if d.kind == "grid":
                continue
            lo, hi = d.span
            out[key] = {"own": self._own(key, d), "low": lo, "high": hi}[DESIGN[n]]
        return out

    def _own(self, key: str, d: Dim):
        """The number that stands for the method's own setting of ``key`` (the range's middle when outside it)."""
        lo, hi = d.span
        rank = self.method.lora_r or self.cfg.lora_r
        own = {"lr": self.cfg.lr if self.cfg.lr is not None else self.method.lr, "lora_r": rank,
               "lora_alpha": (self.method.lora_alpha or self.cfg.lora_alpha) / rank,
               "epochs": self.method.epochs or self.cfg.epochs, "shots": self.method.shots,
               "retrieve": self.method.retrieve}[key]
        if d.kind == "pow2":
            own = math.log2(own) if own and own > 0 else None
        if own is None or not lo <= own <= hi or (d.integer and float(own) != int(own)):
            return math.sqrt(lo * hi) if key == "lr" else int((lo + hi) // 2)
        return int(own) if d.integer else float(own)

    def _cycle(self, n: int) -> dict:
        """In a search that mixes grids with ranges, trial n takes the grid values at n (the ranges are sampled)."""
        points = self._points()
        return points[n % len(points)] if points else {}

    def _distributions(self) -> dict:
        from optuna.distributions import FloatDistribution, IntDistribution

        out = {}
        for key, d in self.dims.items():
            lo, hi = d.span
            if d.integer:
                out[key] = IntDistribution(int(lo), int(hi))
            else:
                out[key] = FloatDistribution(float(lo), float(hi), log=key == "lr")
        return out

    def _settings(self, drawn: dict) -> dict:
        """The method fields a trial sets: each drawn number as its setting (rank exponents raised, alpha as a
        multiple of the trial's rank, or of the method's or the run's)."""
        rank = self.dims["lora_r"].value(drawn["lora_r"]) if "lora_r" in drawn else (
            self.method.lora_r or self.cfg.lora_r)
        return {k: self.dims[k].value(drawn[k], rank) if k in self.dims else drawn[k] for k in KEYS if k in drawn}

    def _tuning(self, trial) -> dict:
        import optuna

        complete = [t for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                    if t.intermediate_values and t.number < trial.number]
        return {"study": self.name, "number": trial.number, "params": self._settings(trial.params),
                "drawn": dict(trial.params), "prune": {"earlier": [_steps(t.intermediate_values) for t in complete],
                                                       "startup": PRUNE_STARTUP, "design": self._is_design(trial)}}

    def _is_design(self, trial) -> bool:
        """One of the design's trials (DESIGN; a grid has none): never pruned (harness/cell/training.py)."""
        return not self.search.is_grid and trial.number < len(DESIGN)

    def _tell(self, trial, cells: list) -> None:
        import optuna

        State = optuna.trial.TrialState
        out = trial_outcome([c.store for c in cells], self.by)
        for step, loss in out["losses"].items():
            trial.report(loss, step)
        trial.set_user_attr("loss", out["loss"])  # the choice's tie-break, as in harness/records/tuning.py
        state = out["state"]
        if state == "complete":
            self.study.tell(trial, out["value"])
        else:
            self.study.tell(trial, state=State.PRUNED if state == "pruned" else State.FAIL)
        done = f"{self.by} {out['value']:.4f}" if state == "complete" else state
        console.print(f"[bold]search[/] {self.name}: trial {trial.number} ({_shown(self._settings(trial.params))}): "
                      f"{done}", soft_wrap=True)

    def _best(self):
        import optuna

        done = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not done:
            return None
        sign = 1 if self.higher else -1  # the rule of harness/records/tuning.py choose: value, then loss, then first
        loss = lambda t: t.user_attrs.get("loss") if t.user_attrs.get("loss") is not None else float("inf")  # noqa: E731
        return max(done, key=lambda t: (sign * t.value, -loss(t), -t.number))

    def _widen(self) -> None:
        """Widen each setting whose best trial sits at its edge, one step that way, while trials remain."""
        best = self._best()
        if best is None or len(self.study.trials) >= self.budget:
            return
        widened = list(self.study.user_attrs.get("widened", []))
        changed = False
        grid_done = self._next_point() is None  # a grid widens only once every point written has been tried
        for key, d in self.dims.items():
            if d.kind == "grid" and not grid_done:
                continue
            side = d.edge(best.params[key]) if key in best.params else None
            if side is None:
                continue
            self.dims[key] = d.extend(side)
            widened.append({"after_trial": best.number, "key": key, "side": side, "from": d.describe(),
                            "to": self.dims[key].describe()})
            console.print(f"[yellow]search {self.name}: the best trial so far ({best.number}) sits at the {side} edge "
                          f"of {d.describe()}; searching {self.dims[key].describe()}[/]", soft_wrap=True)
            changed = True
        if changed:
            self.study.set_user_attr("dims", {k: d.to_dict() for k, d in self.dims.items()})
            self.study.set_user_attr("widened", widened)

    def _finish(self) -> dict | None:
        """Write the search's record; the chosen trial's number and settings (None when no trial completed)."""
        best = self._best()
        record = {"study": self.name, "by": self.by, "higher_is_better": self.higher, "budget": self.budget,
                  "space": self.search.to_dict(), "searched": {k: d.to_dict() for k, d in self.dims.items()},
                  "widened": self.study.user_attrs.get("widened", []),
                  "sampler": "grid (the points in the order written)" if self.search.is_grid else
                  f"TPE seeded by {self.cfg.seed} and the trial, after the method's own settings and both ends of "
                  "each range",
                  "pruner": f"median of the earlier complete trials' validation loss, after {PRUNE_STARTUP} of them"
                  + ("" if self.search.is_grid else "; the design trials (the method's own settings and both ends of "
                     "each range) are never pruned: they run to the end"),
                  "trials": [{"number": t.number, "state": t.state.name.lower(), "design": self._is_design(t),
                              "drawn": dict(t.params), "params": self._settings(t.params), "value": t.value,
                              "losses": _steps(t.intermediate_values)} for t in self.study.trials],
                  "chosen": best.number if best is not None else None,
                  "importance": importance(self.study, self.dims)}
        record["edges"], record["unexplored"] = edge_findings(record, record["chosen"])
        say_edges(record, self.name, self.dims, self.method.name, self.cfg.run_dir)
        path = search_path(self.cfg.run_dir, self.task.name, self.method)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, record)
        if best is None:
            return None
        return {"number": best.number, "params": self._settings(best.params)}

def _steps(values: dict) -> dict:
    return {int(k): float(v) for k, v in values.items()}


def _same(a: dict, b: dict) -> bool:
    return all(k in b and abs(float(b[k]) - float(v)) <= 1e-12 * max(1.0, abs(float(v))) for k, v in a.items())


def _shown(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
