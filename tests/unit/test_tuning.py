"""The search per method: the space a run config makes, how a range widens at its edge, the cells a tuned run
plans, and the choice from records."""

import pytest

from harness.cli.plan import tuning_cost
from harness.core.errors import ConfigError
from harness.execute.study import further, say_edges
from harness.plan.matrix import chosen_cells, plan, run_size, trial_cells
from harness.records.tuning import Trial, choose, edge_findings, tunings, unexplored_words
from harness.spec.config import HASHED_WHEN_SET, RunConfig
from harness.spec.resolve import resolve
from harness.spec.search import Dim
from harness.spec.task import get_task


def test_tune_names_settings_each_method_searches_over_its_default_range_where_it_has_them():
    cfg = RunConfig(methods=("base", "full", "lora", "fewshot"), tune="lr,lora_r,lora_alpha,epochs,shots")
    full, lora, few = cfg.searches["full"], cfg.searches["lora"], cfg.searches["fewshot"]
    assert "base" not in cfg.searches
    assert full.describe() == "lr 5e-06..0.0005 (log), epochs 1..3"  # two decades around 5e-5
    assert set(full.left_out) == {"lora_r", "lora_alpha", "shots"}
    assert full.left_out["lora_r"] == "full trains no LoRA adapter"
    assert lora.describe() == ("lr 0.0001..0.01 (log), lora_r 4..64 (powers of 2), lora_alpha 1..2 x lora_r (powers "
                               "of 2), epochs 1..3")
    assert few.describe() == "shots 1..6" and set(few.left_out) == {"lr", "lora_r", "lora_alpha", "epochs"}
    assert not RunConfig(methods=("full", "lora")).needs_validation
    assert RunConfig(methods=("lora",), tune="lr").needs_validation


def test_a_method_writes_its_own_range_or_grid_in_its_text_and_in_yaml(tmp_path):
    cfg = RunConfig(methods=("full", "lora:lr=1e-4..1e-2:lora_r=8|16", "qlora4:epochs=1..2"), tune="lr")
    assert cfg.searches["lora"].describe() == "lr 0.0001..0.01 (log), lora_r 8|16 (grid)"
    yaml = tmp_path / "run.yaml"  # a mapping per method, or the method text, as a YAML list entry
    yaml.write_text("tune: lr\nmethods:\n  - full\n  - {name: lora, lr: 1e-4..1e-2, lora_r: 8|16}\n"
                    "  - qlora4:epochs=1..2\n  - name: qlora\n    lr: 3e-4|1e-3|3e-3\n")
    from_yaml = resolve({}, str(yaml))
    assert {k: s.describe() for k, s in from_yaml.searches.items()} == {
        **{k: s.describe() for k, s in cfg.searches.items()}, "qlora": "lr 0.0003|0.001|0.003 (grid)"}
    assert from_yaml.searches["qlora"].is_grid and [s.name for s in from_yaml.specs] == ["full", "lora", "qlora4",
                                                                                        "qlora"]
    yaml.write_text("methods:\n  - {name: lora, lr: 1e-2..1e-4}\n")
    with pytest.raises(ConfigError, match="lr=1e-2..1e-4 runs from high to low"):
        resolve({}, str(yaml))
    assert [s.name for s in cfg.specs] == ["full", "lora", "qlora4"]  # the search is not part of the name
    assert cfg.searches["qlora4"].describe() == "lr 0.0001..0.01 (log), epochs 1..2"
    grid = RunConfig(methods=("lora:lr=3e-4|1e-3|3e-3",)).searches["lora"]
    assert grid.is_grid and grid.grid() == [{"lr": 3e-4}, {"lr": 1e-3}, {"lr": 3e-3}]
    shared = RunConfig(methods=("full", "lora"), tune="lr=1e-5,2e-4").searches  # the earlier form: one grid
    assert shared["full"].grid() == shared["lora"].grid() == [{"lr": 1e-5}, {"lr": 2e-4}]
    fixed = RunConfig(methods=("lora:lora_r=8:lora_alpha=16:epochs=2",)).specs[0]
    assert (fixed.lora_r, fixed.lora_alpha, fixed.epochs) == (8, 16, 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"methods": ("full",), "tune": "lora_r"}, "--tune lora_r: no method of the run has lora_r (full trains no LoRA"),
    ({"methods": ("lora",), "tune": "rank"}, "--tune 'rank': rank cannot be searched; name settings from lr,"),
    ({"methods": ("lora",), "tune": "lr", "tune_trials": 0}, "--tune-trials must be a positive integer, got 0"),
    ({"methods": ("lora:lr=1e-2..1e-4",)}, "lr=1e-2..1e-4 runs from high to low; write the low end first"),
    ({"methods": ("lora:lr=a..b",)}, "lr value 'a' is not a number"),
    ({"methods": ("lora:lr=1e-4..1e-3..1e-2",)}, "is not a range LOW..HIGH"),
    ({"methods": ("lora:lr=nan..1e-2",)}, "lr value 'nan' is not a positive finite number"),
    ({"methods": ("lora:lr=1e-3|inf",)}, "lr value 'inf' is not a positive finite number"),
    ({"methods": ("lora",), "tune": "lr=1e-3,nan"}, "lr value 'nan' is not a positive finite number"),
    ({"methods": ("lora",), "lr": float("nan")}, "--lr must be a positive finite number"),
    ({"methods": ("lora",), "lr": float("inf")}, "--lr must be a positive finite number"),
    ({"methods": ("lora:lr=inf",)}, "lr must be a finite number"),
    ({"methods": ("lora",), "tune": "lr=1e-3"}, "at least two different values"),
    ({"methods": ("lora:lora_r=4|4",)}, "at least two different values"),
    ({"methods": ("lora:lora_r=2.5|4",)}, "lora_r value '2.5' is not a whole number of at least 1"),
    ({"methods": ("fewshot:shots=1|2.5",)}, "shots value '2.5' is not a whole number of at least 1"),
    ({"methods": ("base:lr=1e-4|1e-3",)}, "lr cannot be searched: base does not train"),
    ({"methods": ("full:lora_r=4|8",)}, "lora_r cannot be searched: full trains no LoRA adapter"),
    ({"methods": ("lora:lora_target_modules=q_proj|v_proj",)}, "lora_target_modules cannot be searched"),
    ({"methods": ("lora",), "tune": "lr", "lr": 1e-3}, "--lr fixes the learning rate"),
    ({"methods": ("lora",), "early_stop": 0}, "--early-stop must be a positive integer"),
])
def test_a_bad_search_is_one_clear_error(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("|", r"\|").replace(".", r"\.")):
        RunConfig(**kwargs)


