"""The one table model every report format draws: columns with their directions, rows of values with their CIs.

A report table is built once, from the records, as a ``Table`` of ``Value`` cells (a number with its CI, its
spread over seeds, its sign and a note), text, and ``Status`` cells for cells that did not finish. The renderers
in harness/report/render.py draw that same object as a terminal table, markdown, HTML or CSV; nothing else
formats a number for a report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from harness.core.units import MIB


def _number(x, digits: int, signed: bool = False, grouped: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, f"{'+' if signed else ''}{',' if grouped else ''}.{digits}f")


@dataclass(frozen=True)
class Value:
    """A number as a report shows it: ``value`` [``ci``], ± ``stderr`` (lm-eval's), ± ``spread`` between
    ``n_seeds`` seeds, and a ``note`` after it; ``signed`` numbers carry their sign (differences)."""

    value: float | None
    ci: tuple | None = None
    digits: int = 3
    signed: bool = False
    grouped: bool = False  # thousands separators (MiB)
    spread: float | None = None
    n_seeds: int | None = None
    stderr: float | None = None
    note: str = ""

    def text(self, ci_sep: str = " ") -> str:
        out = _number(self.value, self.digits, self.signed, self.grouped)
        if self.stderr is not None:
            out += f" ± {_number(self.stderr, self.digits)}"
        if self.n_seeds is not None:
            out += (f" ±{_number(self.spread, 3)} ({self.n_seeds} seeds)" if self.spread is not None
                    else f" ({self.n_seeds} seed)")
        if self.ci is not None:
            lo, hi = (_number(x, self.digits, self.signed) for x in self.ci)
            out += f"{ci_sep}[{lo}, {hi}]"
        return f"{out} {self.note}" if self.note else out


def mib(n) -> Value:
    """Bytes shown as whole MiB."""
    return Value(None if n is None else n / MIB, digits=0, grouped=True)


@dataclass(frozen=True)
class Status:
    """Something that went wrong, which marks its row: a cell that did not finish (its status, error kind and
    message; the message is left out where it would squeeze the columns, and the terminal prints it under the
    table instead), or a gate check that failed (its verdict alone, with no kind)."""

    status: str
    kind: str | None = None
    message: str = ""

    def text(self, messages: bool = True) -> str:
        if self.kind is None:
            return self.status
        short = f"{self.status}: {self.kind}"
        return f"{short}: {self.message}" if messages else short


@dataclass(frozen=True)
class Column:
    name: str
    higher_is_better: bool | None = None  # a metric's direction: an arrow in the header
    ci: bool = False  # its values carry CIs (CSV gives them columns of their own)

    @property
    def title(self) -> str:
        arrow = {True: " ↑", False: " ↓", None: ""}[self.higher_is_better]
        return self.name + arrow


@dataclass(frozen=True)
class Table:
    """Rows of cells (text, ``Value`` or ``Status``) under ``columns``; ``title`` heads it in the terminal,
    ``notes`` follow it there (the messages of cells that did not finish); ``keys`` name the leading columns
    that identify a row (left-aligned)."""

    columns: tuple
    rows: tuple
    title: str = ""
    keys: int = 1
    notes: tuple = field(default=())

    @property
    def header(self) -> list[str]:
        return [c.title for c in self.columns]

    def text_rows(self, ci_sep: str = " ", messages: bool = True) -> list[list[str]]:
        return [[_text(c, ci_sep, messages) for c in row] for row in self.rows]

    def failed(self, row: tuple) -> bool:
        return any(isinstance(c, Status) for c in row)

    def __iter__(self):
        """Unpacks as ``header, rows`` in plain text, the view a markdown table gives."""
        return iter((self.header, self.text_rows()))


def _text(cell, ci_sep: str, messages: bool) -> str:
    if isinstance(cell, Value):
        return cell.text(ci_sep)
    if isinstance(cell, Status):
        return cell.text(messages)
    return str(cell)
