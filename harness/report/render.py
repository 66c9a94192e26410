"""The renderers of the table model (harness/report/table.py): plain text, terminal, markdown, HTML and CSV.

Each draws a ``Table`` as it is. Plain text aligns columns for stdout. The terminal puts a value's CI on a line of
its own, so a table stays readable in 80 columns, marks the rows that went wrong in red and prints the messages of
cells that did not finish under the table; markdown and HTML keep the CI beside the value; CSV writes the raw
numbers, each CI bound in a column of its own.
"""

from __future__ import annotations

import csv
import html
import io

from harness.report.table import Status, Table, Value


def markdown(table: Table) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in table.header) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in table.text_rows()]
    return "\n".join(lines)


def plain(table: Table) -> str:
    """Aligned text columns for a plain stdout (``plan``): the key columns left-aligned, the rest right."""
    lines = [table.header, *table.text_rows()]
    widths = [max(len(r[i]) for r in lines) for i in range(len(table.columns))]
    return "\n".join("  ".join(x.ljust(w) if i < table.keys else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths)))
                     for r in lines)


def terminal(table: Table, console) -> None:
    from rich.table import Table as RichTable

    out = RichTable(title=table.title, title_justify="left")
    for i, title in enumerate(table.header):
        out.add_column(title, justify="left" if i < table.keys else "right", overflow="fold")
    for row, text in zip(table.rows, table.text_rows(ci_sep="\n", messages=False)):
        out.add_row(*text, style="red" if table.failed(row) else None)
    console.print(out)
    for note in table.notes:
        console.print(f"  {note}", style="red", soft_wrap=True)


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = []
    for row, text in zip(table.rows, table.text_rows()):
        cls = ' class="fail"' if table.failed(row) else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in text) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def csv_text(table: Table) -> str:
    """One line per row; a column whose values carry CIs adds NAME_ci_low and NAME_ci_high columns."""
    header = []
    for c in table.columns:
        header += [c.name, f"{c.name}_ci_low", f"{c.name}_ci_high"] if c.ci else [c.name]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in table.rows:
        out = []
        for c, cell in zip(table.columns, row):
            raw = _raw(cell)
            out += [raw, *(_raw(x) for x in (cell.ci or (None, None)))] if c.ci and isinstance(cell, Value) else (
                [raw, "", ""] if c.ci else [raw])
        writer.writerow(out)
    return buf.getvalue()


def _raw(cell) -> str:
    if isinstance(cell, Value):
        cell = cell.value
    if isinstance(cell, Status):
        return cell.status
    return "" if cell is None else str(cell)
