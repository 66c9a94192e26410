"""The regression gate: compare a run's metrics with a stored baseline and fail on any regression.

    python run_matrix.py gate results/RUN --baseline baseline.json [--abs-tol 0.01] [--rel-tol 0.02]
                              [--tol rougeL=abs:0.02] [--ci-aware] [--allow-missing]
    python run_matrix.py gate results/RUN --write-baseline baseline.json

Every (task, method, metric) in the baseline is checked. Which way is worse comes from the metric registry.
A metric regresses when it is worse than the baseline by more than its tolerance (absolute, relative to the
baseline value, or both: the larger allowance wins). With --ci-aware it must also be worse beyond its own
95% confidence interval, i.e. the baseline value lies outside the current CI on the better side.
A cell the run has but that did not finish fails every check of its own, with or without --allow-missing.
Tolerances given on the command line override those stored in the baseline file. A baseline written from a run
leaves out, with the reason, the values that cannot regress (a score at 0 with a zero-width interval, a metric with
no value): a gate check that cannot fail would only make the gate look stronger than it is.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.core.errors import ConfigError
from harness.core.files import atomic_write_json
from harness.records.load import load_records
from harness.report.table import Column, Status, Table, Value
from harness.spec.metrics import get_metric

FAILING = ("REGRESSED", "MISSING", "FAILED")


def parse_tol(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        name, sep, spec = item.partition("=")
        kind, sep2, value = spec.partition(":")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not sep or not sep2 or kind not in ("abs", "rel") or number < 0:
            raise ConfigError(f"--tol {item!r} must be METRIC=abs:X or METRIC=rel:X with X >= 0, "
                              "e.g. rougeL=abs:0.02")
        get_metric(name)  # an unknown metric name lists the valid ones
        out.setdefault(name, {})[kind] = number
    return out


def current_metrics(run_dir: Path) -> dict:
    records = load_records(run_dir)
    if not records:
        raise ConfigError(f"{run_dir} holds no completed cells; pass a run folder such as results/NAME")
    cells = {}
    for r in records:
        # One key per cell: with several seeds each seed's cell is gated on its own (task/method-seedN).
        seed = re.search(r"-seed\d+$", Path(r["dir"]).name)
        key = f"{r['task']}/{r['method']}{seed.group(0) if seed else ''}"
        metrics = (r.get("metrics") or {}).get("quality", {})
        keep = ("value", "ci_low", "ci_high", "n")
        cells[key] = {"status": r["status"]["status"],
                      "metrics": {n: {k: q[k] for k in keep} for n, q in metrics.items()}}
    return cells


def cannot_regress(name: str, metric: dict) -> str | None:
    """Why a stored value could never fail the gate, or None. A higher-is-better score at 0 with a zero-width
    interval cannot get worse (every score the harness registers is non-negative), and a metric with no value
    has nothing to compare; gating either is a check that cannot fail."""
    value = metric.get("value")
    if value is None:
        return "no value: no example had this metric"
    if get_metric(name).higher_is_better and value == metric.get("ci_low") == metric.get("ci_high") == 0:
        return "at its floor (0 with a zero-width interval): it cannot get worse"
    return None


def write_baseline(run_dir: Path, path: Path, tolerances: dict) -> dict:
    """Store the run's metrics as the baseline; those that cannot regress (``cannot_regress``) are listed under
    ``not_gated`` with the reason instead of being checks that always pass. Returns ``not_gated``."""
    cells, not_gated = current_metrics(run_dir), {}
    for key, cell in cells.items():
        for name in list(cell["metrics"]):
            why = cannot_regress(name, cell["metrics"][name])
            if why:
                not_gated.setdefault(key, {})[name] = why
                del cell["metrics"][name]
    atomic_write_json(path, {"source": str(run_dir), "tolerances": tolerances, "cells": cells,
                             "not_gated": not_gated})
    return not_gated


def allowance(name: str, base_value: float, tolerances: dict, abs_tol: float, rel_tol: float) -> float:
    t = tolerances.get(name, {})
    a = t.get("abs", abs_tol)
    r = t.get("rel", rel_tol)
    return max(a, r * abs(base_value))


def compare(baseline: dict, cells: dict, abs_tol: float, rel_tol: float, tolerances: dict, ci_aware: bool,
            allow_missing: bool) -> list[dict]:
    """One row per (cell, metric) in the baseline: verdict pass / REGRESSED / MISSING / missing-allowed / FAILED
    (the run has the cell, and it failed or was skipped)."""
    rows = []
    for key, base_cell in baseline["cells"].items():
        cur_cell = cells.get(key)
        for name, base in base_cell.get("metrics", {}).items():
            row = {"cell": key, "metric": name, "baseline": base.get("value"), "current": None, "delta": None,
                   "allowed": None, "verdict": "pass"}
            cur = (cur_cell or {}).get("metrics", {}).get(name)
            if cur_cell is not None and cur_cell.get("status") != "ok":
                # The run has the cell and it did not finish: --allow-missing is for cells a run does not have.
                row["verdict"] = "FAILED"
                rows.append(row)
                continue
            if cur is None or cur.get("value") is None:
                if base.get("value") is None:
                    rows.append(row)  # nothing to compare on either side (e.g. a metric with no examples)
                    continue
                row["verdict"] = "missing (allowed)" if allow_missing else "MISSING"
                rows.append(row)
                continue
            metric = get_metric(name)
            b, c = base["value"], cur["value"]
            row["current"] = c
            if b is None:
                rows.append(row)
                continue
            worse_by = -metric.gain(c, b)
            row["delta"] = c - b
            row["allowed"] = allowance(name, b, tolerances, abs_tol, rel_tol)
            regressed = worse_by > row["allowed"] + 1e-12
            if regressed and ci_aware and cur.get("ci_low") is not None:
                # the baseline must lie beyond the current CI on the better side
                regressed = b > cur["ci_high"] if metric.higher_is_better else b < cur["ci_low"]
            if regressed:
                row["verdict"] = "REGRESSED"
            rows.append(row)
        if cur_cell is None and not base_cell.get("metrics"):
            rows.append({"cell": key, "metric": "-", "baseline": None, "current": None, "delta": None,
                         "allowed": None, "verdict": "missing (allowed)" if allow_missing else "MISSING"})
    return rows


def gate_table(rows: list[dict]) -> Table:
    """The checks as a table; a regressed or missing one is marked."""
    columns = tuple(Column(h) for h in ("cell", "metric", "baseline", "current", "delta", "allowed", "verdict"))
    body = tuple((r["cell"], r["metric"], Value(r["baseline"], digits=4), Value(r["current"], digits=4),
                  Value(r["delta"], digits=4, signed=True), Value(r["allowed"], digits=4),
                  Status(r["verdict"]) if r["verdict"] in FAILING else r["verdict"]) for r in rows)
    return Table(columns, body, title="regression gate", keys=2)
