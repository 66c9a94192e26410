"""One cell as a self-contained job: its ``config.json`` in, its record folder out.

    python -m harness.cell results/RUN/cnn/lora

The runner writes ``config.json`` (a harness.spec.cell.CellSpec) into the cell folder and hands the folder to an
executor; this module is what runs there, in whatever process, node or container the executor chose. It resolves
the model and loads the task's data itself, so a cell needs nothing from the process that planned it. The recipe,
``execute``, reads top to bottom: load, train (when the method trains), keep and check the weights, generate,
score, record. A failure inside the cell is recorded in ``status.json`` (kind and message) and the process still
exits 0; a non-zero exit or a signal means the cell could not record its own end, and the executor records it
instead (harness/execute/child.py).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

from harness.cell import adapters, measure, training, weights
from harness.cell.distributed import train_distributed
from harness.cell.generate import HFBackend
from harness.cell.load import load_model, load_tokenizer
from harness.cell.vllm import VLLMBackend, check_available
from harness.core.console import console, quiet_libraries
from harness.core.errors import classify, one_line
from harness.evaluate.cross_task import cross_evaluate
from harness.evaluate.lm_eval import run_lm_eval
from harness.integrations.trackers import close_open_runs
from harness.records.store import CellStore, environment, process_facts
from harness.spec.cell import CellSpec
from harness.spec.methods import ADAPTER
from harness.spec.metrics import summarise
from harness.spec.models import resolve_model
from harness.spec.precision import precision_record, resolve_device
from harness.spec.prompting import Prompting
from harness.spec.prompts import n_tokens
from harness.spec.retrieval import knowledge_base
from harness.spec.task import ROLES, Context, GenerationStats, get_task, load_tasks

BACKENDS = {"hf": HFBackend, "vllm": VLLMBackend}  # --generate-backend


def run_cell(cell_dir: Path, data: dict | None = None) -> dict:
    """Run the cell in ``cell_dir``; never raises for a failure inside the cell (it is recorded instead).

    ``data`` lets the inline executor pass the rows the runner already loaded.
    """
    cell_dir = Path(cell_dir)
    spec = CellSpec.read(cell_dir)
    cfg, task, method = spec.run, get_task(spec.task), spec.method
    store = CellStore(cell_dir.parent.parent, cell_dir.parent.name, cell_dir.name)
    close_open_runs(cfg)
    label = spec.label
    os.environ.setdefault("HARNESS_CELL", label)  # progress lines name the cell (harness/core/console.py)
    t0 = time.perf_counter()
    error = None
    device = "cpu"
    try:
        device = resolve_device(cfg.device)
        env = environment(device)
        env["executor"] = cfg.executor
        env.update(process_facts())  # the executor's own mark: which process ran the cell, and what started it
        store.write_json("env.json", env)
        roles = split_roles(spec)
        data = rows_for(task, cfg, roles, data)
        store.write_json("data.json", data["fingerprint"])
        skip = skip_reason(method, device)
        if skip:
            console.print(f"[yellow]skipped: {skip[1]}[/]")
            return store.finish("skipped", error_kind=skip[0], message=skip[1])
        execute(spec, task, store, data, resolve_model(cfg.model).location, device)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001  (isolation: any failure is recorded, the matrix goes on)
        error = (classify(e), one_line(e), getattr(e, "step", None))
    if error is None:
        status = store.read_json("status.json")
        if status["status"] == "pruned":
            console.print(f"[yellow]pruned[/] {label}: {status['message']}", soft_wrap=True)
        else:
            console.print(f"[green]done[/] {label} in {time.perf_counter() - t0:.0f} s")
        return status
    measure.free_memory(device)  # after the except block, so the traceback no longer pins the model
    kind, message, step = error
    console.print(f"[red]failed[/] {label}: {kind}: {message}")
    fields = {"error_kind": kind, "message": message}
    if step is not None:
        fields["step"] = step
    return store.finish("failed", **fields)


def split_roles(spec: CellSpec) -> tuple:
    """The splits a cell reads: a tuning cell no test rows (unless --drop-overlap filters training by them)."""
    if spec.is_tuning and not spec.run.drop_overlap:
        return ("train", "validation")
    return ROLES


def rows_for(task, cfg, roles: tuple, data: dict | None) -> dict:
    """The cell's rows: those the runner loaded where it passed them (the inline executor), unless
    --resample-train drew them for another seed than the cell's, in which case the cell draws its own."""
    drawn_for = (data or {}).get("fingerprint", {}).get("train", {}).get("resampled", {}).get("seed")
    if data is None or (cfg.resample_train and drawn_for != cfg.seed):
        return task.load(cfg, roles)
    return only(data, roles)


