"""The search's design trials (the method's own settings, then every range at its low and at its high end) are never
pruned, so that an edge always gets a value; a later trial is pruned against them as against any complete trial, and
a study stored under the rule before, which pruned design trials too, is refused rather than resumed under two rules.
The pruner is driven as a trial's cell drives it (harness/cell/training.py), without training."""

from types import SimpleNamespace

import optuna
import pytest

from harness.cell.training import _pruning
from harness.core.errors import ConfigError
from harness.core.files import read_json
from harness.execute.search import DESIGN, MethodSearch
from harness.execute.study import check_studies, signature, storage
from harness.records.tuning import search_path
from harness.spec.config import RunConfig
from harness.spec.task import get_task

WORSE = {1: 5.0, 2: 4.0}  # a validation loss above both earlier trials' at every evaluation


def _evaluated(prune: dict, losses: dict) -> tuple[bool, dict]:
    """(stopped, the train.json validation record) of a trial's cell whose evaluations give ``losses``."""
    validation = {}
    callback = _pruning(prune, validation)
    control = SimpleNamespace(should_training_stop=False)
    for step, loss in losses.items():
        callback.on_evaluate(None, SimpleNamespace(global_step=step), control, metrics={"eval_loss": loss})
        if control.should_training_stop:
            break
    return control.should_training_stop, validation


def _search(tmp_path, methods=("lora",), tune="lr") -> tuple:
    cfg = RunConfig(tasks=("cnn",), methods=methods, tune=tune, out=str(tmp_path), run_name="r")
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    return cfg, MethodSearch(cfg, get_task("cnn"), cfg.specs[0], storage(cfg.run_dir))


def _complete(search, trial, losses: dict) -> None:
    for step, loss in losses.items():
        trial.report(loss, step)
    search.study.tell(trial, losses[max(losses)])


def test_a_design_trial_worse_than_the_median_runs_to_the_end_and_a_later_trial_as_bad_is_pruned(tmp_path):
    cfg, search = _search(tmp_path)
    for losses in ({1: 1.0, 2: 0.8}, {1: 1.2, 2: 1.0}):  # the method's own settings, then the low ends: complete
        _complete(search, search._ask(), losses)
    high = search._ask()  # every range at its high end
    prune = search._tuning(high)["prune"]
    stopped, validation = _evaluated(prune, WORSE)
    assert not stopped and "pruned" not in validation and validation["not_pruned"].endswith("it runs to the end")
    assert high.number == 2 < len(DESIGN) and prune["design"] and len(prune["earlier"]) == prune["startup"] == 2
    assert _evaluated({**prune, "design": False}, WORSE)[0]  # the same losses, not exempt: stopped at once
    _complete(search, high, WORSE)
    later = search._ask()  # TPE's first trial: past the design
    prune = search._tuning(later)["prune"]
    assert not prune["design"] and len(prune["earlier"]) == 3  # compared with the design trial too
    stopped, validation = _evaluated(prune, WORSE)
    assert stopped and validation["pruned"] == {"step": 1, "loss": 5.0, "median": 1.2, "of": 3}
    search.study.tell(later, state=optuna.trial.TrialState.PRUNED)
    search._finish()
    record = read_json(search_path(cfg.run_dir, "cnn", cfg.specs[0]))
    assert [(t["design"], t["state"]) for t in record["trials"]] == [
        (True, "complete"), (True, "complete"), (True, "complete"), (False, "pruned")]
    assert record["pruner"].endswith("the design trials (the method's own settings and both ends of each range) are "
                                     "never pruned: they run to the end")


def test_a_study_stored_under_the_rule_that_pruned_design_trials_is_refused_in_one_line(tmp_path):
    cfg, search = _search(tmp_path)
    task, method = get_task("cnn"), cfg.specs[0]
    before = {k: v for k, v in signature(cfg, task, method).items() if k != "pruning"}
    search.study.set_user_attr("signature", before)  # what a study made before the exemption holds
    for resume in (lambda: check_studies(cfg), lambda: MethodSearch(cfg, task, method, storage(cfg.run_dir))):
        with pytest.raises(ConfigError, match="pruned by an earlier rule, which could prune its design trials .*"
                                              "give it another --run-name to start a new search$"):
            resume()
    search.study.set_user_attr("signature", signature(cfg, task, method))
    check_studies(cfg)  # today's own study resumes
    grid_cfg, _ = _search(tmp_path / "grid", methods=("lora:lr=1e-4|1e-3",), tune=None)
    assert "pruning" not in signature(grid_cfg, task, grid_cfg.specs[0])  # a grid has no design: pruned as before
