"""The cross-task table and the lm-eval table, computed from synthetic cell records on disk."""

from __future__ import annotations

import random

import pytest

from harness.core.errors import ConfigError
from harness.core.stats import paired_bootstrap
from harness.records.load import load_records
from harness.records.store import CellStore
from harness.spec.config import RunConfig

N_BOOT = 200


def write_cell(run, task, method, *, values, metric, eval_hash="h-", cross=None, lm_eval=None, seed=0,
               finetune=None, shuffle=False, folder=None):
    """A complete cell folder: config, data.json, metrics.json and predictions files with per-example scores.

    ``values`` are the cell's own per-example values of ``metric`` (ids e0, e1, ...); ``cross`` maps another
    task to (its main metric, per-example values, its eval hash), stored as predictions.<task>.jsonl.
    """
    store = CellStore(run, task, folder or method)
    store.dir.mkdir(parents=True)
    finetune = finetune or ("none" if method == "base" else "lora")
    store.write_json("config.json", {"task": task, "method": {"name": method, "finetune": finetune},
                                     "hyperparameters": {"seed": seed, "bootstrap": N_BOOT}})
    store.write_json("data.json", {"eval": {"source": "embedded eval", "rows": len(values),
                                            "sha256": eval_hash + task}})
    store.write_json("train.json", {"trained": finetune != "none"})

    def preds(vals, name):
        rows = [{"id": f"e{i}", "output": "x", "scores": {name: v}} for i, v in enumerate(vals)]
        if shuffle:
            random.Random(1).shuffle(rows)  # pairing is by id, not by line order
        return rows

    store.write_jsonl("predictions.jsonl", preds(values, metric))
    metrics = {"task": task, "method": method, "main_metric": metric, "quality": {}, "extra": {},
               "measurements": {}}
    if cross:
        metrics["cross"] = {}
        for other, (m, vals, h) in cross.items():
            store.write_jsonl(f"predictions.{other}.jsonl", preds(vals, m))
            metrics["cross"][other] = {"main_metric": m, "quality": {}, "eval_data": {"sha256": h + other},
                                       "predictions": f"predictions.{other}.jsonl"}
    if lm_eval:
        metrics["lm_eval"] = lm_eval
    store.write_json("metrics.json", metrics)
    store.finish("ok")


BASE_G = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
LORA_G = [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]  # what training on cnn left of guanaco
BASE_C = [0.10, 0.20, 0.15, 0.12, 0.18, 0.11, 0.14, 0.16, 0.13, 0.17, 0.19, 0.12]
LORA_C = [0.30, 0.35, 0.28, 0.33, 0.31, 0.36, 0.29, 0.34, 0.30, 0.32, 0.37, 0.31]


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    write_cell(run, "cnn", "base", values=BASE_C, metric="rougeL")
    write_cell(run, "guanaco", "base", values=BASE_G, metric="label_accuracy")
    write_cell(run, "cnn", "lora", values=LORA_C, metric="rougeL", shuffle=True,
               cross={"guanaco": ("label_accuracy", LORA_G, "h-")})
    return run


def test_cross_change_is_the_paired_bootstrap_over_example_ids(run):
    from harness.report.cross_task import cross_rows

    rows = cross_rows(load_records(run), n_boot=N_BOOT)
    assert [(r["trained_on"], r["method"], r["task"], r["own"]) for r in rows] == [
        ("cnn", "lora", "cnn", True), ("cnn", "lora", "guanaco", False)]
    own, cross = rows
    expect = paired_bootstrap(LORA_G, BASE_G, "mean", N_BOOT, 0)
    assert cross["diff"] == pytest.approx(sum(LORA_G) / 12 - sum(BASE_G) / 12) == pytest.approx(-5 / 12)
    assert (cross["ci_low"], cross["ci_high"]) == pytest.approx((expect["ci_low"], expect["ci_high"]))
    assert cross["ci_high"] < 0 and cross["verdict"] == "worse" and cross["n"] == 12
    # The own column is the gain from training, paired the same way although lora's lines were shuffled.
    expect_own = paired_bootstrap(LORA_C, BASE_C, "mean", N_BOOT, 0)
    assert own["diff"] == pytest.approx(expect_own["diff"]) and own["verdict"] == "better"
    assert (own["ci_low"], own["ci_high"]) == pytest.approx((expect_own["ci_low"], expect_own["ci_high"]))