def only(data: dict, roles: tuple) -> dict:
    """The rows and fingerprints of ``roles`` in data the runner loaded (the inline executor passes it)."""
    keep = set(roles) | ({"overlap"} if "test" in roles else set()) | (
        {"validation_overlap"} if "validation" in roles else set())
    return {**{k: v for k, v in data.items() if k in roles},
            "fingerprint": {k: v for k, v in data["fingerprint"].items() if k in keep}}


def skip_reason(method, device: str) -> tuple[str, str] | None:
    """(error kind, message) when this machine cannot run the method at all, else None."""
    if method.requires_cuda and device != "cuda":
        return "needs_cuda", f"method {method.name} needs a CUDA device and this run is on {device}"
    if method.quantized and importlib.util.find_spec("bitsandbytes") is None:
        return "needs_bitsandbytes", (f"method {method.name} needs bitsandbytes, which is not installed "
                                      "(pip install bitsandbytes)")
    return None


def execute(spec: CellSpec, task, store: CellStore, data: dict, model_location: str, device: str) -> None:
    """Train (if the method trains), generate, score; write train.json, predictions, metrics and status."""
    cfg, method, hp = spec.run, spec.method, spec.hyperparameters
    measure.seed_everything(cfg.seed)
    if cfg.generate_backend == "vllm":
        check_available(device)
    tok = load_tokenizer(model_location)
    # A few-shot cell's prompts all start with the same shots: their KV cache is computed once (cell/generate.py)
    backend = BACKENDS[cfg.generate_backend](prefix_cache=cfg.prefix_cache and method.shots is not None)
    ctx = Context(tok=tok, max_seq_len=cfg.max_seq_len, max_new_tokens=hp["max_new_tokens"],
                  template=cfg.template, batch_size=cfg.eval_batch_size, cfg=cfg, backend=backend)
    corpus = knowledge_base(task, cfg) if method.retrieve is not None else None
    if method.prompting:  # the method's shots and passages, which every prompt of the cell asks for
        ctx.prompting = Prompting(task, method, ctx, data["train"], cfg.seed, corpus, cfg.retriever)
    if corpus is not None:
        store.write_json("data.json", {**data["fingerprint"], "knowledge_base": corpus.fingerprint()})
    pairs = [task.train_pair(r, ctx) for r in data["train"]] if method.trains else []
    rows = data["validation"] if spec.is_tuning else data["test"]  # what the cell is scored on
    # A search's trial is pruned on its validation loss (harness/execute/search.py); early stopping reads it too.
    prune = spec.tuning.get("prune") if spec.is_tuning and spec.tuning else None
    val_pairs = ([task.train_pair(r, ctx, training=False) for r in data["validation"]]
                 if (cfg.early_stop or prune) and method.trains else None)
    probe = weights.probe_inputs(task, rows, ctx) if method.trains else []  # the weight checks' prompts
    stats = GenerationStats()
    try:
        # PiSSA's or OLoRA's adapter as it started, for the conversion on save: removed on every path out
        with measure.PeakMemory(device) as mem, adapters.initial_folder(method) as initial:
            t_load = time.perf_counter()
            if method.trains and cfg.num_processes > 1:
                # The job's processes load their own copies; this one loads only the trained weights, after.
                base_logits = weights.base_logits(model_location, method, device, probe)
                model, train_record = train_distributed(cfg, method, store.dir, model_location, device,
                                                        merge=False)
                load_s = time.perf_counter() - t_load - train_record["train_s"]
                footprint = model.get_memory_footprint()
            else:
                model = load_model(model_location, method, device)
                load_s = time.perf_counter() - t_load
                footprint = model.get_memory_footprint()
                if method.trains:
                    base_logits = weights.logits(model, probe)
                    model, train_record = training.train(model, tok, method, pairs, cfg, device, merge=False,
                                                         cell_dir=store.dir, eval_pairs=val_pairs, prune=prune,
                                                         location=model_location, initial_dir=initial)
                else:
                    _, total = training.count_parameters(model)
                    train_record = {"trained": False, "trainable_params": 0, "total_params": total}
            pruned = (train_record.get("validation") or {}).get("pruned")
            if pruned:  # a trial worse than the earlier ones: its loss curve is its record, and nothing more runs
                store.write_json("train.json", train_record)
                median = "-" if pruned["median"] is None else f"{pruned['median']:.6g}"
                store.finish("pruned", message=f"pruned at step {pruned['step']}: validation loss "
                                               f"{pruned['loss']:.6g} above the median {median} of the "
                                               f"{pruned['of']} earlier trials at that step")
                return
            if method.trains:  # --save, then the checks that the trained weights are applied (harness/cell/weights.py)
                # A search's trial may legitimately change nothing (a rate far too low): its checks are recorded, not
                # fatal; the chosen settings' test cell runs them all as usual.
                model, weight_record = weights.finalize(
                    model, method, tok, cfg, store, probe, base_logits, strict=not spec.is_tuning,
                    initial=initial, location=model_location)
                train_record.update(weight_record)
            store.write_json("train.json", train_record)
            t_eval = time.perf_counter()
            if spec.is_tuning:
                predictions = validate(task, model, rows, ctx, stats, hp["tune_by"])
            else:
                predictions = task.evaluate(model, rows, ctx, stats)
            eval_s = time.perf_counter() - t_eval
        after = evaluate_after(cfg, task, method, model, ctx, store)  # --cross-eval, --lm-eval: outside the peak
    finally:
        backend.close()
    del model
    if ctx.prompting is not None:  # what each prompt held: shots kept, passages' documents (qa scores recall by them)
        for p in predictions:
            p.update(ctx.prompting.info(p.get("prompt", "")))
    values = task.score(predictions) if predictions and "output" in predictions[0] else {}
    if spec.is_tuning:
        values["loss"] = [p["loss"] for p in predictions]
    for i, p in enumerate(predictions):
        p["scores"] = {name: vals[i] for name, vals in values.items()}
    store.write_jsonl("predictions.jsonl", predictions)
    quality = summarise(values, cfg.bootstrap, cfg.seed)
    total = train_record["total_params"]
    measurements = {
        "memory": {**mem.result, "peak_bytes": mem.peak_bytes, "model_footprint_bytes": footprint},
        "timing": {"load_s": load_s, "train_s": train_record.get("train_s", 0.0), "eval_s": eval_s,
                   "train_tokens_per_s": train_record.get("train_tokens_per_s"), **stats.to_dict()},
        "params": {"trainable": train_record["trainable_params"], "total": total,
                   "trainable_pct": 100.0 * train_record["trainable_params"] / total if total else 0.0,
                   "adapter_bytes": folder_bytes(store.path(ADAPTER))},
        "precision": precision_record(method, device),
        "prompts": prompt_record(predictions, tok, eval_s, ctx.prompting, backend),
    }
    store.write_json("metrics.json", {"task": task.name, "method": method.name, "seed": cfg.seed,
                                      "split": "validation" if spec.is_tuning else "test",
                                      "quality": quality, "main_metric": task.main_metric,
                                      "extra": task.extra_report(predictions), "measurements": measurements,
                                      **after})
    store.finish("ok")


