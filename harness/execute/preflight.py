"""Checks before the first cell spends compute: each failure is one line for the whole run, not one per cell.

The run folder is writable, a rerun does not mix settings into a completed cell, the model resolves (config and
tokenizer, no weights), and every optional integration that was asked for is installed and usable.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from harness.cell.load import check_loadable
from harness.cell.vllm import check_available
from harness.core.errors import ConfigError
from harness.evaluate.cross_task import check_cross_eval
from harness.evaluate.lm_eval import check_lm_eval
from harness.integrations.trackers import check_trackers
from harness.spec.config import RunConfig
from harness.spec.precision import resolve_device


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


def check_liger(cfg: RunConfig) -> None:
    """Liger's kernels are Triton kernels: a CUDA GPU and the liger extra."""
    if resolve_device(cfg.device) != "cuda":
        raise ConfigError("--liger-kernel runs Triton kernels on a CUDA GPU and this run is on a CPU; leave it out")
    if importlib.util.find_spec("liger_kernel") is None:
        raise ConfigError('--liger-kernel needs liger-kernel, which is not installed; pip install -e ".[liger]"')
