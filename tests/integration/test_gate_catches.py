"""The CI gate sees a broken path: each test breaks one path of the CI matrix on purpose, reruns the cell it
touches, and checks that the gate against the committed baseline fails on the metric that caught it.

The clean rerun of the same matrix passes the same gate (test_reports_and_gate.py), so each failure here is the
break's doing. Cells run inline in this process, which is what lets a test switch one path off.
"""

import pytest

from harness.cli import main
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("gate_catches")]

CI_CONFIG = ROOT / "tests" / "baselines" / "ci-matrix.yaml"
CI_BASELINE = ROOT / "tests" / "baselines" / "ci-gate.json"


def gate_after(tmp_path, capsys, method: str, *flags: str, completes: bool = True) -> tuple[int, str]:
    """Run one method of the CI matrix (inline, so that the test's monkeypatches hold), then gate it; the gate's
    last line. ``completes``: whether the cell itself should finish (only its quality worse) or fail a check."""
    code = main(["--config", str(CI_CONFIG), "--methods", method, "--out", str(tmp_path), "--executor", "inline",
                 *flags])
    assert code == (0 if completes else 1), capsys.readouterr().err[-3000:]
    capsys.readouterr()
    code = main(["gate", str(tmp_path / "ci-gate"), "--baseline", str(CI_BASELINE), "--allow-missing"])
    return code, capsys.readouterr().err.strip().splitlines()[-1]


def test_the_adapter_not_applied_fails_the_cell_and_the_gate(tmp_path, capsys, monkeypatch, smollm2_dir):
    """Training runs, but the merge hands back the base model without the trained adapter. The cell's own weight
    checks catch it first (the evaluated model equals the base), so the cell fails, and the gate fails on the cell
    even with --allow-missing; the second half checks its quality, with those weight checks off."""
    from peft.tuners.tuners_utils import BaseTuner

    from harness.cell import weights

    monkeypatch.setattr(BaseTuner, "merge_and_unload", lambda self, *a, **k: self.unload())
    code, line = gate_after(tmp_path / "checked", capsys, "lora", completes=False)
    assert code == 1 and line.startswith("gate FAILED") and "qa/lora ref_perplexity: failed" in line
    real_check = weights.check
    monkeypatch.setattr(weights, "check", lambda *a, **k: {**real_check(*a, **k), "passed": True})
    code, line = gate_after(tmp_path / "unchecked", capsys, "lora")
    assert code == 1 and "qa/lora ref_perplexity: regressed" in line


def test_the_shots_dropped_fail_the_gate(tmp_path, capsys, monkeypatch, smollm2_dir):
    from harness.spec.prompting import Prompting

    monkeypatch.setattr(Prompting, "shots", lambda self, row: [])
    code, line = gate_after(tmp_path, capsys, "fewshot")
    assert code == 1 and "qa/fewshot ref_perplexity: regressed" in line


def test_retrieval_returning_nothing_fails_the_gate(tmp_path, capsys, monkeypatch, smollm2_dir):
    from harness.spec.retrieval import BM25

    monkeypatch.setattr(BM25, "search", lambda self, query, k: [])
    code, line = gate_after(tmp_path, capsys, "rag")
    assert code == 1 and "qa/rag ref_perplexity: regressed" in line


def test_a_wrong_learning_rate_fails_the_gate(tmp_path, capsys, smollm2_dir):
    """The matrix trains at 1e-3; at 1e-6 two steps leave the model where it started."""
    code, line = gate_after(tmp_path, capsys, "lora", "--lr", "1e-6")
    assert code == 1 and "qa/lora ref_perplexity: regressed" in line
