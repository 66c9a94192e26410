"""The recommendation rule and seed aggregation, on synthetic cell folders written as the runner writes them."""

import re

import numpy as np
import pytest

from harness.core.errors import ConfigError
from harness.core.stats import paired_bootstrap, paired_over_seeds
from harness.core.units import parse_budget
from harness.records.load import load_records
from harness.records.store import CellStore
from harness.report.document import markdown
from harness.report.recommend import paragraphs, recommend
from harness.report.seeds import collapse, seed_mean_ci
from harness.report.tables import task_tables
from harness.spec.config import RunConfig
from harness.spec.metrics import summarise

GIB = 2**30
N = 40  # eval examples per cell


def cell(run, method, values, peak, train_s=10.0, eval_s=5.0, seed=None, finetune="lora", task="cnn",
         metric="rougeL", fields=None, prompts=None):
    """One completed cell folder: config, data fingerprint, per-example scores, metrics and a checksummed status.
    ``fields``: the method's prompting fields (shots, retrieve); ``prompts``: what its prompts held and cost."""
    folder = method.replace(":", "_") if seed is None else f"{method}-seed{seed}"
    store = CellStore(run, task, folder)
    store.dir.mkdir(parents=True)
    store.write_json("config.json", {"task": task, "method": {"name": method, "finetune": finetune, **(fields or {})},
                                     "hyperparameters": {"seed": seed or 0, "bootstrap": 500, "max_seq_len": 512}})
    store.write_json("data.json", {"eval": {"rows": len(values), "source": "synthetic", "sha256": "e" * 64}})
    store.write_jsonl("predictions.jsonl", [{"id": f"ex{i}", "scores": {metric: v}} for i, v in enumerate(values)])
    store.write_json("train.json", {"trained": finetune != "none"})
    store.write_json("metrics.json", {
        "task": task, "method": method, "main_metric": metric, "extra": {},
        "quality": summarise({metric: list(values)}, 500, 0),
        "measurements": {"memory": {"peak_bytes": peak, "model_footprint_bytes": peak / 4},
                         "timing": {"train_s": train_s, "eval_s": eval_s, "train_tokens_per_s": 100.0,
                                    "generation_tokens_per_s": 50.0},
                         "params": {"trainable": 1, "total": 100, "trainable_pct": 1.0},
                         **({"prompts": prompts} if prompts else {})}})
    store.finish("ok")


def scores(mean, seed, spread=0.15):
    """N per-example scores around ``mean``; the same ``seed`` gives the same example-to-example noise."""
    return list(np.clip(mean + np.random.default_rng(seed).normal(0, spread, N), 0, 1))


def only(run, budget=None):
    (rec,) = recommend(load_records(run), budget)
    return rec


def test_a_tie_within_the_ci_goes_to_the_cheaper_method(tmp_path):
    cell(tmp_path, "lora", scores(0.52, 1), peak=4 * GIB, train_s=100)
    cell(tmp_path, "qlora", scores(0.50, 2), peak=GIB, train_s=150)
    cell(tmp_path, "full", scores(0.30, 2), peak=8 * GIB)
    rec = only(tmp_path)
    assert (rec.method, rec.best) == ("qlora", "lora")
    assert rec.text.startswith("cnn: recommend qlora: rougeL within the CI of lora (-0.0")
    assert "full" not in rec.text  # significantly worse than lora, and not the pick: not named
    # cost = train s + eval s of 1,000 queries, at 5 s per 40 queries: lora 100 + 125 = 225, qlora 150 + 125 = 275;
    # 275 / 225 = 1.22; peak 1 GiB / 4 GiB = 0.25
    assert "at 0.25x its peak memory and 1.22x its cost (training s + eval s of 1,000 queries)." in rec.text


def test_a_clear_winner_is_recommended_even_when_dearer(tmp_path):
    cell(tmp_path, "lora", scores(0.70, 1), peak=4 * GIB)
    cell(tmp_path, "qlora", scores(0.40, 2), peak=GIB)
    rec = only(tmp_path)
    assert rec.method == "lora"
    assert rec.text.startswith("cnn: recommend lora: the best rougeL (0.7")
    diff, lo, hi = map(float, re.search(r"qlora is significantly worse \((\S+) \[(\S+), (\S+)\]\)", rec.text).groups())
    assert lo <= diff <= hi < 0


