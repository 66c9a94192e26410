"""Comparison tables built from the stored records alone (no model is loaded).

One row per task x method: quality metrics with their 95% CIs, peak memory, throughput, wall time and the
trainable share of parameters. The terminal gets rich tables; the run folder gets ``report.md`` and
``summary.csv``. Metric directions come from the metric registry.
"""

from __future__ import annotations

import math
from pathlib import Path

from harness.report import cross_task as forgetting
from harness.core.files import read_json
from harness.spec.metrics import get_metric
from harness.records.store import CellStore
from harness.report.seeds import collapse, label, multi_seed, seed_of

MIB = 2**20


def load_records(run_dir: Path) -> list[dict]:
    """Every cell folder of a run that has a readable status, in run.json order when there is one."""
    run_dir = Path(run_dir)
    folders: list[Path] = []
    if (run_dir / "run.json").is_file():
        folders = [run_dir / c["folder"] for c in read_json(run_dir / "run.json")["cells"]]
    folders += sorted(p.parent for p in run_dir.glob("*/*/status.json") if p.parent not in folders)
    records = []
    for folder in folders:
        store = CellStore(folder.parent.parent, folder.parent.name, folder.name)
        state, _ = store.state()
        if state != "complete":
            continue
        rec = {"task": folder.parent.name, "method": folder.name, "dir": str(folder),
               "status": store.read_json("status.json"), "config": store.read_json("config.json")}
        rec["method"] = rec["config"]["method"]["name"]
        if store.path("metrics.json").is_file():
            rec["metrics"] = store.read_json("metrics.json")
            rec["train"] = store.read_json("train.json")
        records.append(rec)
    return records


def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def _mib(x) -> str:
    return "-" if x is None else f"{x / MIB:,.0f}"


def flat_row(rec: dict) -> dict:
    """One summary.csv row: identifiers, status, each metric with its CI, and the measurements."""
    status = rec["status"]
    row = {"task": rec["task"], "method": rec["method"], "status": status["status"],
           "error_kind": status.get("error_kind", ""), "message": status.get("message", "")}
    m = rec.get("metrics")
    if not m:
        return row
    for name, q in m["quality"].items():
        row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = q["value"], q["ci_low"], q["ci_high"]
    meas = m["measurements"]
    row.update({
        "peak_mem_mib": (meas["memory"]["peak_bytes"] or 0) / MIB,
        "peak_rss_mib": (meas["memory"].get("peak_rss_bytes") or 0) / MIB,
        "cuda_max_allocated_mib": (meas["memory"].get("cuda_max_allocated_bytes") or 0) / MIB or None,
        "cuda_max_reserved_mib": (meas["memory"].get("cuda_max_reserved_bytes") or 0) / MIB or None,
        "footprint_mib": meas["memory"]["model_footprint_bytes"] / MIB,
        "train_tokens_per_s": meas["timing"]["train_tokens_per_s"],
        "gen_tokens_per_s": meas["timing"]["generation_tokens_per_s"],
        "train_s": meas["timing"]["train_s"], "eval_s": meas["timing"]["eval_s"],
        "trainable_params": meas["params"]["trainable"], "total_params": meas["params"]["total"],
        "trainable_pct": meas["params"]["trainable_pct"],
    })
    return row


def task_tables(records: list[dict], ci_sep: str = " ", messages: bool = True
                ) -> dict[str, tuple[list[str], list[list[str]]]]:
    """{task: (header, rows)} with display strings, one row per method; ``ci_sep`` goes before the CI.

    A failed or skipped cell shows its status and error kind, and its message unless ``messages`` is False
    (the terminal prints messages under the table, where they do not squeeze the columns).
    """
    out: dict[str, tuple[list[str], list[list[str]]]] = {}
    shown = collapse(records)  # one row per method: several seeds become their mean and spread
    for task in dict.fromkeys(r["task"] for r in records):
        recs = [r for r in shown if r["task"] == task]
        names: list[str] = list(_task_metrics(task))
        for r in recs:
            for n in (r.get("metrics") or {}).get("quality", {}):
                if n not in names:
                    names.append(n)
        present = {n for r in recs for n in (r.get("metrics") or {}).get("quality", {})}
        names = [n for n in names if n in present]
        arrows = [f"{n} {'↑' if get_metric(n).higher_is_better else '↓'}" for n in names]
        header = ["method", *arrows, "peak MiB", "weights MiB", "train tok/s", "gen tok/s", "train s",
                  "eval s", "train %"]
        rows = []
        for r in recs:
            if not r.get("metrics"):
                st = r["status"]
                text = f"{st['status']}: {st.get('error_kind', '')}"
                rows.append([label(r, records), f"{text}: {st.get('message', '')}" if messages else text]
                            + [""] * (len(header) - 2))
                continue
            q, meas = r["metrics"]["quality"], r["metrics"]["measurements"]
            cells = [label(r, records)]
            for n in names:
                v = q.get(n)
                cells.append("-" if v is None else
                             f"{_fmt(v['value'])}{_spread(v)}{ci_sep}[{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}]")
            t = meas["timing"]
            cells += [_mib(meas["memory"]["peak_bytes"]), _mib(meas["memory"]["model_footprint_bytes"]),
                      _fmt(t["train_tokens_per_s"], 1), _fmt(t["generation_tokens_per_s"], 1),
                      _fmt(t["train_s"], 0), _fmt(t["eval_s"], 0), _fmt(meas["params"]["trainable_pct"], 2)]
            rows.append(cells)
        out[task] = (header, rows)
    return out


