"""The search's Optuna study file (``search.db`` in the run folder): what identifies a study, the refusal of a
rerun that would search differently, and what is said of a finished study (its settings' importances, the edges
its chosen trial is left at). harness/execute/search.py runs the search itself.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

from harness.core.console import console
from harness.core.errors import ConfigError
from harness.core.files import sha256_json
from harness.records.tuning import unexplored_words
from harness.spec.search import Dim, in_order
from harness.spec.task import get_task

STUDY_FILE = "search.db"
PRUNE_STARTUP = 2  # earlier complete trials a pruner needs before it compares (Optuna's MedianPruner default: 5)
# How a study's trials are pruned, part of its identity: the median rule above, which never stops a design trial (the
# method's own settings, every range's ends), so that an edge always gets a value. A study stored under the rule before
# (design trials pruned like any; no "pruning" in its signature) is refused like one of another space, rather than
# going on under two rules.
PRUNING = {"rule": "median of the earlier complete trials", "startup": PRUNE_STARTUP, "design_trials": "never pruned"}


def storage(run_dir) -> str:
    """The run's study file as an Optuna RDB storage URL (SQLite)."""
    return f"sqlite:///{(Path(run_dir) / STUDY_FILE).resolve()}"


def check_optuna() -> None:
    if importlib.util.find_spec("optuna") is None:
        raise ConfigError('--tune searches with Optuna, which is not installed; pip install -e . (it is in the '
                          "install) or pip install optuna")


def signature(cfg, task, method) -> dict:
    """What a stored study must match for a rerun to resume it: the space as written, the seeds, the measure and, for
    a search with design trials (any but a grid), the pruning rule: a grid's study is pruned as it always was."""
    by = "loss" if cfg.tune_by == "loss" else task.main_metric
    search = cfg.searches[method.name]
    return {"space": search.to_dict(), "seed": cfg.seed, "seeds": list(cfg.seed_list), "by": by,
            **({} if search.is_grid else {"pruning": PRUNING})}


def check_studies(cfg) -> None:
    """Before any cell runs: every study already in the run folder was made by this search (its space, seed, measure
    and pruning rule), else one line on how to start a new one."""
    import optuna

    path = Path(cfg.run_dir) / STUDY_FILE
    if not path.is_file():
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stored = {s.study_name: s.user_attrs.get("signature")
              for s in optuna.get_all_study_summaries(storage(cfg.run_dir))}
    for task in (get_task(name) for name in cfg.tasks):
        for method in cfg.specs:
            name = f"{task.name}/{method.name}"
            if method.name in cfg.searches and stored.get(name) is not None:
                same_search(path, name, stored[name], signature(cfg, task, method))


def same_search(path: Path, name: str, stored: dict, wanted: dict) -> None:
    if sha256_json(stored) == sha256_json(wanted):
        return
    rest = [sha256_json({k: v for k, v in s.items() if k != "pruning"}) for s in (stored, wanted)]
    if rest[0] == rest[1]:  # the same search, pruned by another rule
        was = ("an earlier rule, which could prune its design trials (the method's own settings, each range's ends)"
               if stored.get("pruning") is None else f"another rule ({stored['pruning']})")
        raise ConfigError(f"{path} holds a search of {name} pruned by {was}, and this code never prunes a design "
                          "trial; resuming it would mix the two rules: give it another --run-name to start a new "
                          "search")
    raise ConfigError(f"{path} holds a search of {name} over {space_words(stored)} with seed {stored['seed']} "
                      f"by {stored['by']}, and this command searches {space_words(wanted)} with seed "
                      f"{wanted['seed']} by {wanted['by']}; give it another --run-name (or leave --run-name out) "
                      "to start a new search")


def space_words(signature: dict) -> str:
    return ", ".join(Dim.from_dict(d).describe() for d in in_order(signature["space"]["dims"]).values())


def importance(study, dims: dict) -> dict:
    """Each searched setting's importance by Optuna's default evaluator (PED-ANOVA in Optuna 5), over the
    complete trials; empty when fewer than two completed or fewer than two settings varied (one setting has all
    the importance there is)."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    varied = [k for k in dims if len({t.params.get(k) for t in done}) > 1]
    if len(done) < 2 or len(varied) < 2:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "some regimes have less than 2 trials": a small search, said above
        logging.getLogger("optuna").setLevel(logging.ERROR)
        try:
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study, params=varied).items()}
        except (ValueError, RuntimeError):  # too few distinct values for the evaluator
            return {}


def say_edges(record: dict, name: str, dims: dict, method: str, run_dir) -> None:
    """One warning line per setting the chosen trial leaves at an edge, or past which the budget never looked."""
    where = f"warning: search {name}:"
    for key, side in record["edges"].items():
        d = dims[key]
        console.print(f"[yellow]{where} the chosen trial {record['chosen']} still sits at the {side} edge of "
                      f"{d.describe()} after {len(record['trials'])} trials (the budget); the best {key} may lie "
                      f"beyond it: raise --tune-trials, or search further with "
                      f"{further(d, side).replace('METHOD', method)}[/]", soft_wrap=True)
    for key, info in record["unexplored"].items():
        # Widened past the chosen value, but no trial reached there: a budget that ran out, not an edge.
        console.print(f"[yellow]{where} {key} {unexplored_words(info)}; rerun with more --tune-trials and "
                      f"--run-name {Path(run_dir).name} to go on from these trials[/]", soft_wrap=True)


def further(d: Dim, side: str) -> str:
    """How to search one step further than ``d`` reaches on ``side``: the method text, or more trials."""
    wider = d.extend(side)
    lo, hi = wider.span
    if wider.kind == "grid":
        return f"--methods 'METHOD:{d.key}={'|'.join(f'{v:g}' for v in wider.choices)}'"
    if wider.ratio:
        return "a larger --tune-trials (alpha is searched as a multiple of the rank)"
    if wider.kind == "pow2":
        return f"--methods 'METHOD:{d.key}={'|'.join(str(2 ** e) for e in range(int(lo), int(hi) + 1))}'"
    return f"--methods 'METHOD:{d.key}={lo:.3g}..{hi:.3g}'"