def test_equal_memory_goes_to_the_lower_cost(tmp_path):
    cell(tmp_path, "lora", scores(0.5, 1), peak=GIB, train_s=50)
    cell(tmp_path, "lora8", scores(0.5, 1), peak=GIB, train_s=20)
    assert only(tmp_path).method == "lora8"


def test_peaks_within_two_percent_are_a_tie_that_cost_decides_and_a_wider_gap_is_not(tmp_path):
    # docs/adapters-report.md: rsLoRA (2,371 MiB) was picked over LoRA+ (2,375 MiB, 0.86x the cost) on 4 MiB of noise.
    mib = 2**20
    cell(tmp_path, "rslora", scores(0.52, 1), peak=2371 * mib, train_s=100)
    cell(tmp_path, "lora+", scores(0.51, 2), peak=2375 * mib, train_s=80)
    rec = only(tmp_path)
    assert (rec.method, rec.best) == ("lora+", "rslora")
    # cost: rslora 100 + 1000 x 5 / 40 = 225, lora+ 80 + 125 = 205; 205 / 225 = 0.91; peak 2375 / 2371 = 1.00
    assert "at 1.00x its peak memory and 0.91x its cost" in rec.text
    wider = tmp_path / "wider"
    cell(wider, "rslora", scores(0.52, 1), peak=2371 * mib, train_s=100)
    cell(wider, "lora+", scores(0.51, 2), peak=int(2371 * 1.03) * mib, train_s=80)  # 3% more memory: not a tie
    assert only(wider).method == "rslora"


def test_cost_is_training_once_plus_a_thousand_queries_not_the_test_sets_wall_time(tmp_path):
    """A few-shot row pays at every query: over its 40 test queries it took less wall time than lora's training and
    evaluation, yet over 1,000 queries it costs more, and the rule picks lora."""
    few = {"train_s": 0.0, "eval_s": 30.0}
    lora = {"train_s": 100.0, "eval_s": 5.0}
    cell(tmp_path, "fewshot", scores(0.52, 1), peak=GIB, finetune="none", fields={"shots": 3}, **few)
    cell(tmp_path, "lora", scores(0.50, 2), peak=GIB, **lora)
    assert sum(few.values()) < sum(lora.values())  # the wall-time rule would have picked fewshot
    rec = only(tmp_path)
    assert (rec.method, rec.best) == ("lora", "fewshot")
    # cost: fewshot 0 + 1000 x 30 / 40 = 750, lora 100 + 1000 x 5 / 40 = 225; 225 / 750 = 0.30
    assert ("recommend lora: rougeL within the CI of fewshot (" in rec.text and ") at 1.00x its peak memory and "
            "0.30x its cost (training s + eval s of 1,000 queries)." in rec.text)


def test_prompting_is_weighed_against_the_best_trained_method_that_prompts_plainly(tmp_path):
    """rag against lora (no shots, no retrieval), not against lora:retrieve=3, which mixes the two; the best overall
    is named besides."""
    methods = {  # name: (scores, finetune, fields, train s, prompt tokens, eval s per query); means 0.10 to 0.85
        "base": ([0.05, 0.15] * 20, "none", {}, 0.0, 90.0, 0.08),
        "rag": ([0.40, 0.50] * 20, "none", {"retrieve": 3}, 0.0, 310.0, 0.2),
        "lora": ([0.55, 0.65] * 20, "lora", {}, 95.0, 100.0, 0.1),
        "lora:retrieve=3": ([0.80, 0.90] * 20, "lora", {"retrieve": 3}, 120.0, 320.0, 0.25),
    }
    for name, (values, finetune, fields, train_s, tokens, per_query) in methods.items():
        cell(tmp_path, name, values, peak=GIB, train_s=train_s, eval_s=per_query * N, finetune=finetune,
             fields=fields, prompts={"examples": N, "prompt_tokens_mean": tokens, "eval_s_per_example": per_query})
    rec = only(tmp_path)
    assert rec.best == "lora:retrieve=3"
    # rougeL 0.45 / 0.60 = 0.75; prompt tokens 310 / 100 = 3.1; eval s per query 0.2 / 0.1 = 2.0
    assert " rag reaches 0.75x lora's rougeL with no training (" in rec.text
    assert ("), at 3.1x the prompt tokens and 2.0x the eval seconds per query (lora trained for 95 s); the best "
            "overall is lora:retrieve=3 (rougeL 0.850).") in rec.text


