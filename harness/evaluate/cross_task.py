"""Cross-task evaluation (``--cross-eval``): each trained model is also scored on every other task of the run.

A model fine-tuned on cnn may lose what it could do on guanaco ("catastrophic forgetting"). With
``--cross-eval``, after a trained cell has scored its own task it evaluates the same in-memory model on each
other task of the run: that task's data loaded with the cell's config, its own prompts, and its own generation
settings (``--max-new-tokens`` or the task's default), so the numbers are those a cell of that task would give.
Each other task's predictions go to ``predictions.<task>.jsonl`` in the cell folder (checksummed by
status.json with the rest) and its metrics, with bootstrap CIs, to ``metrics.json["cross"][task]``.

Base is not evaluated again: the base cell of each task is the reference (harness/report/cross_task.py pairs the
trained model's predictions with it by example id, after checking that the eval rows have the same hash).
"""

from __future__ import annotations

import dataclasses
import time

from harness.core.console import console
from harness.records.store import predictions_file
from harness.spec.metrics import summarise
from harness.spec.task import GenerationStats, get_task


def other_tasks(cfg, own: str) -> list[str]:
    return [t for t in cfg.tasks if t != own]


def check_cross_eval(cfg) -> None:
    """Warnings before any cell runs: with one task, or without a base method, the table cannot be made."""
    if not cfg.cross_eval:
        return
    if len(cfg.tasks) < 2:
        console.print(f"[yellow]warning: --cross-eval needs at least two tasks; with only {cfg.tasks[0]} there "
                      "is no other task to evaluate on, so the run goes on without it[/]")
    elif not any(m.finetune == "none" for m in cfg.specs):
        console.print("[yellow]warning: --cross-eval measures change against base, and --methods has no base; "
                      "add base to --methods for the cross-task table[/]")


def cross_evaluate(cfg, own_task, spec, model, ctx, store) -> dict | None:
    """Evaluate ``model`` on every other task of the run; the "cross" section of metrics.json, or None.

    ``ctx`` is the cell's own Context (its tokenizer and generation backend). Only trained cells cross-evaluate:
    the base cells of the other tasks already hold base's scores there.
    """
    names = other_tasks(cfg, own_task.name)
    if not cfg.cross_eval or not spec.trains or not names:
        return None
    cross = {}
    for name in names:
        task = get_task(name)
        console.print(f"cross-eval: {own_task.name} x {spec.name} on {name}")
        data = task.load(cfg, roles=("test",))
        other = dataclasses.replace(ctx, max_new_tokens=cfg.max_new_tokens or task.max_new_tokens)
        stats = GenerationStats()
        t0 = time.perf_counter()
        predictions = task.evaluate(model, data["test"], other, stats)
        eval_s = time.perf_counter() - t0
        values = task.score(predictions)
        for i, p in enumerate(predictions):
            p["scores"] = {metric: vals[i] for metric, vals in values.items()}
        store.write_jsonl(predictions_file(name), predictions)
        cross[name] = {"main_metric": task.main_metric, "quality": summarise(values, cfg.bootstrap, cfg.seed),
                       "eval_data": data["fingerprint"]["test"], "predictions": predictions_file(name),
                       "eval_s": eval_s, **stats.to_dict()}
    return cross