def test_cross_table_reads_like_the_issue(run):
    from harness.report.cross_task import cross_markdown, cross_table

    header, rows = cross_table(load_records(run))
    assert header == ["trained on", "method", "cnn: rougeL ↑", "guanaco: label_accuracy ↑"]
    assert rows[0][:2] == ["cnn", "lora"]
    assert rows[0][2].endswith("(better, trained task)") and rows[0][2].startswith("+0.")
    assert rows[0][3].startswith("-0.417 [-0.") and rows[0][3].endswith("(worse)")
    md = "\n".join(cross_markdown(load_records(run)))
    assert "## Forgetting across tasks" in md and "| cnn | lora | +0." in md


def test_no_cross_section_no_table(tmp_path):
    from harness.report.cross_task import cross_html, cross_markdown, cross_table

    write_cell(tmp_path / "r", "cnn", "base", values=BASE_C, metric="rougeL")
    write_cell(tmp_path / "r", "cnn", "lora", values=LORA_C, metric="rougeL")
    records = load_records(tmp_path / "r")
    assert cross_table(records) is None and cross_markdown(records) == [] and cross_html(records) == []


def test_other_eval_rows_or_no_base_give_a_reason_not_a_number(tmp_path):
    from harness.report.cross_task import cross_table

    run = tmp_path / "r"
    write_cell(run, "guanaco", "base", values=BASE_G, metric="label_accuracy")
    write_cell(run, "cnn", "lora", values=LORA_C, metric="rougeL",
               cross={"guanaco": ("label_accuracy", LORA_G, "other-rows-")})
    _, rows = cross_table(load_records(run))
    assert rows == [["cnn", "lora", "no base cell", "eval rows differ from base's"]]


def test_lower_is_better_gain_points_up_when_the_metric_falls(tmp_path):
    from harness.report.cross_task import cross_rows

    run = tmp_path / "r"
    steps_base = [3.0, 4.0, 3.0, 5.0, 4.0, 3.0]
    steps_lora = [2.0, 2.0, 2.0, 3.0, 2.0, 2.0]
    write_cell(run, "fever", "base", values=steps_base, metric="mean_steps")
    write_cell(run, "cnn", "base", values=BASE_C, metric="rougeL")
    write_cell(run, "cnn", "lora", values=LORA_C, metric="rougeL", cross={"fever": ("mean_steps", steps_lora, "h-")})
    row = next(r for r in cross_rows(load_records(run), n_boot=N_BOOT) if r["task"] == "fever")
    assert row["diff"] == pytest.approx(13 / 6 - 22 / 6)  # the raw change: fewer steps
    assert row["gain"] == pytest.approx(-row["diff"]) and row["verdict"] == "better"
    assert (row["gain_low"], row["gain_high"]) == pytest.approx((-row["ci_high"], -row["ci_low"]))


def test_seeds_pair_by_seed_and_example(tmp_path):
    from harness.report.cross_task import cross_rows

    run = tmp_path / "r"
    for seed in (0, 1):
        write_cell(run, "guanaco", "base", folder=f"base-seed{seed}", values=BASE_G, metric="label_accuracy",
                   seed=seed)
        write_cell(run, "cnn", "base", folder=f"base-seed{seed}", values=BASE_C, metric="rougeL", seed=seed)
        shifted = LORA_G if seed == 0 else BASE_G  # seed 1 forgot nothing
        write_cell(run, "cnn", "lora", folder=f"lora-seed{seed}", values=LORA_C, metric="rougeL", seed=seed,
                   cross={"guanaco": ("label_accuracy", shifted, "h-")})
    records = load_records(run)
    row = next(r for r in cross_rows(records, n_boot=N_BOOT) if r["task"] == "guanaco")
    assert row["n_seeds"] == 2 and row["n"] == 24
    assert row["diff"] == pytest.approx((-5 / 12 + 0.0) / 2)  # the mean over seeds of each seed's change


def test_gain_plot_and_html_section(run):
    from harness.report.cross_task import cross_html, gain_plot

    records = load_records(run)
    assert gain_plot("cnn", records).startswith("data:image/png;base64,")
    assert gain_plot("guanaco", records) is None  # nothing was trained on guanaco
    page = "".join(cross_html(records))
    assert "Forgetting across tasks" in page and page.count("<img") == 1 and "-0.417" in page