def test_a_prompting_method_that_beats_the_trained_one_comes_with_their_paired_difference(tmp_path):
    # means 0.6 and 0.3; example by example rag is 0.3, 0.3, 0.2, 0.4 above lora
    methods = {"rag": ([0.5, 0.7, 0.6, 0.6] * 10, "none", {"retrieve": 3}, 0.0),
               "lora": ([0.2, 0.4, 0.4, 0.2] * 10, "lora", {}, 95.0)}
    for name, (values, finetune, fields, train_s) in methods.items():
        cell(tmp_path, name, values, peak=GIB, train_s=train_s, eval_s=0.1 * N, finetune=finetune, fields=fields,
             prompts={"examples": N, "prompt_tokens_mean": 100.0, "eval_s_per_example": 0.1})
    text = only(tmp_path).text
    # the ratio of two figures (0.6 / 0.3 = 2.00) comes with their paired difference (+0.300), and says when it is
    # not significant
    assert " rag reaches 2.00x lora's rougeL with no training (+0.300 [" in text
    assert "not significant" not in text.split("with no training")[1]
    close = tmp_path / "close"  # a ratio over 1 from noise alone is said to be not significant
    for name, mean, seed, finetune, fields in (("rag", 0.31, 12, "none", {"retrieve": 3}),
                                               ("lora", 0.30, 112, "lora", {})):
        cell(close, name, scores(mean, seed), peak=GIB, train_s=95.0 if finetune == "lora" else 0.0, eval_s=0.1 * N,
             finetune=finetune, fields=fields, prompts={"examples": N, "eval_s_per_example": 0.1})
    said = only(close).text.split("with no training")[1]
    assert said.startswith(" (+0.015 [") and ", not significant)" in said  # rag's mean is above lora's, by noise


def test_the_report_says_when_a_cell_dropped_shots_to_fit(tmp_path):
    shots = {"asked": 3, "select": "random", "pool": 8, "mean_kept": 2.25, "rows_with_shots_dropped": 20,
             "shots_dropped": 30}
    cell(tmp_path, "fewshot", scores(0.5, 1), peak=GIB, finetune="none", fields={"shots": 3},
         prompts={"examples": N, "shots": shots})
    cell(tmp_path, "fewshot:shots=1", scores(0.5, 2), peak=GIB, finetune="none", fields={"shots": 1},
         prompts={"examples": N, "shots": {**shots, "asked": 1, "mean_kept": 1.0, "rows_with_shots_dropped": 0,
                                             "shots_dropped": 0}})
    md = markdown(load_records(tmp_path), "t")
    assert (f"Shots of cnn x fewshot: 20 of {N} test prompts dropped shots to fit --max-seq-len 512 (30 in all; "
            f"{shots['mean_kept']:.1f} of 3 kept on average).") in md
    assert "Shots of cnn x fewshot:shots=1" not in md  # a cell that kept every shot gets no line


def test_the_base_model_can_win(tmp_path):
    cell(tmp_path, "base", scores(0.50, 1), peak=GIB, train_s=0.0, finetune="none")
    cell(tmp_path, "lora", scores(0.51, 2), peak=2 * GIB)
    rec = only(tmp_path)
    assert rec.method == "base" and rec.best == "lora"
    assert "The base model wins: no fine-tuned method is significantly better on rougeL." in rec.text


def test_a_budget_rules_out_the_best_method(tmp_path):
    cell(tmp_path, "full", scores(0.80, 1), peak=20 * GIB)
    cell(tmp_path, "lora", scores(0.60, 1), peak=6 * GIB, train_s=3 * 3600)
    cell(tmp_path, "qlora", scores(0.40, 1), peak=3 * GIB)
    assert only(tmp_path).method == "full"
    rec = only(tmp_path, "memory=16GiB")
    assert (rec.method, rec.best, rec.ruled_out) == ("lora", "lora", ("full",))
    assert "Ruled out by the budget (memory=16GiB): full (peak 20.0 GiB > 16.0 GiB)." in rec.text
    rec = only(tmp_path, "memory=16GiB,time=2h")
    assert rec.method == "qlora" and rec.ruled_out == ("full", "lora")
    assert "lora (wall time 3.0 h > 2.0 h)" in rec.text and "the only method within the budget" in rec.text