def test_a_range_widens_one_step_towards_the_edge_its_best_sits_at():
    lr = Dim("lr", "log", 1e-4, 1e-2)
    assert lr.edge(9e-3) == "high" and lr.edge(1.2e-4) == "low" and lr.edge(1e-3) is None
    assert lr.extend("high").span == pytest.approx((1e-4, 1e-1))  # half the log width: a decade
    rank = Dim("lora_r", "pow2", 2, 6)
    assert rank.value(6) == 64 and rank.edge(6) == "high" and rank.extend("high").describe() == \
        "lora_r 4..128 (powers of 2)"
    alpha = Dim("lora_alpha", "pow2", 0, 1, ratio=True)
    assert alpha.value(1, lora_r=16) == 32 and alpha.edge(0) is None  # alpha does not go below the rank
    shots = Dim("shots", "int", 1, 6)
    assert shots.edge(1) is None and shots.edge(6) == "high" and shots.extend("high").span == (1, 8)
    grid = Dim("lr", "grid", choices=(1e-4, 1e-3, 1e-2))
    assert grid.edge(1e-2) == "high" and grid.extend("high").choices == (1e-4, 1e-3, 1e-2, 0.1)
    assert grid.extend("low").choices == (1e-5, 1e-4, 1e-3, 1e-2)
    assert further(grid, "high") == "--methods 'METHOD:lr=0.0001|0.001|0.01|0.1'"
    assert further(lr, "high") == "--methods 'METHOD:lr=0.0001..0.1'"


def _searched(chosen_rank: int, tried: dict, widened: bool = True) -> dict:
    """A search record of lora_r (searched 2..64 after widening from 4..64, or 4..64 as written): ``tried`` maps each
    trial's rank to its state; trial numbers follow the order given."""
    exponent = {2: 1, 4: 2, 8: 3, 16: 4, 32: 5, 64: 6}
    trials = [{"number": n, "state": state, "drawn": {"lora_r": exponent[rank]}}
              for n, (rank, state) in enumerate(tried.items())]
    return {"searched": {"lora_r": Dim("lora_r", "pow2", 1 if widened else 2, 6).to_dict()}, "trials": trials,
            "widened": [{"after_trial": 0, "key": "lora_r", "side": "low"}] if widened else [],
            "chosen": list(tried).index(chosen_rank)}


