"""Tuning per method: the grids a run config makes, the cells a tuned run plans, and the choice from records."""

import pytest

from harness.core.errors import ConfigError
from harness.plan.matrix import chosen_cells, plan, run_size
from harness.records.tuning import Point, choose, tunings
from harness.spec.config import HASHED_WHEN_SET, RunConfig


def test_tune_lr_gives_each_trained_method_three_rates_around_its_own():
    cfg = RunConfig(methods=("base", "full", "lora", "qlora4"), tune="lr")
    assert cfg.grids == {"full": ("lr", (1.67e-05, 5e-05, 1.5e-04)), "lora": ("lr", (3.33e-4, 1e-3, 3e-3)),
                         "qlora4": ("lr", (3.33e-4, 1e-3, 3e-3))}
    assert RunConfig(methods=("full", "lora"), tune="lr=1e-5,2e-4").grids == {"full": ("lr", (1e-5, 2e-4)),
                                                                               "lora": ("lr", (1e-5, 2e-4))}
    # a method's own grid wins, and only it is tuned without --tune
    mixed = RunConfig(methods=("full", "lora:lr=3e-4|1e-3|3e-3"), tune="lr=1e-5,5e-5")
    assert mixed.grids == {"full": ("lr", (1e-5, 5e-5)), "lora": ("lr", (3e-4, 1e-3, 3e-3))}
    assert [s.name for s in mixed.specs] == ["full", "lora"]
    assert RunConfig(methods=("full", "lora:lr=3e-4|1e-3")).grids == {"lora": ("lr", (3e-4, 1e-3))}
    # the prompt's shots and passages take grids too, on any method
    assert RunConfig(methods=("fewshot:shots=1|3|5", "rag:retrieve=1|2")).grids == {
        "fewshot": ("shots", (1, 3, 5)), "rag": ("retrieve", (1, 2))}
    assert not RunConfig(methods=("full", "lora")).needs_validation
    assert RunConfig(methods=("lora",), early_stop=2).needs_validation


@pytest.mark.parametrize("kwargs, message", [
    ({"methods": ("lora",), "tune": "r"}, "only the learning rate can be tuned"),
    ({"methods": ("lora",), "tune": "lr=1e-3"}, "at least two different values"),
    ({"methods": ("lora",), "tune": "lr=1e-3,x"}, "'x' is not a positive finite number"),
    ({"methods": ("lora",), "tune": "lr=1e-3,nan"}, "'nan' is not a positive finite number"),
    ({"methods": ("lora:lr=1e-3|inf",)}, "'inf' is not a positive finite number"),
    ({"methods": ("fewshot:shots=1|2.5",)}, "'2.5' is not a whole number of at least 1"),
    ({"methods": ("rag:retrieve=0|3",)}, "'0' is not a whole number of at least 1"),
    ({"methods": ("lora",), "lr": float("nan")}, "--lr must be a positive finite number"),
    ({"methods": ("lora",), "tune": "lr", "lr": 1e-3}, "--lr fixes the learning rate"),
    ({"methods": ("base",), "tune": "lr"}, "--methods has none"),
    ({"methods": ("base:lr=1|2",)}, "base does not train"),
    ({"methods": ("lora:lora_target_modules=q_proj|v_proj",)}, "only lr, shots, retrieve take a grid"),
    ({"methods": ("lora",), "early_stop": 0}, "--early-stop must be a positive integer"),
    ({"methods": ("lora",), "validation_fraction": 1.0}, "--validation-fraction must be between 0 and 1"),
])
def test_a_bad_grid_is_one_clear_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**kwargs)


def test_new_settings_left_at_their_defaults_keep_the_run_name():
    """Settings added after run names existed are hashed only when set, so an older command resumes its folder."""
    cfg = RunConfig(methods=("base", "lora"))
    assert cfg.default_run_name() == RunConfig(methods=("base", "lora"), tune=None, drop_overlap=False,
                                               trl_changes=True).default_run_name()
    for changed in ({"tune": "lr"}, {"drop_overlap": True}, {"early_stop": 2}, {"trl_changes": False}):
        assert RunConfig(methods=("base", "lora"), **changed).default_run_name() != cfg.default_run_name(), changed
    assert {"tune", "drop_overlap", "early_stop", "validation_fraction"} <= set(HASHED_WHEN_SET)


