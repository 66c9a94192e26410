"""Multi-process training for one cell: ``--num-processes N`` (data-parallel), ``--fsdp``, ``--deepspeed``.

The cell's own process stays the main process: it launches the training job below on N processes, waits,
loads the trained weights back, and evaluates and records once. The job is the harness's ordinary training
path (harness/cell/training.py, trl's SFTTrainer), which accelerate turns data-parallel from the launcher's
environment: each process sees its own shard of the data (a DistributedSampler), gradients are averaged.

* On GPUs the launcher is ``accelerate launch`` (--multi_gpu, --use_fsdp, or --use_deepspeed).
* On CPU, ``accelerate launch`` starts N processes only through MPI, so the job runs under
  ``torch.distributed.run`` (the launcher accelerate itself uses for several GPUs) with ACCELERATE_USE_CPU,
  and accelerate picks the gloo backend.

Each process writes what it trained on (a hash per row) and its peak memory; memory and throughput in the
record say how many processes they cover, with the per-process figures beside the total.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from harness.cell.load import load_model, load_tokenizer
from harness.cell.measure import PeakMemory, seed_everything
from harness.cell.training import train
from harness.core.console import console, quiet_libraries
from harness.core.errors import HarnessError
from harness.core.files import atomic_write_json, read_json
from harness.spec.cell import CellSpec
from harness.spec.models import resolve_model
from harness.spec.precision import mixed_precision, resolve_device
from harness.spec.task import Context, get_task, load_tasks

OUT = ".trained"  # inside the cell folder; hidden, so outside status.json's checksums


class DistributedError(HarnessError, kind="distributed"):
    """The multi-process training job failed; its last line says why."""


def launch_command(cfg, cell_dir: Path, device: str) -> tuple[list[str], dict]:
    n = str(cfg.num_processes)
    job = ["-m", "harness.cell.distributed", str(cell_dir)]
    if device == "cpu":
        return ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", n, *job],
                {"ACCELERATE_USE_CPU": "true"})
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", n, "--num_machines", "1",
           "--mixed_precision", mixed_precision(device), "--dynamo_backend", "no"]
    if cfg.fsdp:
        # FULL_SHARD with one wrap per decoder layer, and a full state dict on save so the cell can reload it.
        cmd += ["--use_fsdp", "--fsdp_sharding_strategy", "FULL_SHARD", "--fsdp_auto_wrap_policy",
                "TRANSFORMER_BASED_WRAP", "--fsdp_state_dict_type", "FULL_STATE_DICT",
                "--fsdp_cpu_ram_efficient_loading", "true", "--fsdp_sync_module_states", "true"]
    elif cfg.deepspeed:
        cmd += ["--use_deepspeed", "--deepspeed_config_file", str(Path(cfg.deepspeed).resolve())]
    else:
        cmd += ["--multi_gpu"]
    return [*cmd, *job], {}


def multi_process_issue(spec, cfg) -> str | None:
    """Why ``spec`` cannot train on ``cfg``'s several processes, with the fix, or None. The run refuses it before any
    cell (harness/execute/preflight.py), and a cell started on its own refuses it here.

    * PiSSA and OLoRA: the adapter is converted on save against the adapter as it started
      (harness/cell/adapters.py), which lives in the cell's own process; the job's processes save theirs
      unconverted, and the weight checks would load it onto the original base.
    * LoRA+: its optimizer is built on the model before accelerate wraps it. FSDP and DeepSpeed replace the
      parameters it holds (transformers' Trainer refuses a given optimizer under both), and on plain data-parallel
      processes the path has not been tested."""
    if cfg.num_processes < 2 or spec.finetune != "lora":
        return None
    flag = f"--num-processes {cfg.num_processes}" + (" --fsdp" if cfg.fsdp else " --deepspeed" if cfg.deepspeed
                                                     else "")
    if spec.mutates_base:
        return (f"{spec.name} with {flag}: PiSSA/OLoRA adapters are converted on save against the adapter as it "
                "started, which the training processes do not keep; run it with --num-processes 1")
    if spec.loraplus_ratio is not None:
        why = ("FSDP and DeepSpeed replace the parameters that LoRA+'s optimizer is built on" if cfg.fsdp or
               cfg.deepspeed else "LoRA+'s optimizer is built before the model is wrapped, untested on several "
               "processes")
        return f"{spec.name} with {flag}: {why}; run it with --num-processes 1"
    return None


def train_distributed(cfg, spec, cell_dir: Path, model_location: str, device: str, merge: bool = True):
    """Run the training job on cfg.num_processes processes; return (trained model on this process, record).

    ``merge=False`` returns a LoRA model with its adapter unmerged, as training.train does."""
    why = multi_process_issue(spec, cfg)
    if why:
        raise DistributedError(why)
    out = Path(cell_dir) / OUT
    cmd, extra_env = launch_command(cfg, Path(cell_dir), device)
    console.print(f"[dim]training on {cfg.num_processes} processes: {' '.join(cmd[1:4])} ...[/]")
    done = subprocess.run(cmd, env={**os.environ, **extra_env}, stdout=sys.stderr, stderr=subprocess.PIPE,
                          text=True)
    sys.stderr.write(done.stderr)
    if done.returncode != 0 or not (out / "train_record.json").is_file():
        last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no output"]
        raise DistributedError(f"multi-process training exited with code {done.returncode}: {last[0][:300]}")
    record = read_json(out / "train_record.json")
    ranks = [read_json(out / f"rank{r}.json") for r in range(cfg.num_processes)]
    peaks = [r["peak_bytes"] for r in ranks]
    record["distributed"] = {
        "processes": cfg.num_processes, "launcher": Path(cmd[2]).name if device == "cpu" else "accelerate launch",
        "backend": ranks[0]["backend"], "strategy": "fsdp" if cfg.fsdp else "deepspeed" if cfg.deepspeed else "ddp",
        "rows_per_process": [len(r["rows"]) for r in ranks], "row_hashes": [r["rows"] for r in ranks],
        "peak_bytes_per_process": peaks, "peak_bytes_total": sum(peaks),
        "train_tokens_per_s_per_process": record["train_tokens_per_s"] / cfg.num_processes,
    }
    return load_trained(spec, out, model_location, device, merge), record


def load_trained(spec, out: Path, model_location: str, device: str, merge: bool = True):
    """The trained weights the job saved, ready for generation on the main process."""
    if spec.finetune == "lora":
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_model(model_location, spec, device), str(out))
        return model if spec.quantized or not merge else model.merge_and_unload()
    return load_model(str(out), spec, device)


def _row_hash(ids, pad_id) -> str:
    return hashlib.sha256(",".join(str(int(t)) for t in ids if int(t) != pad_id).encode()).hexdigest()[:16]


def _recorder(rows: set, pad_id: int):
    """A callback that hashes every training row this process sees, from the model's own inputs.

    Rows arrive padded ([batch, length]) or packed end to end in one row (padding-free batches,
    harness/cell/padding_free.py), where each row's position_ids start again at 0: both are split back into rows
    before hashing.
    """
    from transformers import TrainerCallback

    def rows_of(input_ids, position_ids):
        if position_ids is None or input_ids.shape[0] != 1:
            return list(input_ids)
        starts = (position_ids[0] == 0).nonzero().flatten().tolist() + [input_ids.shape[1]]
        return [input_ids[0, a:b] for a, b in zip(starts, starts[1:]) if b > a]

    class SeenRows(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            def hook(module, args_, kwargs):
                ids = kwargs.get("input_ids", args_[0] if args_ else None)
                if module.training and ids is not None:
                    pos = kwargs.get("position_ids")
                    rows.update(_row_hash(r.detach().cpu(), pad_id)
                                for r in rows_of(ids, None if pos is None else pos.detach().cpu()))

            model.register_forward_pre_hook(hook, with_kwargs=True)

    return SeenRows()


def main(argv: list[str]) -> int:
    """One process of the training job: ``python -m harness.cell.distributed CELL_DIR`` under a launcher."""
    import torch

    cell_dir = Path(argv[0])
    load_tasks()
    cell = CellSpec.read(cell_dir)
    cfg, task, spec = cell.run, get_task(cell.task), cell.method
    rank, local = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(cfg.device)
    if device == "cuda":
        torch.cuda.set_device(local)
    quiet_libraries()
    seed_everything(cfg.seed)
    location = resolve_model(cfg.model).location
    tok = load_tokenizer(location)
    ctx = Context(tok=tok, max_seq_len=cfg.max_seq_len, max_new_tokens=cell.hyperparameters["max_new_tokens"],
                  template=cfg.template, batch_size=cfg.eval_batch_size, cfg=cfg)
    pairs = [task.train_pair(r, ctx) for r in task.load(cfg)["train"]]
    out = cell_dir / OUT
    rows: set = set()
    with PeakMemory(device) as mem:
        model = load_model(location, spec, device)
        _, record = train(model, tok, spec, pairs, cfg, device, merge=False, save_to=str(out),
                          callbacks=(_recorder(rows, tok.pad_token_id),), cell_dir=cell_dir, location=location)
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else None
    atomic_write_json(out / f"rank{rank}.json", {"rows": sorted(rows), "peak_bytes": mem.peak_bytes,
                                                  "backend": backend})
    if rank == 0:
        atomic_write_json(out / "train_record.json", record)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
