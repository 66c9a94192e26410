"""Checks before the first cell spends compute: each failure is one line for the whole run, not one per cell.

The run folder is writable, a rerun does not mix settings into a completed cell, the model resolves (config and
tokenizer, no weights), every optional integration that was asked for is installed and usable, and what the
methods put in their prompts exists: enough training rows for the shots, a readable knowledge base for retrieval,
gold documents for RAFT.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from harness.cell.adapters import check_installed
from harness.cell.distributed import multi_process_issue
from harness.cell.load import check_loadable
from harness.cell.vllm import check_available
from harness.core.console import console
from harness.core.errors import ConfigError
from harness.evaluate.cross_task import check_cross_eval
from harness.evaluate.lm_eval import check_lm_eval
from harness.integrations.trackers import check_trackers
from harness.plan.matrix import left_out
from harness.plan.shape import shape_for
from harness.spec.config import RunConfig
from harness.spec.precision import resolve_device
from harness.spec.retrieval import knowledge_base
from harness.spec.task import get_task


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out {run_dir.parent} is not writable ({e.strerror or e}); choose a writable "
                          "folder") from None


def check_resumable(cells: list) -> None:
    for cell in cells:
        state, _ = cell.store.state()
        if state == "complete":
            stored = cell.store.read_json("config.json").get("config_hash")
            if stored != cell.spec.config_hash:
                raise ConfigError(f"{cell.store.dir} holds results made with different settings; use another "
                                  "--run-name (or leave it out) to keep both")


def check_integrations(cfg: RunConfig, model) -> None:
    """The model resolves, and every asked-for extra is installed."""
    check_loadable(model)
    if cfg.report_to:
        check_trackers(cfg)
    if cfg.lm_eval:
        check_lm_eval(cfg)
    if cfg.generate_backend == "vllm":
        check_available(resolve_device(cfg.device))
    if cfg.cross_eval:
        check_cross_eval(cfg)
    if cfg.liger_kernel:
        check_liger(cfg)
    shape = shape_for(model.location)
    for spec in cfg.specs:  # a method the installed peft cannot make, or not on this model: one line, before any cell
        why = check_installed(spec, cfg) or fused_experts_issue(spec, shape)
        if why:
            raise ConfigError(f"method {spec.name}: {why}")
        why = multi_process_issue(spec, cfg)  # a method the multi-process job cannot train: one line, the fix in it
        if why:
            raise ConfigError(f"method {why}")


def fused_experts_issue(spec, shape) -> str | None:
    """Why peft cannot put ``spec``'s adapter on a mixture of experts' fused 3-D expert weights (peft 0.21.2:
    lora.ParamWrapper refuses DoRA, and the PiSSA and OLoRA starts read a 2-D weight), or None."""
    if shape is None or not shape.experts or spec.finetune != "lora" or spec.lora_target_modules not in (
            "all-linear", "all_linear"):
        return None
    starts = {"pissa": "PiSSA's start", "olora": "OLoRA's start"}
    what = "DoRA" if spec.use_dora else starts.get(str(spec.init_lora_weights).split("_")[0])
    if what is None:
        return None
    return (f"peft cannot apply {what} to this model's fused expert weights (lora.ParamWrapper); use lora, rslora, "
            "lora+ or loftq, or name the projections to adapt in YAML, e.g. {name: "
            f"{spec.name.split(':')[0]}, lora_target_modules: 'q_proj,k_proj,v_proj,o_proj'}}")


def check_liger(cfg: RunConfig) -> None:
    """Liger's kernels are Triton kernels: a CUDA GPU and the liger extra."""
    if resolve_device(cfg.device) != "cuda":
        raise ConfigError("--liger-kernel runs Triton kernels on a CUDA GPU and this run is on a CPU; leave it out")
    if importlib.util.find_spec("liger_kernel") is None:
        raise ConfigError('--liger-kernel needs liger-kernel, which is not installed; pip install -e ".[liger]"')


def check_prompting(cfg: RunConfig, datasets: dict) -> None:
    """Each method's shots fit its task's training split, each knowledge base a method retrieves from reads (a bad
    --corpus is one line here), and RAFT's training rows name their gold documents."""
    skipped = left_out(cfg)
    retrieving = set()
    for name in cfg.tasks:
        task, train = get_task(name), datasets[name].get("train", [])
        for method in cfg.specs:
            if (name, method.name) in skipped:
                continue
            search = cfg.searches.get(method.name)
            dims = search.dims if search else {}
            shots = int(dims["shots"].span[1]) if "shots" in dims else method.shots
            if shots is not None and shots > len(train):
                raise ConfigError(f"{name} x {method.name}: shots={shots} is more than the {len(train)} training rows "
                                  f"of {name}; lower shots, or raise --train-limit")
            if method.retrieve is not None or "retrieve" in dims:
                retrieving.add(name)
            if method.raft is not None and not any(r.get("gold") for r in train):
                raise ConfigError(f"{name} x {method.name}: raft keeps each training row's gold document, and the "
                                  f"{name} training rows name none; give them a gold column (--columns "
                                  f"{name}:gold=YOUR_COLUMN) or drop raft")
        corpus = knowledge_base(task, cfg) if name in retrieving else None  # a bad file fails here, one line
        if corpus is not None and corpus.without_text:
            console.print(f"[yellow]warning: {name}: {corpus.without_text} documents of {corpus.source} have no text "
                          f"and are left out of retrieval ({corpus.documents} kept); give them text or drop them[/]",
                          soft_wrap=True)
    for name in cfg.corpus:
        if name not in retrieving:
            console.print(f"[yellow]warning: --corpus {name}={cfg.corpus[name]} is read by retrieve=K methods only, "
                          f"and no method of {name} retrieves; add rag or NAME:retrieve=K to use it[/]",
                          soft_wrap=True)
