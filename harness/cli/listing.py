"""``run_matrix.py list``: the tasks, methods, catalogue models and metrics this installation knows."""

from __future__ import annotations

from harness.spec.methods import METHODS
from harness.spec.metrics import METRICS
from harness.spec.models import CATALOGUE
from harness.spec.task import TASKS


def cmd_list(argv: list[str]) -> int:
    print("tasks:")
    for name, task in TASKS.items():
        print(f"  {name:10} {task.description} (main metric: {task.main_metric})")
    print("methods:")
    for name, factory in METHODS.items():
        spec = factory()
        bits = f", {spec.bits}-bit weights" if spec.bits else ""
        shown = ("shots", "retrieve", "use_dora", "use_rslora", "init_lora_weights", "loraplus_ratio")
        fields = "".join(f", {k}={getattr(spec, k)}" for k in shown
                         if getattr(spec, k, None) not in (None, False, "default"))
        print(f"  {name:10} finetune={spec.finetune}{bits}, lr={spec.lr}{fields}")
    print("catalogue models:")
    for name, build in CATALOGUE.items():
        print(f"  {name:16} {(build.__doc__ or '').strip().splitlines()[0]}")
    print("metrics:")
    for name, m in METRICS.items():
        print(f"  {name:22} {'higher' if m.higher_is_better else 'lower'} is better, {m.aggregation}")
    return 0
