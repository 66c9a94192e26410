"""The command line: the entry point (``main``) and one module per subcommand.

    python run_matrix.py --tasks cnn --methods base,lora,qlora     run the matrix (harness/cli/run.py)
    python run_matrix.py list | plan | report | gate | export      the other commands, one module each

This is the top of the program: it loads the task plugins, then hands the arguments to a subcommand. The CLI may
import every stage below it. Any ``HarnessError`` is printed as one line, without a traceback, and exits with
status 2.
"""

from __future__ import annotations

import sys

from harness.cli.export import cmd_export
from harness.cli.gate import cmd_gate
from harness.cli.listing import cmd_list
from harness.cli.plan import cmd_plan
from harness.cli.report import cmd_report
from harness.cli.run import cmd_run, parse_run_args
from harness.core.errors import HarnessError
from harness.spec.task import load_tasks

COMMANDS = {"list": cmd_list, "report": cmd_report, "gate": cmd_gate, "plan": cmd_plan, "export": cmd_export}
__all__ = ["COMMANDS", "main", "parse_run_args"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    load_tasks()
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
    except BrokenPipeError:  # the reader went away (plan | head): nothing more to say
        sys.stderr.close()
        return 0
