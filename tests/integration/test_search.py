"""The search end to end on the tiny model: it looks past the edge of its first range, makes the same trials twice,
resumes after SIGKILL with each trial once, prunes a hopeless trial without choosing it, and runs trials side by
side on Ray with the process executor's results."""

import os
import signal
import subprocess
import sys
import time

import pytest

from harness.core.files import read_json
from tests.cell_process import ran_apart
from tests.conftest import ROOT, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("search")]

# Eight new tokens: what these tests read is the search (trials, their losses, the choice), not the generated text,
# and the random model runs every generation to its cap (cnn's own is 64).
SMALL = ("--model", "tiny-llama", "--tasks", "cnn", "--train-limit", "16", "--eval-limit", "6", "--tune-by", "loss",
         "--bootstrap", "50", "--max-new-tokens", "8")


def search(run, method: str = "lora") -> dict:
    return read_json(run / "search" / "cnn" / f"{method}.json")


def study(run) -> list[tuple]:
    """(number, state, params) of every trial in the run's Optuna study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    summaries = optuna.get_all_study_summaries(f"sqlite:///{run / 'search.db'}")
    out = []
    for s in summaries:
        st = optuna.load_study(study_name=s.study_name, storage=f"sqlite:///{run / 'search.db'}")
        out += [(t.number, t.state.name, dict(t.params)) for t in st.trials]
    return out


@pytest.fixture(scope="session")
def far(tmp_path_factory):
    """LoRA started at 1e-6, a hundred times below where it learns on this model, searched twice alike: the second
    time with a budget of 5, whose trials are the first 5 of the first search's 8 (the design's 3, then TPE's, each
    seeded by its number; the range widens after the same trials while both budgets have trials left)."""
    out = tmp_path_factory.mktemp("search")
    runs = []
    for name, budget in (("a", "8"), ("b", "5")):
        done = run_cli(*SMALL, "--methods", "lora:lr=1e-6", "--tune", "lr", "--tune-trials", budget, "--out", str(out),
                       "--run-name", name)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append((out / name, done))
    return runs


def test_a_rate_far_below_its_best_is_moved_past_the_first_range_to_a_better_figure(far):
    (run, done), _ = far
    rec = search(run, "lora_lr=1e-6")
    first = [t for t in rec["trials"] if t["params"]["lr"] <= 1e-5 * (1 + 1e-9)]
    chosen = next(t for t in rec["trials"] if t["number"] == rec["chosen"])
    assert chosen["params"]["lr"] > 1e-5  # past the first range (a tenth to ten times 1e-6)
    assert chosen["value"] < min(t["value"] for t in first if t["value"] is not None)
    assert rec["widened"] and rec["widened"][0]["side"] == "high"
    assert "sits at the high edge of lr 1e-07..1e-05 (log); searching lr 1e-07..0.0001 (log)" in done.stderr
    test_cell = read_json(run / "cnn" / "lora_lr=1e-6" / "config.json")
    assert test_cell["tuning"]["role"] == "chosen" and test_cell["hyperparameters"]["lr"] == chosen["params"]["lr"]
    assert read_json(run / "cnn" / "lora_lr=1e-6" / "metrics.json")["split"] == "test"
    assert "settings searched on validation (6 rows), chosen by the validation loss" in (run / "report.md").read_text()


def test_with_parallel_1_and_one_seed_two_runs_make_the_same_trials(far):
    (a, _), (b, _) = far
    ra, rb = search(a, "lora_lr=1e-6"), search(b, "lora_lr=1e-6")
    ta, tb = ra["trials"], rb["trials"]
    assert len(ta) == 8 and len(tb) == 5
    assert [(t["params"], t["state"], t["value"]) for t in ta[:5]] == \
        [(t["params"], t["state"], t["value"]) for t in tb]
    assert rb["widened"] and rb["widened"] == ra["widened"][:len(rb["widened"])]


def test_a_search_killed_mid_trial_resumes_with_each_trial_once(tmp_path):
    args = [sys.executable, str(ROOT / "run_matrix.py"), *SMALL, "--methods", "lora", "--tune", "lr,lora_r",
            "--tune-trials", "5", "--train-limit", "16", "--epochs", "1", "--executor", "inline", "--out",
            str(tmp_path), "--run-name", "k"]
    env = {**os.environ, "HARNESS_PROGRESS": "plain"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 400
    for line in proc.stderr:  # the third trial's training under way: SIGKILL the whole run
        if "[cnn x lora trial 2:" in line and "train lora: step" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        assert time.time() < deadline, "the third trial never started training"
    proc.wait(timeout=60)
    run = tmp_path / "k"
    before = {n: (run / "cnn" / f"lora.trial{n}" / "status.json").read_text() for n in (0, 1)}
    assert not (run / "cnn" / "lora.trial2" / "status.json").exists()
    killed = study(run)
    assert [(n, s) for n, s, _ in killed] == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "RUNNING")]
    again = run_cli(*SMALL, "--methods", "lora", "--tune", "lr,lora_r", "--tune-trials", "5", "--train-limit", "16",
                    "--epochs", "1", "--out", str(tmp_path), "--run-name", "k")
    assert again.returncode == 0, again.stderr[-3000:]
    for n in (0, 1):  # finished trials were not redone
        assert (run / "cnn" / f"lora.trial{n}" / "status.json").read_text() == before[n]
    after = study(run)
    assert [n for n, _, _ in after] == [0, 1, 2, 3, 4]  # the full budget, each trial once
    assert all(s in ("COMPLETE", "PRUNED", "FAIL") for _, s, _ in after)
    assert after[2][2] == killed[2][2]  # the killed trial ran again with its own settings
    assert read_json(run / "cnn" / "lora" / "config.json")["tuning"]["role"] == "chosen"


def test_a_hopeless_trial_is_pruned_recorded_as_pruned_and_never_chosen(tmp_path):
    """A grid is tried in the order written: the third point, a rate that cannot move the weights, has a worse
    validation loss at its first evaluation than both earlier trials, and is stopped there."""
    done = run_cli(*SMALL, "--methods", "lora:lr=3e-3|1e-2|1e-7", "--tune-trials", "3", "--epochs", "2",
                   "--out", str(tmp_path), "--run-name", "p")
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "p"
    status = read_json(run / "cnn" / "lora.trial2" / "status.json")
    assert status["status"] == "pruned" and "above the median" in status["message"]
    train = read_json(run / "cnn" / "lora.trial2" / "train.json")
    assert train["validation"]["pruned"]["step"] == train["validation"]["evals"][-1]["step"] < train["steps"] + 1
    assert not (run / "cnn" / "lora.trial2" / "metrics.json").exists()
    rec = search(run)
    assert [t["state"] for t in rec["trials"]] == ["complete", "complete", "pruned"] and rec["chosen"] in (0, 1)
    assert "1 pruned (search trials stopped early" in done.stderr
    report = (run / "report.md").read_text()
    assert "| lora | 2 | 1e-07 | - | - | 0 | pruned |" in report


def test_ray_runs_two_trials_at_once_with_the_process_executors_trials_and_choice(tmp_path):
    runs = {}
    for name, flags in (("process", ("--executor", "process")), ("ray", ("--executor", "ray", "--parallel", "2"))):
        done = run_cli(*SMALL, "--methods", "lora:lr=1e-3|1e-2", "--tune-trials", "2", *flags, "--out",
                       str(tmp_path), "--run-name", name)
        assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
        runs[name] = search(tmp_path / name)
    assert "submitted to Ray" in done.stderr
    assert [(t["params"], t["value"]) for t in runs["ray"]["trials"]] == \
        [(t["params"], t["value"]) for t in runs["process"]["trials"]]
    assert runs["ray"]["chosen"] == runs["process"]["chosen"]
    # Ray ran them: each trial's process was started by a Ray worker, not by the driver (tests/cell_process.py)
    driver = read_json(tmp_path / "ray" / "run.json")["driver_pid"]
    for n in (0, 1):
        assert ran_apart(read_json(tmp_path / "ray" / "cnn" / f"lora.trial{n}" / "env.json"), driver, "ray") == []
    # At once, not one after the other: a cell writes env.json as it starts (harness/cell/job.py) and status.json
    # last (CellStore.finish), so each file's time bounds the cell's run, and the two trials' spans overlap.
    spans = [tuple((tmp_path / "ray" / "cnn" / f"lora.trial{n}" / f).stat().st_mtime for f in ("env.json",
                                                                                               "status.json"))
             for n in (0, 1)]
    (start0, end0), (start1, end1) = spans
    assert start0 < end1 and start1 < end0, f"the two trials ran one after the other: (start, end) {spans}"


def test_a_stored_study_of_another_space_is_refused_in_one_line_before_any_cell_runs(tmp_path):
    first = run_cli(*SMALL, "--methods", "base,lora", "--tune", "lr", "--tune-trials", "1", "--out", str(tmp_path),
                    "--run-name", "s")
    assert first.returncode == 0, first.stderr[-3000:]
    base = (tmp_path / "s" / "cnn" / "base" / "status.json").read_text()
    other = run_cli(*SMALL, "--methods", "base,lora", "--tune", "lr,lora_r", "--tune-trials", "1", "--out",
                    str(tmp_path), "--run-name", "s")
    assert other.returncode == 2
    (line,) = other.stderr.strip().splitlines()
    assert line.startswith("error: ") and "holds a search of cnn/lora over lr 0.0001..0.01 (log) with seed 0" in line
    assert "this command searches lr 0.0001..0.01 (log), lora_r 4..64 (powers of 2)" in line
    assert "another --run-name" in line
    assert (tmp_path / "s" / "cnn" / "base" / "status.json").read_text() == base  # nothing ran, nothing lost
