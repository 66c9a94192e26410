"""The tables of a run, built from the stored records alone (no model is loaded), in the table model.

Per task, one row per method: quality metrics with their 95% CIs (with several seeds, the mean and the spread
between seeds), peak memory, throughput, wall time and the trainable share of parameters; under it, the tables a
task adds of its own (fever's confusion table). For summary.csv, one row per cell with the raw numbers. Metric
directions come from the metric registry.
"""

from __future__ import annotations

from pathlib import Path

from harness.core.files import read_json
from harness.core.units import MIB
from harness.report.cost import prompt_notes
from harness.report.seeds import collapse, label, multi_seed, seed_of
from harness.report.table import Column, Status, Table, Value, mib
from harness.spec.metrics import get_metric
from harness.spec.overlap import describe
from harness.spec.task import TASKS

MEASURES = ("peak MiB", "weights MiB", "train tok/s", "gen tok/s", "train s", "eval s", "trainable", "adapter MiB")


def _metric_names(task: str, recs: list[dict]) -> list[str]:
    """The metrics the task's rows hold: the task's own order (main metric first), then any others."""
    t = TASKS.get(task)
    names = [t.main_metric, *[m for m in t.metrics if m != t.main_metric]] if t else []
    for r in recs:
        for n in (r.get("metrics") or {}).get("quality", {}):
            if n not in names:
                names.append(n)
    present = {n for r in recs for n in (r.get("metrics") or {}).get("quality", {})}
    return [n for n in names if n in present]


def _quality(v: dict | None):
    if v is None:
        return "-"
    return Value(v["value"], (v["ci_low"], v["ci_high"]), spread=v.get("spread"), n_seeds=v.get("n_seeds"))


def task_tables(records: list[dict]) -> dict[str, Table]:
    """{task: Table}, one row per method: several seeds become their mean and spread."""
    out = {}
    shown = collapse(records)
    for task in dict.fromkeys(r["task"] for r in records):
        recs = [r for r in shown if r["task"] == task]
        names = _metric_names(task, recs)
        columns = (Column("method"), *[Column(n, get_metric(n).higher_is_better, ci=True) for n in names],
                   *[Column(m) for m in MEASURES])
        rows, notes = [], []
        for r in recs:
            if not r.get("metrics"):
                st = r["status"]
                rows.append((label(r, records), Status(st["status"], st.get("error_kind", ""), st.get("message", "")),
                             *[""] * (len(columns) - 2)))
                notes.append(f"{r['method']}: {st['status']}: {st.get('message', '')}")
                continue
            q, meas = r["metrics"]["quality"], r["metrics"]["measurements"]
            t = meas["timing"]
            rows.append((label(r, records), *[_quality(q.get(n)) for n in names],
                         mib(meas["memory"]["peak_bytes"]), mib(meas["memory"]["model_footprint_bytes"]),
                         Value(t["train_tokens_per_s"], digits=1), Value(t["generation_tokens_per_s"], digits=1),
                         Value(t["train_s"], digits=0), Value(t["eval_s"], digits=0),
                         trainable(meas["params"]), adapter_mib(meas["params"].get("adapter_bytes"))))
        out[task] = Table(columns, tuple(rows), title=f"{task}  (95% bootstrap CI below each value)",
                          notes=tuple(notes))
    return out


def adapter_mib(n) -> Value:
    """A kept adapter's size on disk, in MiB to one decimal (a tiny model's adapter is a fraction of one)."""
    return Value(None if n is None else n / MIB, digits=1)


def trainable(params: dict) -> str:
    """'4.88M (3.50%)': the trained parameters and their share of the model."""
    n = params.get("trainable") or 0
    return "-" if not n else f"{n / 1e6:.2f}M ({params['trainable_pct']:.2f}%)"


