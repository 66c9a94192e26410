"""The command line's parsers: one-line usage errors, and flags made from the run config's own fields.

Every setting of a run is a field of ``RunConfig`` (harness/spec/config.py) with its help text and its section of
``--help``; ``add_config_flags`` turns those fields into flags, grouped by section, so ``run`` and ``plan`` share
one definition of every flag they have in common, and the YAML keys are the flags' names.
"""

from __future__ import annotations

import argparse
import dataclasses

from harness.spec.config import FLAGS, GROUPS
from harness.spec.resolve import parse_columns_flags, parse_data_flags, resolve


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line (no usage dump) and exits with status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, only: tuple | None = None, aliases: dict | None = None,
                     help_overrides: dict | None = None) -> None:
    """A flag for each RunConfig field (or those in ``only``), in argument groups by section; ``aliases`` adds
    other spellings of a flag, ``help_overrides`` says what a flag means to another command. A flag left out of
    the command line is left out of the result (argparse.SUPPRESS), so defaults come from the config alone."""
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for f in FLAGS:
        if only is not None and f.name not in only:
            continue
        meta = f.metadata
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        text = (help_overrides or {}).get(f.name, meta["help"])
        help_text = f"{text} (default: {shown})" if default not in (None, {}) else text
        names = [flag(f.name), *(aliases or {}).get(f.name, ())]
        group = groups[meta["group"]]
        kind = meta["cli"]
        if kind == "bool":
            group.add_argument(*names, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=help_text)
        elif kind in ("kv", "columns"):
            group.add_argument(*names, action="append", default=argparse.SUPPRESS, help=help_text,
                               metavar="TASK=SOURCE" if kind == "kv" else "TASK:a=b,...")
        else:
            group.add_argument(*names, default=argparse.SUPPRESS, help=help_text, metavar=f.name.upper(),
                               choices=meta.get("choices"))
    for group in groups.values():  # a section with no flag of this command is not shown
        if not group._group_actions:
            parser._action_groups.remove(group)


def config_from_args(args: dict, config_file: str | None = None):
    """The RunConfig of parsed flags (as ``vars(parser.parse_args())`` holds them): defaults < YAML < flags."""
    args = dict(args)
    for key in ("data", "corpus"):
        if key in args:
            args[key] = parse_data_flags(args[key], f"--{key}")
    if "columns" in args:
        args["columns"] = parse_columns_flags(args["columns"])
    return resolve(args, config_file)