LM = {"results": {"tiny_mc": {"acc": {"value": 0.5, "stderr": 0.2, "higher_is_better": True},
                              "perplexity": {"value": 12.0, "stderr": None, "higher_is_better": False}}},
      "n_samples": {}, "limit": 6, "lm_eval_version": "0.4.13", "seconds": 1.0}


def test_lm_eval_table_shows_stderr_and_change_from_base(tmp_path):
    from harness.report.lm_eval import lm_eval_markdown, lm_eval_table

    run = tmp_path / "r"
    lora = {**LM, "results": {"tiny_mc": {**LM["results"]["tiny_mc"],
                                          "acc": {"value": 0.25, "stderr": 0.1, "higher_is_better": True}}}}
    write_cell(run, "cnn", "base", values=BASE_C, metric="rougeL", lm_eval=LM)
    write_cell(run, "cnn", "lora", values=LORA_C, metric="rougeL", lm_eval=lora)
    header, rows = lm_eval_table(load_records(run), "cnn")
    assert header == ["method", "tiny_mc acc ↑", "tiny_mc perplexity ↓"]
    assert rows == [["base", "0.500 ± 0.200", "12.000"], ["lora", "0.250 ± 0.100 (-0.250 vs base)",
                                                           "12.000 (+0.000 vs base)"]]
    md = "\n".join(lm_eval_markdown(load_records(run), "cnn"))
    assert "lm-evaluation-harness 0.4.13, at most 6 examples per task" in md and "| lora | 0.250 ± 0.100" in md
    assert lm_eval_table(load_records(run), "guanaco") is None


def test_parse_lm_eval_results():
    from harness.evaluate.lm_eval import parse_results

    out = {"results": {"arc_easy": {"alias": "arc_easy", "sample_len": 6, "acc,none": 0.5, "acc_stderr,none": 0.2,
                                    "acc_norm,none": 0.25, "acc_norm_stderr,none": "N/A"},
                       "gsm8k": {"exact_match,strict-match": 0.1, "exact_match_stderr,strict-match": 0.05}},
           "higher_is_better": {"arc_easy": {"acc": True, "acc_norm": True}, "gsm8k": {"exact_match": True}}}
    assert parse_results(out) == {
        "arc_easy": {"acc": {"value": 0.5, "stderr": 0.2, "higher_is_better": True},
                     "acc_norm": {"value": 0.25, "stderr": None, "higher_is_better": True}},
        "gsm8k": {"exact_match,strict-match": {"value": 0.1, "stderr": 0.05, "higher_is_better": True}}}


def test_lm_eval_missing_is_one_line_with_the_install_hint(monkeypatch):
    import importlib.util

    from harness.evaluate.lm_eval import check_lm_eval

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    with pytest.raises(ConfigError, match=r'^--lm-eval needs lm-evaluation-harness.*pip install -e "\.\[lm_eval\]"$'):
        check_lm_eval(RunConfig(lm_eval=("hellaswag",)))
    check_lm_eval(RunConfig())  # not asked for: nothing to check


def test_lm_eval_include_must_be_a_folder(tmp_path):
    pytest.importorskip("lm_eval")
    from harness.evaluate.lm_eval import check_lm_eval

    with pytest.raises(ConfigError, match="--lm-eval-include .*missing is not a folder"):
        check_lm_eval(RunConfig(lm_eval=("tiny_mc",), lm_eval_include=str(tmp_path / "missing")))


def test_cross_eval_warns_with_one_task_or_no_base(capsys):
    from harness.evaluate.cross_task import check_cross_eval, other_tasks

    check_cross_eval(RunConfig(tasks=("cnn",), methods=("base", "lora"), cross_eval=True))
    assert "--cross-eval needs at least two tasks; with only cnn" in capsys.readouterr().err
    check_cross_eval(RunConfig(tasks=("cnn", "guanaco"), methods=("lora",), cross_eval=True))
    assert "add base to --methods" in capsys.readouterr().err
    check_cross_eval(RunConfig(tasks=("cnn", "guanaco"), methods=("base", "lora"), cross_eval=True))
    assert capsys.readouterr().err == ""
    assert other_tasks(RunConfig(tasks=("cnn", "guanaco", "fever")), "guanaco") == ["cnn", "fever"]
