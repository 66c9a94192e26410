"""``run_matrix.py gate RESULTS_DIR --baseline FILE``: fail (exit 1) when a metric regressed (harness/report/gate.py).

    python run_matrix.py gate results/RUN --baseline baseline.json [--abs-tol 0.01] [--rel-tol 0.02]
                              [--tol rougeL=abs:0.02] [--ci-aware] [--allow-missing]
    python run_matrix.py gate results/RUN --write-baseline baseline.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli.parser import Parser
from harness.core.console import console
from harness.core.errors import ConfigError
from harness.core.files import read_json
from harness.report.gate import FAILING, compare, current_metrics, gate_table, parse_tol, write_baseline
from harness.report.render import terminal

DESCRIPTION = "The regression gate: compare a run's metrics with a stored baseline and fail on any regression."


def cmd_gate(argv: list[str]) -> int:
    p = Parser(prog="run_matrix.py gate", description=DESCRIPTION,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_dir", help="the run folder to check, e.g. results/NAME")
    p.add_argument("--baseline", help="baseline JSON to compare against")
    p.add_argument("--write-baseline", metavar="FILE", help="write a baseline from the run instead of gating")
    p.add_argument("--abs-tol", type=float, default=None, help="allowed absolute drop for every metric")
    p.add_argument("--rel-tol", type=float, default=None, help="allowed drop relative to the baseline value")
    p.add_argument("--tol", action="append", metavar="METRIC=abs:X|rel:X", help="per-metric tolerance")
    p.add_argument("--ci-aware", action="store_true",
                   help="count a drop only when the baseline lies outside the current 95%% CI")
    p.add_argument("--allow-missing", action="store_true",
                   help="a cell or metric the run does not have does not fail (a cell it has that failed still does)")
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
        not_gated = write_baseline(run_dir, Path(args.write_baseline), stored)
        left = sum(len(m) for m in not_gated.values())
        print(f"wrote baseline {args.write_baseline} from {run_dir}"
              + (f"; {left} values that cannot regress are listed under not_gated, not checked" if left else ""),
              file=sys.stderr)
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
    terminal(gate_table(rows), console)
    bad = [r for r in rows if r["verdict"] in FAILING]
    if bad:
        print(f"gate FAILED: {len(bad)} of {len(rows)} checks failed ("
              + "; ".join(f"{r['cell']} {r['metric']}: {r['verdict'].lower()}" for r in bad[:5])
              + (", ..." if len(bad) > 5 else "") + ")", file=sys.stderr)
        return 1
    print(f"gate passed: {len(rows)} checks against {args.baseline}", file=sys.stderr)
    return 0
