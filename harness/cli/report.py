"""``run_matrix.py report RESULTS_DIR``: rebuild every output of a run from its stored records alone."""

from __future__ import annotations

from pathlib import Path

from harness.cli.parser import Parser
from harness.core.console import console
from harness.core.errors import ConfigError
from harness.records.load import load_records
from harness.report.document import run_budget, write_reports


def cmd_report(argv: list[str]) -> int:
    p = Parser(prog="run_matrix.py report",
               description="Rebuild every output of a run from its stored records alone.")
    p.add_argument("results_dir", help="a run folder, e.g. results/smollm2-135m-1a2b3c4d")
    p.add_argument("--budget", help="rule cells out of the recommendation, e.g. memory=16GiB,time=2h "
                                    "(default: the run's own --budget)")
    args = p.parse_args(argv)
    run_dir = Path(args.results_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"results folder {run_dir} does not exist; pass a run folder such as results/NAME")
    records = load_records(run_dir)
    if not records:
        raise ConfigError(f"{run_dir} holds no completed cells; pass a run folder (results/NAME), "
                          "not the results root")
    budget = args.budget if args.budget is not None else run_budget(run_dir)
    paths = write_reports(run_dir, records, budget=budget, console=console)
    console.print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
