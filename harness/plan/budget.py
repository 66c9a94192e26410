"""The memory a cell may use, and the cells skipped before they run because their estimate does not fit it."""

from __future__ import annotations

from harness.core.errors import ConfigError
from harness.core.units import GIB, parse_bytes
from harness.plan.estimate import estimate_for_cell

# Memory of each --gpu choice, from NVIDIA's datasheets (T4: 16 GB GDDR6; L4: 24 GB GDDR6; A10G: 24 GB GDDR6,
# AWS EC2 G5 documentation; A100: 40 GB HBM2 / 80 GB HBM2e; H100 SXM: 80 GB HBM3; H200: 141 GB HBM3e). NVIDIA's
# "GB" for these capacities is binary (an A100-40GB reports 40960 MiB); the CUDA context itself takes a few
# hundred MiB of it, and ECC-reserved memory makes a T4 report 15 GiB.
GPU_MEMORY = {"T4": 16 * GIB, "L4": 24 * GIB, "A10G": 24 * GIB, "A100-40GB": 40 * GIB, "A100-80GB": 80 * GIB,
              "H100": 80 * GIB, "H200": 141 * GIB}


def device_memory(device: str, gpu: str | None = None) -> int | None:
    """Bytes of memory a cell may use: the --gpu's datasheet capacity, else the visible CUDA device's total;
    None on CPU (no budget unless --memory-budget names one)."""
    if gpu is not None:
        if gpu not in GPU_MEMORY:
            raise ConfigError(f"--gpu {gpu!r} is not known; choose from {', '.join(GPU_MEMORY)}")
        return GPU_MEMORY[gpu]
    if device != "cuda":
        return None
    import torch

    return int(torch.cuda.mem_get_info()[1])


def memory_budget(cfg, device: str) -> tuple[int, str] | None:
    """(bytes, where it comes from) that a cell's estimated peak must fit, or None when there is none."""
    if cfg.memory_budget:
        return parse_bytes(cfg.memory_budget), f"--memory-budget {cfg.memory_budget}"
    total = device_memory(device, cfg.gpu)
    if total is None:
        return None
    return total, f"--gpu {cfg.gpu}" if cfg.gpu else "the GPU's memory"


def budget_skip(cell, cfg, device: str, location: str, budget) -> str | None:
    """Why the cell is skipped before it runs (its estimate exceeds the budget), or None to run it."""
    if budget is None or cfg.force:
        return None
    est = estimate_for_cell(location, cell.spec.method, cfg, device)
    if est is None or est.total_bytes <= budget[0]:
        return None
    return f"{est.describe()}; over {budget[1]} ({budget[0] / GIB:.2f} GiB); --force runs it anyway"


def over_budget_before(cell) -> bool:
    """The cell was skipped for its estimate by an earlier run: the budget or --force may have changed since."""
    return cell.store.read_json("status.json").get("error_kind") == "over_budget"