def test_a_best_at_the_bound_of_its_range_as_widened_is_an_edge_and_one_the_budget_never_reached_past_is_not():
    at_bound = _searched(2, {4: "complete", 2: "complete", 16: "complete"})
    assert edge_findings(at_bound, at_bound["chosen"]) == ({"lora_r": "low"}, {})
    short = _searched(4, {4: "complete", 16: "complete", 64: "pruned"})  # widened to 2, but no trial at 2 ran
    assert edge_findings(short, short["chosen"]) == ({}, {"lora_r": {"side": "low", "value": "4", "failed": 0,
                                                                     "to": "lora_r 2..64 (powers of 2)"}})
    assert unexplored_words(edge_findings(short, 0)[1]["lora_r"]) == (
        "widened to lora_r 2..64 (powers of 2), but the budget ended before a trial below 4 ran")
    failed = _searched(4, {4: "complete", 2: "failed"})
    assert unexplored_words(edge_findings(failed, 0)[1]["lora_r"]).endswith(
        "but every trial below 4 (1) failed before the budget ended")
    for inside in (_searched(4, {4: "complete", 2: "complete"}),  # the widened part was tried and held nothing better
                   _searched(8, {8: "complete", 4: "complete", 64: "complete"}, widened=False)):
        assert edge_findings(inside, inside["chosen"]) == ({}, {})
    assert edge_findings(at_bound, None) == ({}, {})  # no trial completed: nothing to say


def test_the_terminal_says_an_edge_and_a_budget_that_ended_before_the_widened_part_apart(tmp_path, capsys):
    cfg = RunConfig(tasks=("cnn",), methods=("lora",), tune="lora_r", out=str(tmp_path), run_name="r")
    dims = {"lora_r": Dim("lora_r", "pow2", 1, 6)}
    for record in (_searched(2, {4: "complete", 2: "complete"}), _searched(4, {4: "complete", 16: "complete"})):
        record["edges"], record["unexplored"] = edge_findings(record, record["chosen"])
        say_edges(record, "cnn/lora", dims, cfg.specs[0].name, cfg.run_dir)
    edge, short = capsys.readouterr().err.replace("\n", " ").split("warning: ")[1:]
    assert edge.startswith("search cnn/lora: the chosen trial 1 still sits at the low edge of lora_r 2..64 (powers")
    assert short.startswith("search cnn/lora: lora_r widened to lora_r 2..64 (powers of 2), but the budget ended "
                            "before a trial below 4 ran; rerun with more --tune-trials and --run-name r")
    assert "edge" not in short


def test_new_settings_left_at_their_defaults_keep_the_run_name():
    """Settings added after run names existed are hashed only when set, so an older command resumes its folder."""
    cfg = RunConfig(methods=("base", "lora"))
    assert cfg.default_run_name() == RunConfig(methods=("base", "lora"), tune=None, drop_overlap=False,
                                               trl_changes=True, tune_trials=6,
                                               resample_train=False).default_run_name()
    for changed in ({"tune": "lr"}, {"drop_overlap": True}, {"early_stop": 2}, {"trl_changes": False},
                    {"tune": "lr", "tune_trials": 3}, {"resample_train": True}):
        assert RunConfig(methods=("base", "lora"), **changed).default_run_name() != cfg.default_run_name(), changed
    assert {"tune", "drop_overlap", "early_stop", "validation_fraction", "tune_trials"} <= set(HASHED_WHEN_SET)


