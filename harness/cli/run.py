"""``run_matrix.py [FLAGS]``: run the task x method matrix, print the tables, write the reports.

Flags are made from ``RunConfig``'s fields (harness/cli/parser.py), in sections, so they match the YAML keys.
"""

from __future__ import annotations

import argparse
import shlex

from harness.cli.parser import Parser, add_config_flags, config_from_args
from harness.core.console import console
from harness.execute.runner import run_matrix, summary_line
from harness.integrations.trackers import log_run
from harness.records.load import load_records
from harness.report.document import write_reports
from harness.spec.config import RunConfig

DESCRIPTION = """\
Fine-tune and evaluate every task x method cell; print and save a comparison table.

A first run needs the flags of the first section only, e.g.
  python run_matrix.py --tasks cnn --methods base,lora,qlora"""

USAGE = ("run_matrix.py [--tasks T,...] [--methods M,...] [--model MODEL] [--data TASK=SOURCE] [FLAG ...]\n"
         "       run_matrix.py {list,plan,report,gate,export} ...")
EPILOG = """\
other commands:
  list                         tasks, methods, catalogue models and metrics
  plan [--model M] [--gpu T4]  estimated peak memory and time per method, before running (no weights)
  report RESULTS_DIR [--budget memory=16GiB,time=2h]
                               rebuild the tables, reports and recommendation from stored records
  gate RESULTS_DIR --baseline FILE
                               fail (exit 1) when a metric regressed against a baseline
  export RUN TASK METHOD OUT   a deployable model from a cell's saved weights (LoRA merged, QLoRA adapter)
Each takes --help.

Precedence: code defaults < --config FILE.yaml < flags. Rerunning with the same settings (or --run-name)
resumes: completed cells are skipped, interrupted ones redone. Exit status: 0 all cells ok, 1 a cell
failed or was skipped, 2 bad input.

examples:
  python run_matrix.py --tasks cnn --methods base,lora,qlora
  python run_matrix.py --tasks cnn --methods qlora --data cnn=abisee/cnn_dailymail:3.0.0 \\
      --model meta-llama/Llama-2-7b-chat-hf
  python run_matrix.py --tasks cnn --data cnn=my.jsonl --columns cnn:article=story,highlights=summary
"""


def run_parser() -> argparse.ArgumentParser:
    p = Parser(prog="run_matrix.py", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
               description=DESCRIPTION, usage=USAGE)
    add_config_flags(p)
    p._action_groups[2].add_argument("--config", metavar="FILE.yaml",
                                     help="YAML file with the same keys as these flags (flags override it)")
    return p


def parse_run_args(argv: list[str]) -> RunConfig:
    args = vars(run_parser().parse_args(argv))
    return config_from_args(args, args.pop("config", None))


def cmd_run(argv: list[str]) -> int:
    cfg = parse_run_args(argv)
    cells = run_matrix(cfg, "python run_matrix.py " + shlex.join(argv))
    records = load_records(cfg.run_dir)
    paths = write_reports(cfg.run_dir, records, budget=cfg.budget, console=console)
    console.print(f"records: {cfg.run_dir}/<task>/<method>/   reports: {', '.join(str(p) for p in paths)}")
    if cfg.report_to:
        log_run(cfg, cfg.run_dir, records)
    status, line = summary_line(cells)
    console.print(line, style="bold red" if status else "bold green", soft_wrap=True)
    return status