def _spread(v: dict) -> str:
    """' ±0.021 (3 seeds)' for a mean over seeds (the standard deviation between them); '' for one seed."""
    if "n_seeds" not in v:
        return ""
    return f" ±{_fmt(v['spread'])} ({v['n_seeds']} seeds)" if v["spread"] is not None else f" ({v['n_seeds']} seed)"


def _task_metrics(task: str) -> tuple:
    """The task's own metric order (main metric first), when the task is registered."""
    from harness.spec.task import TASKS, get_task

    get_task("cnn")  # registers the built-in tasks
    if task not in TASKS:
        return ()
    t = TASKS[task]
    return (t.main_metric, *[m for m in t.metrics if m != t.main_metric])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def notes(records: list[dict], command: str | None = None) -> list[str]:
    """The lines above the tables: how the run was made (the command from run.json by default), on what, and
    what the data held."""
    if command is None and records:
        manifest = Path(records[0]["dir"]).parent.parent / "run.json"
        command = read_json(manifest).get("command") if manifest.is_file() else None
    out = [f"Made with (latest command on this run folder): {command}"] if command else []
    envs = [read_json(Path(r["dir"]) / "env.json") for r in records if (Path(r["dir"]) / "env.json").is_file()]
    if envs:
        env, pk = envs[0], envs[0]["packages"]
        commits = sorted({str(e["git"].get("commit"))[:10] for e in envs})
        dirty = sum(bool(e["git"].get("dirty")) for e in envs)
        state = f" (uncommitted changes in {dirty} of {len(envs)} cells)" if dirty else ""
        out.append(f"Device: {env['device']} ({env.get('gpu') or env['cpu']}, {env['torch_threads']} threads); "
                   f"torch {pk.get('torch')}, transformers {pk.get('transformers')}, peft {pk.get('peft')}, "
                   f"trl {pk.get('trl')}, bitsandbytes {pk.get('bitsandbytes')}; commit {', '.join(commits)}"
                   f"{state}.")
    out.append("Quality: the value over the eval examples, with its 95% bootstrap CI in brackets. Peak memory: "
               "CUDA max allocated on a GPU; on CPU, the peak resident memory of the process during the cell.")
    if multi_seed(records):
        out.append("Seeds: a method run with several seeds shows the mean over its seeds, ± the standard deviation "
                   "between seeds (n-1), then the 95% bootstrap CI over eval examples, which resamples examples with "
                   "all their seeds together; the other columns are means. The paired comparisons pair values by "
                   "(seed, example).")
    seen = set()
    for r in records:
        path = Path(r["dir"]) / "data.json"
        if r["task"] in seen or not path.is_file():
            continue
        seen.add(r["task"])
        fp = read_json(path)
        parts = []
        for role in ("train", "eval"):
            if role in fp:
                d = fp[role]
                bad = f", {d['unparsed']['count']} rows did not parse and were left out" if d.get("unparsed") else ""
                parts.append(f"{role} {d['rows']} rows from {d['source']} (sha256 {d['sha256'][:12]}{bad})")
        out.append(f"Data for {r['task']}: " + "; ".join(parts) + ".")
    return out