def test_nothing_within_the_budget(tmp_path):
    cell(tmp_path, "lora", scores(0.6, 1), peak=6 * GIB)
    cell(tmp_path, "qlora", scores(0.5, 1), peak=3 * GIB)
    rec = only(tmp_path, "memory=2GiB")
    assert rec.method is None and rec.ruled_out == ("lora", "qlora")
    assert rec.text == ("cnn: nothing fits the budget (memory=2GiB): lora (peak 6.00 GiB > 2.00 GiB), "
                        "qlora (peak 3.00 GiB > 2.00 GiB).")


def test_lower_is_better_main_metric_takes_its_direction_from_the_registry(tmp_path):
    kw = {"task": "fever", "metric": "mean_steps"}  # registered as lower is better
    cell(tmp_path, "lora", [2.0] * 30 + [5.0] * 10, peak=4 * GIB, **kw)
    cell(tmp_path, "qlora", [2.0] * 10 + [5.0] * 30, peak=GIB, **kw)
    rec = only(tmp_path)
    assert rec.method == "lora" and "qlora is significantly worse (+1.500" in rec.text


def test_seeds_with_a_pooled_aggregation(tmp_path):
    """Perplexity aggregates (nll, tokens) pairs, not a mean: the resampling path for any aggregation."""
    rng = np.random.default_rng(0)
    kw = {"task": "guanaco", "metric": "ref_perplexity"}
    for seed in (0, 1):
        cell(tmp_path, "lora", [(float(x), 10) for x in rng.uniform(20, 30, N)], peak=2 * GIB, seed=seed, **kw)
        cell(tmp_path, "qlora", [(float(x), 10) for x in rng.uniform(25, 35, N)], peak=GIB, seed=seed, **kw)
    records = load_records(tmp_path)
    lora = next(r for r in collapse(records) if r["method"] == "lora")["metrics"]["quality"]["ref_perplexity"]
    assert lora["ci_low"] < lora["value"] < lora["ci_high"] and lora["n_seeds"] == 2
    rec = only(tmp_path)
    assert rec.method == "lora" and "qlora is significantly worse (+" in rec.text and "2 seeds)" in rec.text


