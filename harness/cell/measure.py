"""Peak memory and seeding for one cell.

On CUDA the peak is torch's max allocated and max reserved bytes since the cell began. On CPU it is the
process's peak resident set: Linux keeps it as VmHWM, and writing 5 to /proc/self/clear_refs resets it
(proc(5)), so each cell measures its own peak even though cells share a process.
"""

from __future__ import annotations

import random
import re
from pathlib import Path


def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


def rss_bytes() -> int | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


class PeakMemory:
    """Context manager; after exit, ``result`` holds the cell's peak memory figures in bytes."""

    def __init__(self, device: str):
        self.device = device
        self.result: dict = {}

    def __enter__(self):
        import gc

        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        self.rss_start = rss_bytes()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.rss_scope = "cell"
        except OSError:
            self.rss_scope = "process"  # no reset available: the peak since the process started
        return self

    def __exit__(self, *exc):
        peak = _status_kib("VmHWM")
        self.result = {"peak_rss_bytes": None if peak is None else peak * 1024, "rss_start_bytes": self.rss_start,
                       "peak_rss_scope": self.rss_scope}
        if self.device == "cuda":
            import torch

            self.result["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
            self.result["cuda_max_reserved_bytes"] = torch.cuda.max_memory_reserved()
        return False

    @property
    def peak_bytes(self) -> int | None:
        """The headline figure: GPU max allocated on CUDA, peak RSS on CPU."""
        if self.device == "cuda":
            return self.result.get("cuda_max_allocated_bytes")
        return self.result.get("peak_rss_bytes")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def free_memory(device: str) -> None:
    import gc

    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
