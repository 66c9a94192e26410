"""bench_e2e compares wall times only over runs that did the same work."""

from __future__ import annotations

import importlib.util

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("bench_e2e", ROOT / "benchmarks" / "bench_e2e.py")
bench_e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_e2e)


def _run(wall: float, code: int, cells: tuple[str, ...]) -> dict:
    return {"wall_s": wall, "exit_status": code, "metrics": {c: 0.5 for c in cells}}


def test_a_round_where_the_reference_failed_a_cell_gives_no_ratio():
    both = ("cnn x qlora", "cnn x lora")
    runs = [_run(250.0, 0, both), _run(175.0, 1, ("cnn x lora",)),  # REF failed its qlora cell: less work
            _run(240.0, 0, both), _run(300.0, 0, both)]
    assert bench_e2e.comparable_ratios(runs) == [0.8]


def test_a_round_where_today_failed_gives_no_ratio():
    both = ("cnn x qlora", "cnn x lora")
    assert bench_e2e.comparable_ratios([_run(100.0, 2, both), _run(300.0, 0, both)]) == []
