"""Forgetting, end to end on the tiny model: --cross-eval across cnn and guanaco, and --lm-eval on a local task."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("forgetting")]  # its session fixture runs once

SMALL = ("--model", "tiny-llama", "--train-limit", "8", "--eval-limit", "4", "--max-new-tokens", "8",
         "--bootstrap", "100")


@pytest.fixture(scope="session")
def cross_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("results")
    done = run_cli(*SMALL, "--tasks", "cnn,guanaco", "--methods", "base,lora", "--cross-eval",
                   "--out", str(out), "--run-name", "cross")
    return done, out / "cross"


def _json(path):
    return json.loads(path.read_text())


def test_trained_cells_evaluate_on_the_other_task_and_base_only_on_its_own(cross_run):
    from harness.core.files import read_jsonl
    from harness.spec.metrics import summarise
    from harness.spec.task import get_task

    done, run = cross_run
    assert done.returncode == 0, done.stderr[-3000:]
    # Base is evaluated once per task, by its own cell; each trained cell evaluates the one other task.
    assert done.stderr.count("cross-eval: ") == 2
    assert "cross-eval: cnn x lora on guanaco" in done.stderr and "cross-eval: guanaco x lora on cnn" in done.stderr
    for task in ("cnn", "guanaco"):
        assert "cross" not in _json(run / task / "base" / "metrics.json")
        assert not list((run / task / "base").glob("predictions.*.jsonl"))
    for task, other in (("cnn", "guanaco"), ("guanaco", "cnn")):
        cell = run / task / "lora"
        cross = _json(cell / "metrics.json")["cross"]
        assert list(cross) == [other]
        entry = cross[other]
        assert entry["main_metric"] == get_task(other).main_metric
        # The same eval rows as the other task's base cell: the pairing in the report relies on it.
        assert entry["eval_data"]["sha256"] == _json(run / other / "base" / "data.json")["test"]["sha256"]
        preds = read_jsonl(cell / f"predictions.{other}.jsonl")
        base_preds = read_jsonl(run / other / "base" / "predictions.jsonl")
        assert [p["id"] for p in preds] == [p["id"] for p in base_preds] and len(preds) == 4
        # The stored metrics are the other task's own scoring of the stored predictions.
        values = {m: [p["scores"][m] for p in preds] for m in preds[0]["scores"]}
        values = {m: [tuple(v) if isinstance(v, list) else v for v in vals] for m, vals in values.items()}
        assert entry["quality"] == json.loads(json.dumps(summarise(values, 100, 0)))
        assert f"predictions.{other}.jsonl" in _json(cell / "status.json")["files"]  # checksummed with the rest


def test_cross_table_in_report_md_terminal_and_html(cross_run):
    done, run = cross_run
    md = (run / "report.md").read_text()
    section = md.split("## Forgetting across tasks (--cross-eval)")[1].split("## Paired comparisons")[0]
    assert "| trained on | method | cnn: rougeL ↑ | guanaco: ifeval_instruction_strict ↑ |" in section
    rows = [line for line in section.splitlines() if line.startswith("| cnn | lora") or line.startswith("| guanaco")]
    assert len(rows) == 2
    assert "(trained task)" in rows[0].split("|")[3] and "(trained task)" in rows[1].split("|")[4]
    assert "change against base on each task" in done.stderr
    page = (run / "report.html").read_text()
    assert "Forgetting across tasks" in page and "alt='gain vs change cnn'" in page
    assert "alt='gain vs change guanaco'" in page


def test_report_subcommand_rebuilds_the_cross_table(cross_run):
    _, run = cross_run
    before = (run / "report.md").read_text()
    (run / "report.md").unlink()
    again = run_cli("report", str(run))
    assert again.returncode == 0, again.stderr[-2000:]
    assert (run / "report.md").read_text() == before


# --- lm-eval on a local task -------------------------------------------------------------------------------
QUESTIONS = [("What colour is the sky on a clear day?", ["blue", "green", "red"], 0),
             ("How many legs does a dog have?", ["two", "four", "six"], 1),
             ("What is frozen water called?", ["steam", "sand", "ice"], 2),
             ("Which animal says moo?", ["cow", "cat", "owl"], 0),
             ("What do bees make?", ["milk", "honey", "silk"], 1),
             ("Which of these is a fruit?", ["carrot", "potato", "apple"], 2)]

MC_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files: {data}
test_split: train
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
# A loglikelihood task: its perplexity is continuous, so a trained model scores differently from base.
LL_YAML = """task: tiny_ll
dataset_path: json
dataset_kwargs:
  data_files: {data}
