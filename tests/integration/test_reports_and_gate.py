"""Reports rebuilt from records alone, the HTML page rendered in Chromium, and the gate on the CI matrix."""

import csv
import json
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("reports_and_gate")]  # its session fixture runs once

CI_CONFIG = ROOT / "tests" / "baselines" / "ci-matrix.yaml"
CI_BASELINE = ROOT / "tests" / "baselines" / "ci-gate.json"
CI_METHODS = ("base", "fewshot", "rag", "lora", "qlora4", "dora")


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory, smollm2_dir):
    """The small deterministic matrix that CI gates against the committed baseline."""
    out = tmp_path_factory.mktemp("ci")
    done = run_cli("--config", str(CI_CONFIG), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "ci-gate"


def test_gate_passes_on_the_committed_baseline(ci_run):
    done = run_cli("gate", str(ci_run), "--baseline", str(CI_BASELINE))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith("gate passed:")


def test_gate_fails_on_a_doctored_baseline(ci_run, tmp_path):
    baseline = json.loads(CI_BASELINE.read_text())
    cell = baseline["cells"]["qa/lora"]["metrics"]
    cell["ref_perplexity"]["value"] *= 0.5  # pretend the baseline was much better (lower perplexity)
    doctored = tmp_path / "doctored.json"
    doctored.write_text(json.dumps(baseline))
    done = run_cli("gate", str(ci_run), "--baseline", str(doctored))
    assert done.returncode == 1
    assert "REGRESSED" in done.stderr and "qa/lora ref_perplexity: regressed" in done.stderr
    baseline["cells"]["qa/extra"] = {"status": "ok", "metrics": {"f1": {"value": 0.5}}}
    doctored.write_text(json.dumps(baseline))
    assert "MISSING" in run_cli("gate", str(ci_run), "--baseline", str(doctored)).stderr
    missing_ok = run_cli("gate", str(ci_run), "--baseline", str(doctored), "--allow-missing",
                         "--tol", "ref_perplexity=rel:1.5")
    assert missing_ok.returncode == 0, missing_ok.stderr[-2000:]


def test_write_baseline_round_trip(ci_run, tmp_path):
    path = tmp_path / "b.json"
    assert run_cli("gate", str(ci_run), "--write-baseline", str(path), "--abs-tol", "0.01").returncode == 0
    b = json.loads(path.read_text())
    assert b["tolerances"]["default"] == {"abs": 0.01, "rel": 0.0}
    assert set(b["cells"]) == set(json.loads(CI_BASELINE.read_text())["cells"])
    assert run_cli("gate", str(ci_run), "--baseline", str(path)).returncode == 0


def test_report_is_rebuilt_from_records_alone_without_a_model(ci_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(ci_run, run)
    for name in ("report.md", "summary.csv", "report.html"):
        (run / name).unlink()
    code = ("import sys; from harness.cli import main; rc = main(['report', sys.argv[1]]); "
            "print('torch' in sys.modules, 'transformers' in sys.modules); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, str(run)], cwd=ROOT, capture_output=True, text=True,
                          env={"HARNESS_CACHE": str(tmp_path / "empty-cache"), "PATH": "/usr/bin:/bin",
                               "HARNESS_PROGRESS": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False False"  # no model library was even imported
    rebuilt, original = (run / "report.md").read_text(), (ci_run / "report.md").read_text()
    # The same report: only the title (the folder's name) differs; the command comes from run.json.
    assert rebuilt.replace("# Results: copy", "") == original.replace("# Results: ci-gate", "")
    assert "python run_matrix.py --config" in rebuilt
    rows = list(csv.DictReader((run / "summary.csv").open()))
    assert {(r["task"], r["method"]) for r in rows} == {("qa", m) for m in CI_METHODS}
    assert "qa  (95% bootstrap CI below each value)" in done.stderr  # the terminal table, a row per method
    assert all(f"│ {m} " in done.stderr for m in CI_METHODS)
    page = (run / "report.html").read_text()
    # per task: quality against memory, quality against cost, loss curves, tokens/s per method
    assert page.count("<img") == 4 and page.count("data:image/png;base64,") == 4
    assert "Paired comparisons" in page


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
CHECK = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 100 && i.getBoundingClientRect().width > 100);
  const tables = [...document.querySelectorAll('table')].filter(t => t.getBoundingClientRect().height > 20);
  const out = document.createElement('div'); out.id = 'render-check';
  out.textContent = `images=${imgs.length} rendered=${ok.length} tables=${tables.length}`;
  document.body.appendChild(out);
});</script></body>"""


def test_report_html_renders_in_chromium(ci_run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian package chromium); the README's test command installs it")
    page = (ci_run / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK))
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, *profile, "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<div id="render-check">images=(\d+) rendered=(\d+) tables=(\d+)</div>', dom.stdout)
    assert found, dom.stdout[-500:] + dom.stderr[-500:]
    images, rendered, tables = map(int, found.groups())
    assert images == rendered == 4  # quality against memory, against cost, loss curves, tokens/s
    assert tables >= 2  # the task's table and the paired comparisons
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, *profile, "--window-size=1280,2400", f"--screenshot={shot}",
                    (ci_run / "report.html").as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1280, 2400)
    hist = img.histogram()
    assert hist[255] < 0.97 * sum(hist)  # not a blank white page
    assert len([v for v in hist if v > 0]) > 50  # many grey levels: text and plots, not a flat fill