def test_a_tuned_method_plans_no_cell_until_its_search_makes_trials_then_its_chosen_test_cell(tmp_path):
    cfg = RunConfig(tasks=("cnn",), methods=("base", "lora:lr=1e-4|1e-3"), seeds=(0, 1), out=str(tmp_path))
    cells = plan(cfg)
    assert [c.spec.folder for c in cells] == ["base-seed0", "base-seed1"]
    trial = trial_cells(cfg, get_task("cnn"), cfg.specs[1], {"study": "cnn/lora", "number": 1,
                                                             "params": {"lr": 1e-3}, "prune": None})
    assert [c.spec.folder for c in trial] == ["lora.trial1-seed0", "lora.trial1-seed1"]
    spec = trial[0].spec
    assert spec.hyperparameters["lr"] == 1e-3 and spec.hyperparameters["eval_split"] == "validation"
    assert spec.hyperparameters["save"] is None and spec.tuning["role"] == "trial" and spec.tuning["by"] == "rougeL"
    assert spec.label == "cnn x lora trial 1: lr=0.001 (tuning) seed 0"
    final = chosen_cells(cfg, {("cnn", "lora"): {"number": 1, "params": {"lr": 1e-3}}})
    assert [c.spec.folder for c in final] == ["lora-seed0", "lora-seed1"]
    assert final[0].spec.hyperparameters["lr"] == 1e-3 and not final[0].spec.is_tuning
    assert final[0].spec.tuning == {"role": "chosen", "study": "cnn/lora", "number": 1, "params": {"lr": 1e-3},
                                    "by": "rougeL"}
    assert run_size(cfg) == 2 + 2 * (6 + 1)  # a 2-point grid may widen up to the 6 trials of the budget
    # a trial's rank and alpha stand in for the run's in that cell alone
    lora = RunConfig(tasks=("cnn",), methods=("lora",), tune="lora_r", out=str(tmp_path))
    (c,) = trial_cells(lora, get_task("cnn"), lora.specs[0], {"study": "cnn/lora", "number": 0,
                                                             "params": {"lora_r": 8, "lora_alpha": 8}, "prune": None})
    assert (c.spec.run.lora_r, c.spec.run.lora_alpha) == (8, 8) and c.spec.hyperparameters["lora_r"] == 8
    # the provenance is not hashed: the test cell of a chosen trial is the cell an untuned run would make
    untuned = plan(RunConfig(tasks=("cnn",), methods=("base", "lora:lr=1e-3"), seeds=(0, 1), out=str(tmp_path),
                             validation_limit=32, validation_fraction=0.1, tune=None))
    assert untuned[2].spec.hyperparameters == {k: v for k, v in final[0].spec.hyperparameters.items()
                                               if k not in ("validation_limit", "validation_fraction")}


def _record(number, seed, rouge, loss, status="ok", params=None, by="rougeL"):
    metrics = None if status != "ok" else {
        "main_metric": "rougeL", "quality": {"rougeL": {"value": rouge, "n": 8}, "loss": {"value": loss, "n": 8}}}
    return {"task": "cnn", "method": "lora", "status": {"status": status}, "metrics": metrics,
            "dir": f"/nowhere/cnn/lora.trial{number}",
            "config": {"tuning": {"role": "trial", "study": "cnn/lora", "number": number,
                                  "params": params or {"lr": 10.0 ** -(4 - number)}, "by": by},
                       "hyperparameters": {"seed": seed}}}


def test_the_choice_is_the_best_mean_over_seeds_and_ignores_pruned_and_failed_trials():
    recs = [_record(0, 0, 0.30, 2.0), _record(0, 1, 0.50, 2.0),  # mean 0.40
            _record(1, 0, 0.45, 1.0), _record(1, 1, 0.44, 1.0),  # mean 0.445
            _record(2, 0, 0.90, 3.0), _record(2, 1, None, 3.0, "failed"),  # the best seed, but a seed failed
            _record(3, 0, None, None, "pruned"), _record(3, 1, None, None, "pruned")]
    (t,) = tunings(recs)
    assert t.chosen == 1 and [x.state for x in t.trials] == ["complete", "complete", "failed", "pruned"]
    assert t.trials[0].measure == pytest.approx(0.40) and t.trials[3].measure is None and t.validation_rows == 8
    by_loss = tunings([dict(r, config={**r["config"], "tuning": {**r["config"]["tuning"], "by": "loss"}})
                       for r in recs])[0]
    assert by_loss.chosen == 1  # the lowest loss


def test_a_tie_goes_to_the_lower_validation_loss_then_to_the_earlier_trial():
    trials = (Trial(0, {}, "complete", 0.0, 1, 0.0, 5.0), Trial(1, {}, "complete", 0.0, 1, 0.0, 4.0),
              Trial(2, {}, "complete", 0.0, 1, 0.0, 4.0), Trial(3, {}, "pruned", None, 0, None, 1.0))
    assert choose(trials, higher_is_better=True) == 1
    assert choose((Trial(0, {}, "failed", None, 0, None, None),), True) is None


def test_plan_multiplies_a_tuned_methods_time_by_its_trials_and_says_so():
    cfg = RunConfig(methods=("base", "full", "lora:lr=1e-4|1e-3"), tune="lr", seeds=(0, 1), tune_trials=4)
    base, full, lora = cfg.specs
    assert tuning_cost(cfg, base) == "; the run runs it 2 times (once for each of 2 seeds): 2x this time"
    assert tuning_cost(cfg, full) == ("; the run trains it 10 times (4 trials over lr 5e-06..0.0005 (log) on "
                                      "validation, then the chosen one on test; each for 2 seeds): 10x this time")
    assert "10x this time" in tuning_cost(cfg, lora)
    assert tuning_cost(RunConfig(methods=("lora",)), RunConfig(methods=("lora",)).specs[0]) == ""