test_split: train
output_type: loglikelihood
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: " {{{{choices[answer]}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
metadata:
  version: 1.0
"""


@pytest.fixture(scope="session")
def lm_tasks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm_tasks")
    data = folder / "questions.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS))
    (folder / "tiny_mc.yaml").write_text(MC_YAML.format(data=data))
    (folder / "tiny_ll.yaml").write_text(LL_YAML.format(data=data))
    return folder


def test_lm_eval_runs_a_local_task_on_base_and_lora(tmp_path, lm_tasks, tiny_model_dir):
    pytest.importorskip("lm_eval", reason='lm-eval is an optional extra: pip install -e ".[lm_eval]"')
    done = run_cli(*SMALL, "--tasks", "cnn", "--methods", "base,lora", "--cross-eval", "--lm-eval", "tiny_mc,tiny_ll",
                   "--lm-eval-include", str(lm_tasks), "--out", str(tmp_path), "--run-name", "lm")
    assert done.returncode == 0, done.stderr[-3000:]
    # One task and --cross-eval: one warning line, and the run goes on.
    assert "--cross-eval needs at least two tasks; with only cnn" in done.stderr
    run = tmp_path / "lm"
    lm = {m: _json(run / "cnn" / m / "metrics.json")["lm_eval"] for m in ("base", "lora")}
    for m in ("base", "lora"):
        acc = lm[m]["results"]["tiny_mc"]["acc"]
        assert acc["higher_is_better"] is True and round(acc["value"] * 6, 6) in range(7)  # a share of 6 questions
        assert acc["stderr"] is not None and acc["stderr"] >= 0
        assert lm[m]["n_samples"]["tiny_mc"]["effective"] == 6 and lm[m]["lm_eval_version"]
    ppl = {m: lm[m]["results"]["tiny_ll"]["perplexity"] for m in ("base", "lora")}
    assert ppl["base"]["higher_is_better"] is False and ppl["base"]["value"] > 1
    # The trained model in memory was scored, not the base weights reloaded.
    assert ppl["lora"]["value"] != pytest.approx(ppl["base"]["value"], rel=1e-6)
    md = (run / "report.md").read_text()
    assert "| method | tiny_mc acc ↑ | tiny_ll perplexity ↓ |" in md
    base_cell = f"{lm['base']['results']['tiny_mc']['acc']['value']:.3f} ± "
    assert f"| base | {base_cell}" in md and "vs base)" in md
    assert "tiny_mc acc" in (run / "report.html").read_text()


def test_unknown_lm_eval_task_is_one_line_before_any_cell(tmp_path, lm_tasks):
    pytest.importorskip("lm_eval", reason='lm-eval is an optional extra: pip install -e ".[lm_eval]"')
    done = run_cli(*SMALL, "--tasks", "cnn", "--methods", "base", "--lm-eval", "tiny_mc,no_such_task",
                   "--lm-eval-include", str(lm_tasks), "--out", str(tmp_path), "--run-name", "bad")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: --lm-eval task 'no_such_task' is not an lm-eval task or in {lm_tasks}; list them with "
        "`lm-eval ls tasks`, or put a task YAML in a folder and pass --lm-eval-include FOLDER")
    assert not (tmp_path / "bad" / "cnn").exists()