def extra_tables(task: str, records: list[dict]) -> list[tuple[str, Table]]:
    """(caption, Table) for each table a task stored in metrics.json["extra"] (e.g. fever's confusion table)."""
    out = []
    for r in records:
        if r["task"] != task or not r.get("metrics"):
            continue
        for name, t in (r["metrics"].get("extra") or {}).items():
            out.append((f"{label(r, records)}: {name}",
                        Table(tuple(Column(h) for h in t["header"]), tuple(tuple(row) for row in t["rows"]))))
    return out


CELL_MEASURES = (("peak_mem_mib", "memory", "peak_bytes"), ("prompt_tokens", "prompts", "prompt_tokens_mean"),
                 ("eval_s_per_example", "prompts", "eval_s_per_example"), ("peak_rss_mib", "memory", "peak_rss_bytes"),
                 ("cuda_max_allocated_mib", "memory", "cuda_max_allocated_bytes"),
                 ("cuda_max_reserved_mib", "memory", "cuda_max_reserved_bytes"),
                 ("footprint_mib", "memory", "model_footprint_bytes"),
                 ("train_tokens_per_s", "timing", "train_tokens_per_s"),
                 ("gen_tokens_per_s", "timing", "generation_tokens_per_s"), ("train_s", "timing", "train_s"),
                 ("eval_s", "timing", "eval_s"), ("trainable_params", "params", "trainable"),
                 ("adapter_mib", "params", "adapter_bytes"),
                 ("total_params", "params", "total"), ("trainable_pct", "params", "trainable_pct"))


def cells_table(records: list[dict]) -> Table:
    """One row per cell, every metric with its CI and every measurement as a raw number (summary.csv)."""
    metrics = list(dict.fromkeys(n for r in records for n in (r.get("metrics") or {}).get("quality", {})))
    seeds = multi_seed(records)  # one row per cell: say which seed it ran with
    columns = (Column("task"), Column("method"), *([Column("seed")] if seeds else []), Column("status"),
               Column("error_kind"), Column("message"), *[Column(n, ci=True) for n in metrics],
               *[Column(name) for name, *_ in CELL_MEASURES])
    rows = []
    for r in records:
        st, m = r["status"], r.get("metrics")
        row = [r["task"], r["method"], *([seed_of(r)] if seeds else []), st["status"], st.get("error_kind", ""),
               st.get("message", "")]
        if m:
            row += [Value(q["value"], (q["ci_low"], q["ci_high"])) if (q := m["quality"].get(n)) else None
                    for n in metrics]
            for _, part, key in CELL_MEASURES:
                v = (m["measurements"].get(part) or {}).get(key)
                row.append(v / MIB if (part == "memory" or key == "adapter_bytes") and v is not None else v)
        rows.append(tuple(row) + (None,) * (len(columns) - len(row)))
    return Table(columns, tuple(rows))


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
    out.append("Quality: the value over the test examples, with its 95% bootstrap CI in brackets. Peak memory: "
               "CUDA max allocated on a GPU; on CPU, the peak resident memory of the process during the cell.")
    if multi_seed(records):
        out.append("Seeds: a method run with several seeds shows the mean over its seeds, ± the standard deviation "
                   "between seeds (n-1), then the 95% bootstrap CI over eval examples, which resamples examples with "
                   "all their seeds together; the other columns are means. The paired comparisons pair values by "
                   "(seed, example). The spread between seeds covers " + spread(records))
    out += training_notes(records)
    out += prompt_notes(records)
    out += left_out_notes(records)
    seen = set()
    for r in records:
        path = Path(r["dir"]) / "data.json"
        if r["task"] in seen or not path.is_file():
            continue
        seen.add(r["task"])
        fp = read_json(path)
        parts = []
        for role in ("train", "validation", "test", "eval"):
            if role in fp:
                d = fp[role]
                bad = f", {d['unparsed']['count']} rows did not parse and were left out" if d.get("unparsed") else ""
                parts.append(f"{role} {d['rows']} rows from {d['source']} (sha256 {d['sha256'][:12]}{bad})")
        out.append(f"Data for {r['task']}: " + "; ".join(parts) + ".")
        overlap = fp.get("overlap")
        if overlap:
            out.append(overlap_note(r["task"], overlap))
        val_overlap = describe(r["task"], fp["validation_overlap"], "validation") if fp.get(
            "validation_overlap") else None
        if val_overlap:
            out.append(f"**Warning: validation-train overlap.** {val_overlap}.")
    return out