def markdown(records: list[dict], title: str, command: str | None = None, comparisons=None,
             recommendations: dict | None = None) -> str:
    parts = [f"# {title}", ""]
    for line in notes(records, command):
        parts += [line.replace(": python", ":\n\n    python", 1) if line.startswith("Made with") else line, ""]
    for task, (header, rows) in task_tables(records).items():
        parts += [f"## {task}", "", markdown_table(header, rows), ""]
        if (recommendations or {}).get(task):
            parts += [f"**Recommendation.** {recommendations[task]}", ""]
        parts += _extras_md(task, records)
        parts += forgetting.lm_eval_markdown(records, task)
    parts += forgetting.cross_markdown(records)
    if comparisons and comparisons[1]:
        parts += ["## Paired comparisons", "",
                  "Main metric of each task; paired bootstrap over the same eval examples (95% CI).", "",
                  markdown_table(*comparisons), ""]
    return "\n".join(parts)


def _extras_md(task: str, records: list[dict]) -> list[str]:
    """Task-specific tables the task stored in metrics.json["extra"] (e.g. fever's confusion table)."""
    out = []
    for r in records:
        if r["task"] != task or not r.get("metrics"):
            continue
        for name, table in (r["metrics"].get("extra") or {}).items():
            out += [f"**{label(r, records)}: {name}**", "", markdown_table(table["header"], table["rows"]), ""]
    return out


def print_tables(records: list[dict], console) -> None:
    from rich.table import Table

    # The CI goes on a second line so that the table stays readable in an 80-column terminal.
    for task, (header, rows) in task_tables(records, ci_sep="\n", messages=False).items():
        table = Table(title=f"{task}  (95% bootstrap CI below each value)", title_justify="left")
        for i, h in enumerate(header):
            table.add_column(h, justify="left" if i == 0 else "right", overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        for r in records:
            if r["task"] == task and not r.get("metrics"):
                console.print(f"  {r['method']}: {r['status']['status']}: {r['status'].get('message', '')}",
                              style="red", soft_wrap=True)
        forgetting.print_lm_eval(records, task, console)
    forgetting.print_cross(records, console)


def print_recommendations(records: list[dict], console, budget: str | None = None) -> None:
    """The recommendation paragraph of each task, after the tables."""
    from harness.report.recommend import paragraphs

    for text in paragraphs(records, budget).values():
        console.print(text, soft_wrap=True)


def write_reports(run_dir: Path, records: list[dict], command: str | None = None, budget: str | None = None
                  ) -> list[Path]:
    """report.md, summary.csv and report.html, from the records alone; ``budget`` as in --budget."""
    import pandas as pd

    from harness.report import html as html_report
    from harness.report.compare import comparison_table, paired_comparisons
    from harness.core.files import atomic_write_bytes
    from harness.report.recommend import paragraphs

    run_dir = Path(run_dir)
    title = f"Results: {run_dir.name}"
    n_boot = next((r["config"]["hyperparameters"]["bootstrap"] for r in records), 1000)
    pairs = paired_comparisons(records, n_boot=n_boot)
    comparisons, advice = comparison_table(pairs), paragraphs(records, budget, pairs)
    atomic_write_bytes(run_dir / "report.md", markdown(records, title, command, comparisons, advice).encode())
    rows = [flat_row(r) for r in records]
    if multi_seed(records):  # one row per cell: say which seed it ran with
        rows = [{"task": row["task"], "method": row["method"], "seed": seed_of(r), **row}
                for row, r in zip(rows, records)]
    csv = pd.DataFrame(rows).to_csv(index=False)
    atomic_write_bytes(run_dir / "summary.csv", csv.encode())
    page = html_report.render(title, records, task_tables(records), comparisons, notes(records, command), advice)
    atomic_write_bytes(run_dir / "report.html", page.encode())
    return [run_dir / "report.md", run_dir / "summary.csv", run_dir / "report.html"]


def cmd_report(results_dir: str, budget: str | None = None) -> int:
    """``run_matrix.py report DIR``: rebuild the tables and report files from the records alone.

    ``budget`` (as in --budget) defaults to the one the run was made with, so a rebuilt report says the same.
    """
    from harness.core.console import console
    from harness.core.errors import ConfigError
    from harness.report.recommend import parse_budget

    run_dir = Path(results_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"results folder {results_dir} does not exist; pass a run folder such as results/NAME")
    records = load_records(run_dir)
    if not records:
        raise ConfigError(f"{results_dir} holds no completed cells; pass a run folder (results/NAME), "
                          "not the results root")
    if budget is None and (run_dir / "run.json").is_file():
        budget = read_json(run_dir / "run.json").get("config", {}).get("budget")
    parse_budget(budget)  # a malformed budget is one line, before any table
    print_tables(records, console)
    print_recommendations(records, console, budget)
    paths = write_reports(run_dir, records, budget=budget)
    console.print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