def test_a_tuned_run_plans_a_cell_per_grid_point_and_seed_then_its_test_cell(tmp_path):
    cfg = RunConfig(tasks=("cnn",), methods=("base", "lora:lr=1e-4|1e-3"), seeds=(0, 1), out=str(tmp_path))
    cells = plan(cfg)
    assert [(c.spec.folder, c.spec.is_tuning) for c in cells] == [
        ("base-seed0", False), ("base-seed1", False), ("lora.lr=0.0001-seed0", True), ("lora.lr=0.0001-seed1", True),
        ("lora.lr=0.001-seed0", True), ("lora.lr=0.001-seed1", True)]
    point = cells[2].spec
    assert point.hyperparameters["lr"] == 1e-4 and point.hyperparameters["eval_split"] == "validation"
    assert point.hyperparameters["save"] is None and point.tuning["role"] == "point"
    assert point.tuning["by"] == "rougeL" and point.label == "cnn x lora lr=0.0001 (tuning) seed 0"
    assert "eval_split" not in cells[0].spec.hyperparameters
    final = chosen_cells(cfg, {("cnn", "lora"): 1e-3})
    assert [c.spec.folder for c in final] == ["lora-seed0", "lora-seed1"]
    assert final[0].spec.hyperparameters["lr"] == 1e-3 and not final[0].spec.is_tuning
    assert final[0].spec.tuning == {"role": "chosen", "key": "lr", "value": 1e-3, "grid": [1e-4, 1e-3],
                                    "by": "rougeL"}
    assert run_size(cfg) == len(cells) + len(final) == 8 and cells[0].of == 8
    # the provenance is not hashed: the test cell of a chosen rate is the cell an untuned run would make
    untuned = plan(RunConfig(tasks=("cnn",), methods=("base", "lora:lr=1e-3"), seeds=(0, 1), out=str(tmp_path),
                             validation_limit=32, validation_fraction=0.1, tune=None))
    assert untuned[2].spec.hyperparameters == {k: v for k, v in final[0].spec.hyperparameters.items()
                                               if k not in ("validation_limit", "validation_fraction")}


def _record(task, method, value, seed, rouge, loss, status="ok", grid=(1e-4, 1e-3, 1e-2), by="rougeL"):
    metrics = None if status != "ok" else {
        "main_metric": "rougeL", "quality": {"rougeL": {"value": rouge, "n": 8}, "loss": {"value": loss, "n": 8}}}
    return {"task": task, "method": method, "status": {"status": status}, "metrics": metrics,
            "config": {"tuning": {"role": "point", "key": "lr", "value": value, "grid": list(grid), "by": by},
                       "hyperparameters": {"seed": seed}}}


def test_the_choice_is_the_best_mean_over_seeds_in_the_measures_direction():
    recs = [_record("cnn", "lora", 1e-4, 0, 0.30, 2.0), _record("cnn", "lora", 1e-4, 1, 0.50, 2.0),  # mean 0.40
            _record("cnn", "lora", 1e-3, 0, 0.45, 1.0), _record("cnn", "lora", 1e-3, 1, 0.44, 1.0),  # mean 0.445
            _record("cnn", "lora", 1e-2, 0, 0.90, 3.0), _record("cnn", "lora", 1e-2, 1, None, 3.0, "failed")]
    (t,) = tunings(recs)
    assert t.chosen == 1e-3  # 1e-2 has the best seed but lacks one: it takes no part
    assert [p.measure for p in t.points][2] is None and t.points[2].statuses == ("ok", "failed")
    assert t.points[0].measure == pytest.approx(0.40) and t.validation_rows == 8
    by_loss = tunings([dict(r, config={**r["config"], "tuning": {**r["config"]["tuning"], "by": "loss"}})
                       for r in recs])[0]
    assert by_loss.chosen == 1e-3 and not by_loss.higher_is_better  # the lowest loss


def test_a_tie_goes_to_the_lower_validation_loss_then_to_the_first_point():
    pts = (Point(1e-4, 0.0, 1, ("ok",), 0.0, 5.0), Point(1e-3, 0.0, 1, ("ok",), 0.0, 4.0),
           Point(1e-2, 0.0, 1, ("ok",), 0.0, 4.0))
    assert choose(pts, higher_is_better=True) == 1e-3
    assert choose((Point(1e-4, None, 0, ("failed",), None, None),), True) is None


def test_plan_multiplies_a_tuned_methods_time_by_its_trainings_and_says_so():
    from harness.cli.plan import tuning_cost

    cfg = RunConfig(methods=("base", "full", "lora:lr=1e-4|1e-3"), tune="lr", seeds=(0, 1))
    base, full, lora = cfg.specs
    assert tuning_cost(cfg, base) == "; the run runs it 2 times (once for each of 2 seeds): 2x this time"
    assert tuning_cost(cfg, full).startswith(
        "; the run trains it 8 times (3 grid points (lr = 1.67e-05, 5e-05, 0.00015)")
    assert "6x this time" in tuning_cost(cfg, lora)
    assert tuning_cost(RunConfig(methods=("lora",)), RunConfig(methods=("lora",)).specs[0]) == ""


def test_a_choice_at_the_edge_of_its_grid_says_so_and_how_to_look_further():
    top = [_record("cnn", "lora", v, 0, r, 1.0) for v, r in ((1e-4, 0.1), (1e-3, 0.2), (1e-2, 0.3))]
    (t,) = tunings(top)
    assert t.chosen == 1e-2 and t.edge == "highest"
    assert t.edge_note().endswith("look further with --methods 'lora:lr=0.01|0.03|0.09'")
    middle = [_record("cnn", "lora", v, 0, r, 1.0) for v, r in ((1e-4, 0.1), (1e-3, 0.3), (1e-2, 0.2))]
    assert tunings(middle)[0].edge is None
    bottom = [_record("cnn", "lora", v, 0, r, 1.0) for v, r in ((1e-4, 0.3), (1e-3, 0.2), (1e-2, 0.1))]
    assert tunings(bottom)[0].edge == "lowest"
    assert "'lora:lr=1.11e-05|3.33e-05|0.0001'" in tunings(bottom)[0].edge_note()
