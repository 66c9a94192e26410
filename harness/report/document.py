"""A run's report, built once from its records and drawn in every format: terminal, report.md, summary.csv and
report.html.

``build`` makes the ``Report``: the notes on how the run was made, one section per task (its table, the tables it
adds, its lm-eval table, its recommendation), the cross-task table and the paired comparisons, every table in the
table model (harness/report/table.py). The renderers below, and harness/report/html.py for the page, draw it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.core.files import atomic_write_bytes, read_json
from harness.core.units import parse_budget
from harness.records.tuning import run_tunings
from harness.report import html as html_page
from harness.report.compare import comparison_table, paired_comparisons
from harness.report.cost import cost_table
from harness.report.cross_task import cross_markdown, cross_rows, cross_table
from harness.report.lm_eval import lm_eval_table
from harness.report.recommend import paragraphs
from harness.report.render import csv_text, terminal
from harness.report.render import markdown as markdown_table
from harness.report.table import Table
from harness.report.tables import cells_table, extra_tables, notes, task_tables
from harness.report.tuning import search_notes, tested, tuning_note, tuning_table

COMPARISONS_NOTE = "Main metric of each task; paired bootstrap over the same eval examples (95% CI)."


@dataclass(frozen=True)
class Section:
    """One task: its table, the tables the task adds (caption, table), its lm-eval table, its recommendation."""

    task: str
    table: Table
    extras: tuple = ()
    lm_eval: Table | None = None
    recommendation: str | None = None
    tuning: Table | None = None  # the tuned methods' trials on validation (harness/report/tuning.py)
    cost: Table | None = None  # quality against training and per-query cost (harness/report/cost.py)
    search: tuple = ()  # what each tuned method's search covered, widened, left out, and found important


@dataclass(frozen=True)
class Report:
    title: str
    notes: tuple
    sections: tuple
    cross: Table | None
    cross_rows: tuple  # the rows behind ``cross``, for the page's plots
    comparisons: Table | None
    records: tuple
    tunings: tuple = ()


def build(records: list[dict], title: str, command: str | None = None, comparisons: list[dict] | None = None,
          recommendations: dict | None = None, tunings: list | None = None) -> Report:
    """The report of ``records``; ``comparisons`` (paired_comparisons rows), ``recommendations`` ({task:
    paragraph}) and ``tunings`` (harness.records.tuning) are shown when given."""
    rows = cross_rows(records)
    tunings = tested(list(tunings or ()), records)
    sections = tuple(Section(task, table, tuple(extra_tables(task, records)), lm_eval_table(records, task),
                             (recommendations or {}).get(task), tuning_table(task, tunings), cost_table(task, records),
                             tuple(search_notes([t for t in tunings if t.task == task])))
                     for task, table in task_tables(records).items())
    compared = comparison_table(comparisons) if comparisons else None
    lines = notes(records, command)
    if tunings:
        lines.insert(1 if command or lines[0].startswith("Made with") else 0, tuning_note(tunings))
    return Report(title, tuple(lines), sections, cross_table(records, rows), tuple(rows), compared, tuple(records),
                  tuple(tunings))


def markdown(records: list[dict], title: str, command: str | None = None, comparisons: list[dict] | None = None,
             recommendations: dict | None = None) -> str:
    return to_markdown(build(records, title, command, comparisons, recommendations))


def to_markdown(report: Report) -> str:
    parts = [f"# {report.title}", ""]
    for line in report.notes:
        parts += [line.replace(": python", ":\n\n    python", 1) if line.startswith("Made with") else line, ""]
    for s in report.sections:
        parts += [f"## {s.task}", "", markdown_table(s.table), ""]
        if s.recommendation:
            parts += [f"**Recommendation.** {s.recommendation}", ""]
        if s.cost is not None:
            parts += [f"**{s.cost.title}**", "", markdown_table(s.cost), ""]
        if s.tuning is not None:
            parts += [f"**{s.tuning.title}**", "", markdown_table(s.tuning), ""]
            parts += [line for note in s.search for line in (note, "")]
        for caption, table in s.extras:
            parts += [f"**{caption}**", "", markdown_table(table), ""]
        if s.lm_eval is not None:
            parts += [f"**{s.lm_eval.title}**", "", markdown_table(s.lm_eval), ""]
    if report.cross is not None:
        parts += cross_markdown(list(report.records), report.cross)
    if report.comparisons is not None and report.comparisons.rows:
        parts += ["## Paired comparisons", "", COMPARISONS_NOTE, "", markdown_table(report.comparisons), ""]
    return "\n".join(parts)


def to_terminal(report: Report, console) -> None:
    """The tables, each task's recommendation after them: the CI goes on a second line so that a table stays
    readable in an 80-column terminal."""
    for s in report.sections:
        terminal(s.table, console)
        if s.cost is not None and prompts(report.records, s.task):
            terminal(s.cost, console)
        if s.tuning is not None:
            terminal(s.tuning, console)
            for note in s.search:
                console.print(note.replace("**", ""), soft_wrap=True)
        if s.lm_eval is not None:
            terminal(s.lm_eval, console)
    if report.cross is not None:
        terminal(report.cross, console)
    for s in report.sections:
        if s.recommendation:
            console.print(s.recommendation, soft_wrap=True)


def prompts(records, task: str) -> bool:
    """The task has a method whose prompts hold shots or passages: its cost view is worth the terminal's room."""
    return any(r["task"] == task and (r["config"]["method"].get("shots") or r["config"]["method"].get("retrieve"))
               for r in records)


def write_reports(run_dir: Path, records: list[dict], command: str | None = None, budget: str | None = None,
                  console=None) -> list[Path]:
    """Write report.md, summary.csv and report.html, and print the tables and recommendations to ``console`` when
    one is given; ``budget`` as in --budget."""
    run_dir = Path(run_dir)
    budget = parse_budget(budget)  # a malformed budget is one line, before any table
    n_boot = next((r["config"]["hyperparameters"]["bootstrap"] for r in records), 1000)
    pairs = paired_comparisons(records, n_boot=n_boot)
    report = build(records, f"Results: {run_dir.name}", command, pairs, paragraphs(records, budget, pairs),
                   run_tunings(run_dir))
    if console is not None:
        to_terminal(report, console)
    paths = [run_dir / "report.md", run_dir / "summary.csv", run_dir / "report.html"]
    for path, text in zip(paths, (to_markdown(report), csv_text(cells_table(records)), html_page.render(report))):
        atomic_write_bytes(path, text.encode())
    return paths


def run_budget(run_dir: Path) -> str | None:
    """The --budget the run was made with (run.json), so that a rebuilt report says the same."""
    manifest = Path(run_dir) / "run.json"
    return read_json(manifest).get("config", {}).get("budget") if manifest.is_file() else None