@pytest.mark.parametrize("text, match", [
    ("memory16GiB", "must be KEY=VALUE pairs"),
    ("gpu=16GiB", "key 'gpu' is not known"),
    ("memory=16GiB,memory=8GiB", "names memory twice"),
    ("memory=lots", "--budget memory 'lots' is not a size"),
    ("time=2 hours", "--budget time '2 hours' is not a duration; write e.g. 90s, 30m or 2h"),
    ("time=0h", "is not a duration"),
    ("", "must be KEY=VALUE pairs"),
])
def test_budget_parsing_errors_are_one_line(text, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_budget(text)
    assert "\n" not in str(err.value)


def test_budget_parsing():
    b = parse_budget("memory=16GiB, time=2h")
    assert (b.memory_bytes, b.time_s) == (16 * GIB, 7200.0)
    assert parse_budget("time=90s").time_s == 90 and parse_budget("time=30m").time_s == 1800
    assert parse_budget("memory=512MiB").memory_bytes == 512 * 2**20 and parse_budget(None) is None
    with pytest.raises(ConfigError, match="not a duration"):
        RunConfig(budget="time=soon")  # checked with the rest of the config, before any cell runs


def test_seeds_are_averaged_with_their_spread(tmp_path):
    for seed, low in ((0, 0.45), (1, 0.51), (2, 0.48)):  # seed means 0.50, 0.56, 0.53
        cell(tmp_path, "lora", [low, low + 0.1] * (N // 2), peak=(2 + seed) * GIB, seed=seed)
    cell(tmp_path, "qlora", scores(0.3, 5), peak=GIB)
    records = load_records(tmp_path)
    row = next(r for r in collapse(records) if r["method"] == "lora")
    q = row["metrics"]["quality"]["rougeL"]
    # mean (0.50 + 0.56 + 0.53) / 3 = 0.53; standard deviation between seeds sqrt((0.03^2 + 0.03^2 + 0) / 2) = 0.03
    assert q["value"] == pytest.approx(0.53) and q["n_seeds"] == 3
    assert q["spread"] == pytest.approx(0.03)
    assert q["ci_low"] < q["value"] < q["ci_high"]
    assert row["metrics"]["measurements"]["memory"]["peak_bytes"] == 3 * GIB  # mean of 2, 3, 4 GiB
    _, rows = task_tables(records)["cnn"]
    assert [r[0] for r in rows] == ["lora", "qlora"]
    assert rows[0][1] == f"0.530 ±0.030 (3 seeds) [{q['ci_low']:.3f}, {q['ci_high']:.3f}]"
    assert "±" not in rows[1][1]  # the one-seed method looks as before
    md = markdown(records, "t", recommendations=paragraphs(records))
    assert "the standard deviation between seeds" in md and "**Recommendation.** cnn: recommend lora" in md


def test_identical_seeds_give_the_one_seed_ci(tmp_path):
    """Seed replicates of the same examples add no examples: the cluster bootstrap does not narrow the CI."""
    values = scores(0.5, 3)
    cell(tmp_path / "one", "lora", values, peak=GIB, seed=0)
    for seed in (0, 1, 2):
        cell(tmp_path / "three", "lora", values, peak=GIB, seed=seed)
    one = load_records(tmp_path / "one")[0]["metrics"]["quality"]["rougeL"]
    lo, hi = seed_mean_ci(load_records(tmp_path / "three"), "rougeL", "mean", 500)
    assert (lo, hi) == (pytest.approx(one["ci_low"]), pytest.approx(one["ci_high"]))


def test_paired_comparison_pairs_by_seed_and_example():
    a = {0: {"x": 0.5, "y": 0.7, "z": 0.2}, 1: {"x": 0.6, "y": 0.8, "z": 0.3}}
    b = {0: {"x": 0.4, "y": 0.6, "z": 0.1}, 1: {"x": 0.5, "y": None, "z": 0.2}, 2: {"x": 0.0, "y": 0.0, "z": 0.0}}
    res = paired_over_seeds(a, b, "mean", n_boot=200)
    assert res["n_seeds"] == 2 and res["n"] == 5  # seed 2 has no partner; (1, y) has no value in b
    assert res["diff"] == pytest.approx(0.1) and res["ci_low"] == pytest.approx(0.1)  # every pair differs by 0.1
    one = paired_over_seeds({0: a[0]}, {0: b[0]}, "mean", n_boot=200)
    assert one == {**paired_bootstrap([0.5, 0.7, 0.2], [0.4, 0.6, 0.1], "mean", 200, 0), "n_seeds": 1}


def test_recommendation_uses_every_seed(tmp_path):
    for seed in (0, 1):
        cell(tmp_path, "lora", scores(0.55, 20 + seed), peak=4 * GIB, seed=seed)
        cell(tmp_path, "qlora", scores(0.54, 30 + seed), peak=GIB, seed=seed)
    records = load_records(tmp_path)
    rec = only(tmp_path)
    assert rec.method == "qlora" and "lora is within its CI (" in rec.text and ", 2 seeds) but needs 4.00x" in rec.text
    from harness.report.compare import paired_comparisons
    (row,) = paired_comparisons(records, n_boot=500)
    assert row["n"] == 2 * N and row["n_seeds"] == 2


def test_report_files_and_the_report_command(tmp_path, capsys):
    import csv

    from harness.cli import main

    for seed in (0, 1):
        cell(tmp_path, "lora", scores(0.7, 40 + seed), peak=4 * GIB, seed=seed)
    cell(tmp_path, "qlora", scores(0.69, 50), peak=GIB)
    assert main(["report", str(tmp_path), "--budget", "memory=2GiB"]) == 0
    err = capsys.readouterr().err
    assert "cnn: recommend qlora: the best rougeL" in err and "Ruled out by the budget (memory=2GiB): lora" in err
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    assert "**Recommendation.** cnn: recommend qlora" in md and "(2 seeds)" in md
    assert "<p class='rec'><b>Recommendation.</b> cnn: recommend qlora" in page
    assert page.index("alt='quality_vs_memory cnn'") < page.index("class='rec'")  # beside the Pareto plot
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [(r["method"], r["seed"]) for r in rows] == [("lora", "0"), ("lora", "1"), ("qlora", "0")]
    assert main(["report", str(tmp_path), "--budget", "memory=2GB,time=forever"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --budget time 'forever' is not a duration; write e.g. 90s, "
                                               "30m or 2h")


def test_one_seed_summary_has_no_seed_column(tmp_path):
    import csv

    from harness.report.document import write_reports

    cell(tmp_path, "lora", scores(0.7, 1), peak=GIB)
    write_reports(tmp_path, load_records(tmp_path))
    assert "seed" not in next(csv.DictReader((tmp_path / "summary.csv").open()))
    assert "Seeds:" not in (tmp_path / "report.md").read_text()
