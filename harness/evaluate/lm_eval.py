"""Standard benchmarks on each cell's final model, through lm-evaluation-harness (``--lm-eval TASKS``).

The trained model is handed to lm-eval as it is in memory, wrapped in lm-eval's Hugging Face model class
(``HFLM(pretrained=model, tokenizer=tok)``), so what is scored is exactly the model the cell evaluated on its
own task: no save, no reload, and no chance to score the base weights by mistake (lm-eval #2432). Base cells
run it too; they are the reference. Each result is kept with lm-eval's standard error:
``metrics.json["lm_eval"] = {"results": {task: {metric: {value, stderr, higher_is_better}}}, ...}``.

lm-eval is an optional extra, imported only when ``--lm-eval`` is given. ``check_lm_eval`` runs before the first
cell (harness/execute/runner.py): a missing package, a missing ``--lm-eval-include`` folder or an unknown task name is
one line there, not one failure per cell. The API is lm-eval 0.4.x's (``lm_eval.simple_evaluate`` with a
``TaskManager``; 0.4.0 moved the task registry into ``TaskManager``).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from functools import lru_cache
from pathlib import Path

from harness.core.errors import ConfigError

INSTALL = 'pip install -e ".[lm_eval]"'


def check_lm_eval(cfg) -> None:
    """One line before any cell runs when --lm-eval cannot work: package missing, folder missing, unknown task."""
    if not cfg.lm_eval:
        return
    if importlib.util.find_spec("lm_eval") is None:
        raise ConfigError(f"--lm-eval needs lm-evaluation-harness, which is not installed; {INSTALL}")
    if cfg.lm_eval_include and not Path(cfg.lm_eval_include).is_dir():
        raise ConfigError(f"--lm-eval-include {cfg.lm_eval_include} is not a folder; pass the folder that holds "
                          "your lm-eval task YAML files")
    known = set(task_manager(cfg.lm_eval, cfg.lm_eval_include).all_tasks)
    unknown = [t for t in cfg.lm_eval if t not in known]
    if unknown:
        where = f" or in {cfg.lm_eval_include}" if cfg.lm_eval_include else ""
        raise ConfigError(f"--lm-eval task {unknown[0]!r} is not an lm-eval task{where}; list them with "
                          "`lm-eval ls tasks`, or put a task YAML in a folder and pass --lm-eval-include FOLDER")


@lru_cache(maxsize=2)
def _manager(include: str | None, defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include, include_defaults=defaults)


def task_manager(tasks: tuple, include: str | None):
    """lm-eval's TaskManager; when every task is in ``include``, without lm-eval's own catalogue.

    Indexing lm-eval's ~14,700 built-in task entries takes 5-20 s (measured here, lm-eval 0.4.13 on 2 loaded
    CPU cores), once per cell process; a run that only names its own YAML tasks does not need it.
    """
    if include:
        local = _manager(str(include), False)
        if all(t in local.all_tasks for t in tasks):
            return local
    return _manager(str(include) if include else None, True)


def run_lm_eval(model, tok, cfg) -> dict:
    """Run cfg.lm_eval on the in-memory ``model``; the "lm_eval" section of metrics.json."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    # lm-eval warns that a pre-built model ignores its loading arguments, which is the point here.
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    # No max_length: lm-eval takes the model's own context length, as in published scores (not --max-seq-len).
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=cfg.eval_batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(cfg.lm_eval), limit=cfg.lm_eval_limit,
                                  task_manager=task_manager(tuple(cfg.lm_eval), cfg.lm_eval_include),
                                  bootstrap_iters=cfg.bootstrap, log_samples=False)
    if was_training:
        model.train()
    # "tasks" keeps the order asked for: metrics.json sorts its keys, and reports show the columns in this order.
    return {"tasks": list(cfg.lm_eval), "results": parse_results(out), "n_samples": out.get("n-samples", {}),
            "limit": cfg.lm_eval_limit,
            "lm_eval_version": out.get("lm_eval_version") or _version(), "seconds": time.perf_counter() - t0}


def parse_results(out: dict) -> dict:
    """lm-eval's ``{"results": {task: {"acc,none": v, "acc_stderr,none": s, ...}}}`` as
    ``{task: {metric: {value, stderr, higher_is_better}}}``; a filter other than "none" stays in the name.

    lm-eval writes "N/A" for a stderr it could not compute; that is None here.
    """
    results, directions = out.get("results", {}), out.get("higher_is_better", {})
    parsed: dict = {}
    for task, entries in results.items():
        metrics = {}
        for key, value in entries.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            stderr = entries.get(f"{metric}_stderr,{filt}")
            name = metric if filt == "none" else f"{metric},{filt}"
            metrics[name] = {"value": float(value),
                             "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                             "higher_is_better": directions.get(task, {}).get(metric)}
        if metrics:
            parsed[task] = metrics
    return parsed


def _version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        return None