def folder_bytes(folder: Path) -> int | None:
    """The bytes a kept adapter takes on disk (its weights and config), or None when the cell kept none."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else None


def prompt_record(predictions: list[dict], tok, eval_s: float, prompting, backend) -> dict:
    """What a query costs at evaluation, the price a prompting method pays at every query: its prompt tokens and
    eval seconds per example; and what the prompts held (shots kept and dropped, the knowledge base)."""
    lengths = [n_tokens(tok, p["prompt"]) for p in predictions if p.get("prompt")]
    out = {"examples": len(predictions), "prompt_tokens_mean": sum(lengths) / len(lengths) if lengths else None,
           "prompt_tokens_max": max(lengths) if lengths else None,
           "eval_s_per_example": eval_s / len(predictions) if predictions else None}
    if prompting is not None:
        out.update(prompting.record(predictions))
    reuse = getattr(backend, "prefix_record", None)
    if reuse:
        out["prefix_cache"] = reuse
    return out


def validate(task, model, rows: list[dict], ctx: Context, stats: GenerationStats, by: str) -> list[dict]:
    """A tuning cell's figures on the validation rows: each row's loss (its completion's mean token negative
    log-likelihood, as training computes it), and, unless the choice is by loss, the task's own evaluation."""
    pairs = [task.train_pair(r, ctx, training=False) for r in rows]
    nll = ctx.completion_nll(model, [p["prompt"] for p in pairs], [p["completion"] for p in pairs],
                             ctx.batch_size, label="validation loss")
    out = task.evaluate(model, rows, ctx, stats) if by != "loss" else [
        {"id": r.get("id", i)} for i, r in enumerate(rows)]
    for p, (total, n) in zip(out, nll, strict=True):
        p["loss"] = total / n
    return out


def evaluate_after(cfg, task, method, model, ctx: Context, store: CellStore) -> dict:
    """The final model on the run's other tasks (--cross-eval) and on lm-eval tasks (--lm-eval), in memory.

    Both come after the cell's own evaluation, so its timing and peak memory are those of the task alone.
    """
    out = {}
    cross = cross_evaluate(cfg, task, method, model, ctx, store)
    if cross is not None:
        out["cross"] = cross
    if cfg.lm_eval:
        out["lm_eval"] = run_lm_eval(model, ctx.tok, cfg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1 or not (Path(argv[0]) / "config.json").is_file():
        print("usage: python -m harness.cell CELL_DIR  (a cell folder holding config.json)", file=sys.stderr)
        return 2
    load_tasks()
    quiet_libraries()
    run_cell(Path(argv[0]))
    return 0
