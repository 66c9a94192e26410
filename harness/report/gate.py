"""The regression gate: compare a run's metrics with a stored baseline and fail on any regression.

    python run_matrix.py gate results/RUN --baseline baseline.json [--abs-tol 0.01] [--rel-tol 0.02]
                              [--tol rougeL=abs:0.02] [--ci-aware] [--allow-missing]
    python run_matrix.py gate results/RUN --write-baseline baseline.json

Every (task, method, metric) in the baseline is checked. Which way is worse comes from the metric registry.
A metric regresses when it is worse than the baseline by more than its tolerance (absolute, relative to the
baseline value, or both: the larger allowance wins). With --ci-aware it must also be worse beyond its own
95% confidence interval, i.e. the baseline value lies outside the current CI on the better side.
Tolerances given on the command line override those stored in the baseline file.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from harness.core.errors import ConfigError
from harness.core.files import atomic_write_json, read_json
from harness.spec.metrics import get_metric


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
    from harness.report.tables import load_records

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


def write_baseline(run_dir: Path, path: Path, tolerances: dict) -> None:
    cells = current_metrics(run_dir)
    atomic_write_json(path, {"source": str(run_dir), "tolerances": tolerances, "cells": cells})


def allowance(name: str, base_value: float, tolerances: dict, abs_tol: float, rel_tol: float) -> float:
    t = tolerances.get(name, {})
    a = t.get("abs", abs_tol)
    r = t.get("rel", rel_tol)
    return max(a, r * abs(base_value))


def compare(baseline: dict, cells: dict, abs_tol: float, rel_tol: float, tolerances: dict, ci_aware: bool,
            allow_missing: bool) -> list[dict]:
    """One row per (cell, metric) in the baseline: verdict pass / REGRESSED / MISSING / missing-allowed."""
    rows = []
    for key, base_cell in baseline["cells"].items():
        cur_cell = cells.get(key)
        for name, base in base_cell.get("metrics", {}).items():
            row = {"cell": key, "metric": name, "baseline": base.get("value"), "current": None, "delta": None,
                   "allowed": None, "verdict": "pass"}
            cur = (cur_cell or {}).get("metrics", {}).get(name)
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


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.4f}" if isinstance(x, float) and x < 0 else f"{x:.4f}"


def print_table(rows: list[dict]) -> None:
    from rich.table import Table

    from harness.core.console import console

    table = Table(title="regression gate", title_justify="left")
    for h in ("cell", "metric", "baseline", "current", "delta", "allowed", "verdict"):
        table.add_column(h, justify="left" if h in ("cell", "metric", "verdict") else "right")
    for r in rows:
        style = "red" if r["verdict"] in ("REGRESSED", "MISSING") else None
        table.add_row(r["cell"], r["metric"], _fmt(r["baseline"]), _fmt(r["current"]),
                      "-" if r["delta"] is None else f"{r['delta']:+.4f}", _fmt(r["allowed"]), r["verdict"],
                      style=style)
    console.print(table)


def main(argv: list[str]) -> int:
    from harness.cli import Parser

    p = Parser(prog="run_matrix.py gate", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_dir", help="the run folder to check, e.g. results/NAME")
    p.add_argument("--baseline", help="baseline JSON to compare against")
    p.add_argument("--write-baseline", metavar="FILE", help="write a baseline from the run instead of gating")
    p.add_argument("--abs-tol", type=float, default=None, help="allowed absolute drop for every metric")
    p.add_argument("--rel-tol", type=float, default=None, help="allowed drop relative to the baseline value")
    p.add_argument("--tol", action="append", metavar="METRIC=abs:X|rel:X", help="per-metric tolerance")
    p.add_argument("--ci-aware", action="store_true",
                   help="count a drop only when the baseline lies outside the current 95%% CI")
    p.add_argument("--allow-missing", action="store_true", help="a missing cell or metric does not fail")
    args = p.parse_args(argv)
    run_dir = Path(args.results_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"results folder {run_dir} does not exist; pass a run folder such as results/NAME")
    for name in ("abs_tol", "rel_tol"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0")
    per_metric = parse_tol(args.tol)
    if args.write_baseline:
        stored = {"default": {"abs": args.abs_tol or 0.0, "rel": args.rel_tol or 0.0}, "per_metric": per_metric}
        write_baseline(run_dir, Path(args.write_baseline), stored)
        print(f"wrote baseline {args.write_baseline} from {run_dir}", file=sys.stderr)
        return 0
    if not args.baseline:
        raise ConfigError("gate needs --baseline FILE (or --write-baseline FILE to create one)")
    if not Path(args.baseline).is_file():
        raise ConfigError(f"baseline {args.baseline} does not exist; create one with --write-baseline")
    try:
        baseline = read_json(args.baseline)
        stored = baseline.get("tolerances", {})
        baseline["cells"]
    except (ValueError, KeyError, AttributeError):
        raise ConfigError(f"baseline {args.baseline} is not a baseline file; create one with "
                          "--write-baseline") from None
    tolerances = {**stored.get("per_metric", {}), **per_metric}
    abs_tol = args.abs_tol if args.abs_tol is not None else stored.get("default", {}).get("abs", 0.0)
    rel_tol = args.rel_tol if args.rel_tol is not None else stored.get("default", {}).get("rel", 0.0)
    rows = compare(baseline, current_metrics(run_dir), abs_tol, rel_tol, tolerances, args.ci_aware,
                   args.allow_missing)
    print_table(rows)
    bad = [r for r in rows if r["verdict"] in ("REGRESSED", "MISSING")]
    if bad:
        print(f"gate FAILED: {len(bad)} of {len(rows)} checks failed ("
              + "; ".join(f"{r['cell']} {r['metric']}: {r['verdict'].lower()}" for r in bad[:5])
              + (", ..." if len(bad) > 5 else "") + ")", file=sys.stderr)
        return 1
    print(f"gate passed: {len(rows)} checks against {args.baseline}", file=sys.stderr)
    return 0
