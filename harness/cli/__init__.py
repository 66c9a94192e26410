"""Command line: run a matrix (the default), or list, report and gate existing results.

    python run_matrix.py --tasks cnn --methods base,lora,qlora
    python run_matrix.py list
    python run_matrix.py report results/RUN
    python run_matrix.py gate results/RUN --baseline baseline.json
    python run_matrix.py export results/RUN cnn lora OUT

Flags are generated from ``RunConfig``'s fields, so they match the YAML keys. Any ``HarnessError`` is
printed as one line, without a traceback, and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

from harness.spec.config import RunConfig, parse_columns_flags, parse_data_flags, resolve
from harness.core.errors import HarnessError
from harness.cli.export import cmd_export
from harness.cli.plan import cmd_plan

EPILOG = """\
other commands:
  list                         tasks, methods, catalogue models and metrics
  report RESULTS_DIR [--budget memory=16GiB,time=2h]
                               rebuild the tables, reports and recommendation from stored records
  gate RESULTS_DIR --baseline FILE
                               fail (exit 1) when a metric regressed against a baseline
  plan --model M [--gpu T4]    estimated peak memory and time per method, before running (no weights)
  export RUN TASK METHOD OUT   a deployable model from a cell's saved weights (LoRA merged, QLoRA adapter)

Precedence: code defaults < --config FILE.yaml < flags. Rerunning with the same settings (or --run-name)
resumes: completed cells are skipped, interrupted ones redone. Exit status: 0 all cells ok, 1 a cell
failed, 2 bad input.

examples:
  python run_matrix.py --tasks cnn --methods base,lora,qlora
  python run_matrix.py --tasks cnn --methods qlora --data cnn=abisee/cnn_dailymail:3.0.0 \
      --model meta-llama/Llama-2-7b-chat-hf
  python run_matrix.py --tasks cnn --data cnn=my.jsonl --columns cnn:article=story,highlights=summary
"""


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line (no usage dump) and exits with status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def run_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="run_matrix.py", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Fine-tune and evaluate every task x method cell; print and save a comparison table.")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file with the same keys as these flags")
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        meta, default = f.metadata, f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = ",".join(default) if isinstance(default, tuple) else default
        help_text = f"{meta['help']} (default: {shown})" if default not in (None, {}) else meta["help"]
        kind = meta["cli"]
        if kind == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif kind in ("kv", "columns"):
            p.add_argument(flag, action="append", default=argparse.SUPPRESS, help=help_text,
                           metavar="TASK=SOURCE" if kind == "kv" else "TASK:a=b,...")
        else:
            p.add_argument(flag, default=argparse.SUPPRESS, help=help_text, metavar=f.name.upper(),
                           choices=meta.get("choices"))
    return p


def parse_run_args(argv: list[str]) -> RunConfig:
    args = vars(run_parser().parse_args(argv))
    config_file = args.pop("config", None)
    if "data" in args:
        args["data"] = parse_data_flags(args["data"])
    if "columns" in args:
        args["columns"] = parse_columns_flags(args["columns"])
    return resolve(args, config_file)


def cmd_run(argv: list[str]) -> int:
    from harness.core.console import console
    from harness.report.tables import load_records, print_recommendations, print_tables, write_reports
    from harness.execute.runner import run_matrix, summary_line

    cfg = parse_run_args(argv)
    cells = run_matrix(cfg, "python run_matrix.py " + shlex.join(argv))
    records = load_records(cfg.run_dir)
    print_tables(records, console)
    print_recommendations(records, console, cfg.budget)
    paths = write_reports(cfg.run_dir, records, budget=cfg.budget)
    console.print(f"records: {cfg.run_dir}/<task>/<method>/   reports: {', '.join(str(p) for p in paths)}")
    if cfg.report_to:
        from harness.integrations.trackers import log_run

        log_run(cfg, cfg.run_dir, records)
    status, line = summary_line(cells)
    console.print(line, style="bold red" if status else "bold green", soft_wrap=True)
    return status


def cmd_list(argv: list[str]) -> int:
    from harness.spec.methods import METHODS
    from harness.spec.metrics import METRICS
    from harness.cell.models import CATALOGUE
    from harness.spec.task import TASKS, get_task

    get_task("cnn")  # registers the built-in tasks
    print("tasks:")
    for name, task in TASKS.items():
        print(f"  {name:10} {task.description} (main metric: {task.main_metric})")
    print("methods:")
    for name, factory in METHODS.items():
        spec = factory()
        bits = f", {spec.bits}-bit weights" if spec.bits else ""
        print(f"  {name:10} finetune={spec.finetune}{bits}, lr={spec.lr}")
    print("catalogue models:")
    for name, build in CATALOGUE.items():
        print(f"  {name:16} {(build.__doc__ or '').strip().splitlines()[0]}")
    print("metrics:")
    for name, m in METRICS.items():
        print(f"  {name:22} {'higher' if m.higher_is_better else 'lower'} is better, {m.aggregation}")
    return 0


def cmd_report(argv: list[str]) -> int:
    from harness.report import tables as report

    p = Parser(prog="run_matrix.py report",
               description="Rebuild every output of a run from its stored records alone.")
    p.add_argument("results_dir", help="a run folder, e.g. results/smollm2-135m-1a2b3c4d")
    p.add_argument("--budget", help="rule cells out of the recommendation, e.g. memory=16GiB,time=2h "
                                    "(default: the run's own --budget)")
    args = p.parse_args(argv)
    return report.cmd_report(args.results_dir, args.budget)


def cmd_gate(argv: list[str]) -> int:
    from harness.report import gate

    return gate.main(argv)


COMMANDS = {"list": cmd_list, "report": cmd_report, "gate": cmd_gate, "plan": cmd_plan, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        return cmd_run(argv)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume (completed cells are kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
