"""How benchmarks/memory_check.py counts memory on CPU: the model's own tensors by storage, the profiler's highest
net allocation while a function runs, and the batches trl's collator built (for the estimate of the shapes that
actually ran)."""

from __future__ import annotations

import contextlib
from gc import collect as collect_garbage


def tensor_state_bytes(model) -> int:
    """Bytes of the distinct storages behind the model's parameters, buffers and bitsandbytes states."""
    import torch

    seen: dict[int, int] = {}

    def add(t):
        if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.numel():
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()

    for t in list(model.parameters()) + list(model.buffers()):
        add(t)
        qs = getattr(t, "quant_state", None)  # bitsandbytes Params4bit
        if qs is not None:
            for x in (qs.absmax, qs.code, getattr(qs, "offset", None)):
                add(x)
            if getattr(qs, "state2", None) is not None:
                add(qs.state2.absmax)
                add(qs.state2.code)
        for attr in ("SCB", "CB"):  # bitsandbytes Int8Params
            add(getattr(t, attr, None))
    return sum(seen.values())


def profiled_peak(fn) -> tuple[int, object]:
    """(highest net bytes allocated while ``fn`` ran, its result), from the profiler's allocation events."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    # Free what earlier work in this process left in reference cycles now: freed inside the window, it would count
    # against the running total and lower the peak (a previous model's tensors, measured one after another).
    collect_garbage()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        stack.extend(e.children)
        if e.tag == _EventType.Allocation and e.extra_fields.device.type == "cpu":
            events.append((e.start_time_ns, e.extra_fields.total_allocated, e.extra_fields.alloc_size))
    if not events:
        return 0, result
    events.sort()
    start = events[0][1] - events[0][2]  # the running total just before the first event
    return max(total for _, total, _ in events) - start, result


@contextlib.contextmanager
def record_batches(out: list):
    """Record (rows, tokens, trained tokens) of every batch trl's collator builds (harness.cell.trl_changes makes it
    padding-free, so a batch is one row of all its rows' tokens)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling as Collator

    original = Collator.__call__

    def call(self, examples, *args, **kwargs):
        batch = original(self, examples, *args, **kwargs)
        labels = batch["labels"]
        out.append((len(examples), int(batch["input_ids"].numel()), int((labels[:, 1:] != -100).sum())))
        return batch

    Collator.__call__ = call
    try:
        yield
    finally:
        Collator.__call__ = original


@contextlib.contextmanager
def numpy_tensors_counted():
    """Tensors made from NumPy arrays (harness.cell.trl_changes's dropout masks) live in NumPy's memory, which torch's
    allocator, and so the profiler, never sees; copy them into torch's allocator (same size) while measuring."""
    import torch

    original = torch.from_numpy
    torch.from_numpy = lambda array: original(array).clone()
    try:
        yield
    finally:
        torch.from_numpy = original
