"""``--executor ray``: each cell is a Ray task, on a local Ray instance or the cluster at ``--ray-address``.

Imported only when asked for; Ray is the optional extra ``pip install -e ".[ray]"``. A task runs the same
``python -m harness.cell CELL_DIR`` child as the process executor, with the same memory watch and the same
death records, so resume, failure isolation, the final table and the exit status behave exactly as there.
What Ray adds is placement: each task asks for the CPUs, GPUs and memory its cell needs, and Ray puts it on
a node that has them. Records go to the run folder, so on a cluster ``--out`` must be a path every node mounts.
A worker or node that dies under a cell marks only that cell, as ``worker_lost``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from pathlib import Path

from harness.core.console import console
from harness.core.errors import ConfigError
from harness.core.units import GIB, parse_bytes
from harness.execute.child import Child, record_death
from harness.plan.estimate import estimate_for_cell
from harness.records.store import RAY_WORKER_ENV, CellStore
from harness.spec.models import resolve_model
from harness.spec.precision import resolve_device

ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the harness package, for the workers' path
# Runtime floor of a cell process (Python, torch, transformers, tokenizer), measured here as the peak RSS of
# the tiny-model base cell: about 0.5 GiB (tests/integration/test_executors.py).
RUNTIME_BYTES = GIB // 2
# Without an estimate (harness/plan/estimate.py), memory per cell = weights in the compute dtype x this factor +
# the runtime floor. Training keeps weights, their gradients and two AdamW moments (4x for full fine-tuning,
# Adam: Kingma & Ba 2015); adapters keep the frozen weights plus activations and logits (about 2x).
FALLBACK_FACTOR = {"none": 1.5, "lora": 2.0, "full": 4.0}


def install_hint() -> str:
    return 'the ray executor needs Ray, which is not installed; pip install -e ".[ray]"'


def cell_memory_request(cell, cfg, device: str) -> int:
    """Bytes of memory a cell asks Ray for: the harness's own estimate when there is one, else the rule above."""
    location = resolve_model(cfg.model).location
    est = estimate_for_cell(location, cell.spec.method, cfg, device)
    if est is not None:
        return int(est.total_bytes) + (RUNTIME_BYTES if device == "cpu" else 0)
    weights = sum(p.stat().st_size for p in Path(location).glob("*.safetensors")) if Path(location).is_dir() else 0
    return int(weights * FALLBACK_FACTOR[cell.spec.method.finetune]) + RUNTIME_BYTES


def _run_cell_task(cell_dir: str, label: str, env: dict, limit: int | None, limit_text: str | None) -> dict:
    """The Ray task: run the cell as a child process on whichever node Ray chose; report where."""
    store = CellStore(Path(cell_dir).parent.parent, Path(cell_dir).parent.name, Path(cell_dir).name)
    probe = Path(cell_dir) / ".write-probe"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        return {"unwritable": f"worker on {socket.gethostname()} cannot write {cell_dir} ({e.strerror or e}); "
                              "on a cluster, --out must be a folder that every node mounts at the same path"}
    import ray

    context = ray.get_runtime_context()  # this worker's, recorded by the cell (harness/records/store.py)
    worker = {"worker_id": context.get_worker_id(), "worker_pid": os.getpid(), "node_id": context.get_node_id()}
    child = Child(store, {**os.environ, **env, RAY_WORKER_ENV: json.dumps(worker)}, limit, limit_text, f"[{label}] ")
    return {"code": child.wait(), "node": socket.gethostname()}


class RayExecutor:
    def __init__(self, cfg):
        if importlib.util.find_spec("ray") is None:
            raise ConfigError(install_hint())
        self.cfg = cfg
        self.limit = parse_bytes(cfg.cell_memory_limit) if cfg.cell_memory_limit else None

    def connect(self):
        import ray

        if not ray.is_initialized():
            path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
            kwargs = {"runtime_env": {"env_vars": {"PYTHONPATH": path}}, "log_to_driver": True,
                      "include_dashboard": False}
            if self.cfg.ray_address:
                kwargs["address"] = self.cfg.ray_address
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(f"cannot connect to Ray at {self.cfg.ray_address or 'a new local instance'}: "
                                  f"{str(e).splitlines()[0]}; check --ray-address") from None
        return ray

    def run(self, cells: list, data: dict | None = None) -> None:
        ray = self.connect()
        device = resolve_device(self.cfg.device)
        task = ray.remote(_run_cell_task)
        largest = max((n["Resources"].get("memory", 0) for n in ray.nodes() if n.get("Alive")), default=0)
        futures = {}
        for cell in cells:
            gpus = self.cfg.num_processes if device == "cuda" else 0
            memory = cell_memory_request(cell, self.cfg, device)
            if largest and memory > largest:
                cell.store.finish("failed", error_kind="infeasible", message=(
                    f"the cell needs about {memory / GIB:.1f} GiB of memory and the largest Ray node offers "
                    f"{largest / GIB:.1f} GiB; add a larger node or choose a lighter method"))
                continue
            env = {"HARNESS_CELL": cell.label, "PYTHONUNBUFFERED": "1"}
            options = {"num_cpus": 1, "num_gpus": gpus, "memory": memory, "max_retries": 0}
            console.print(f"[dim]cell {cell.index}/{cell.of} {cell.label}: submitted to Ray "
                          f"(cpus=1 gpus={gpus} memory={memory / GIB:.1f} GiB)[/]")
            futures[task.options(**options).remote(str(cell.store.dir), cell.label, env, self.limit,
                                                   self.cfg.cell_memory_limit)] = cell
        pending = list(futures)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            cell = futures[done[0]]
            try:
                result = ray.get(done[0])
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                    ray.exceptions.ActorDiedError, ray.exceptions.ObjectLostError,
                    ray.exceptions.OutOfMemoryError) as e:
                cell.store.dir.mkdir(parents=True, exist_ok=True)
                cell.store.finish("failed", error_kind="worker_lost",
                                  message=f"the Ray worker running this cell was lost: {type(e).__name__}")
                continue
            if "unwritable" in result:
                raise ConfigError(result["unwritable"])
            if not (cell.store.dir / "status.json").is_file():
                record_death(cell.store, result["code"], [])
            console.print(f"[dim]cell {cell.label} finished on {result['node']}[/]")