def spread(records: list[dict]) -> str:
    """What the spread between seeds covers, from what each cell's data.json says its training rows were: with
    --resample-train, rows drawn anew per seed, unless the source was no larger than --train-limit, or the seeds'
    rows hash alike (the same draw reached every seed), where only the order and the initialisation varied."""
    asked: dict[tuple, list[dict]] = {}
    for r in records:
        if r["config"]["hyperparameters"].get("resample_train"):
            asked.setdefault((r["task"], r["method"]), []).append(r)
    if not asked:
        return ("the training order and the initialisation; every seed trained on the same rows (--resample-train "
                "redraws them per seed).")
    same = [f"{task} x {method} ({why})" for (task, method), recs in asked.items() if len(recs) > 1
            and (why := _same_rows(recs))]
    if same and len(same) == sum(len(recs) > 1 for recs in asked.values()):
        return ("the training order and the initialisation only: --resample-train was asked, but every seed trained "
                f"on the same rows: {'; '.join(same)}.")
    drawn = "the training order, the initialisation and the training rows, which each seed drew anew (--resample-train)"
    return drawn + (f", except where every seed trained on the same rows: {'; '.join(same)}." if same else ".")


def _same_rows(recs: list[dict]) -> str | None:
    """Why the seeds of one (task, method) trained on the same rows despite --resample-train, or None."""
    found = [read_json(p) for r in recs if (p := Path(r["dir"]) / "data.json").is_file()]
    fps = [d["train"] for d in found if "train" in d]
    for fp in fps:
        drawn = fp.get("resampled") or {}
        if drawn.get("same_rows", drawn.get("from_rows", float("inf")) <= fp["rows"]):  # data.json before same_rows
            limit, source = drawn.get("limit", fp["rows"]), drawn["from_rows"]
            usable = f" ({fp['rows']} after --drop-overlap)" if source > limit else ""
            return f"a training source of {source} rows{usable}, not more than --train-limit {limit}"
    if len(fps) > 1 and len({fp["sha256"] for fp in fps}) == 1:
        return "every seed's training rows hash alike"
    return None


def left_out_notes(records: list[dict]) -> list[str]:
    """A line per method the run left out of a task because it cannot apply there (run.json ``left_out``)."""
    if not records:
        return []
    manifest = Path(records[0]["dir"]).parent.parent / "run.json"
    skipped = read_json(manifest).get("left_out", []) if manifest.is_file() else []
    return [f"Left out of {s['task']}: {s['method']} ({s['why']})." for s in skipped]


def overlap_note(task: str, overlap: dict) -> str:
    """The train-test overlap of a task's data (data.json), as a warning when any test row overlaps."""
    dropped = overlap.get("dropped_from_train", 0)
    tail = f"; --drop-overlap kept {dropped} overlapping rows out of training" if dropped else ""
    text = describe(task, overlap)
    if text:
        return f"**Warning: train-test overlap.** {text}{tail}."
    return (f"Train-test overlap for {task}: none of {overlap['test_rows']} test rows duplicates a training row or "
            f"shares {overlap['near_share']:.0%} of its word {overlap['ngram']}-grams with one{tail}.")


def training_notes(records: list[dict]) -> list[str]:
    """A line per cell whose model kept a change of the harness's training path out (trl's own path ran there
    instead), or changed a setting it was given (train.json)."""
    out = []
    for r in records:
        train = r.get("train") or {}
        left = (train.get("trl_changes") or {}).get("left_out") or {}
        parts = [f"{name.replace('_', '-')} left to trl ({why})" for name, why in left.items()]
        if train.get("lora_dropout"):
            parts.append(f"LoRA dropout {train['lora_dropout']}")
        if parts:
            out.append(f"Training path of {r['task']} x {label(r, records)}: " + "; ".join(parts) + ".")
    return out
