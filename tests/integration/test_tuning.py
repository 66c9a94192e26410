"""Tuning end to end on the tiny model: each method gets its own best learning rate, chosen on validation without
reading the test split; early stopping keeps the best weights."""

import json
import random

import pytest

from harness.core.files import read_json, read_jsonl
from tests.conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("tuning")]  # its session fixture runs once

WORDS = "alpha beta gamma delta river stone cloud market city lamp green blue north south".split()
GRID = "1e-3,1e-2,1e-1"


def rows(n: int, seed: int, answer: str = "the answer is yes") -> list[dict]:
    """Random-word articles whose summary is always ``answer``: full fine-tuning learns it at a rate where LoRA's
    adapters barely move, and LoRA at a rate where full fine-tuning has already overshot (measured below)."""
    rng = random.Random(seed)
    return [{"id": f"{seed}-{i}", "article": " ".join(rng.choice(WORDS) for _ in range(30)), "highlights": answer}
            for i in range(n)]


def write(path, data):
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return str(path)


def tuned_run(tmp_path, name: str, test_file: str, *extra: str):
    train = write(tmp_path / "train.jsonl", rows(32, 1))
    validation = write(tmp_path / "validation.jsonl", rows(8, 2))
    done = run_cli("--tasks", "cnn", "--methods", "full,lora", "--tune", f"lr={GRID}", "--tune-by", "loss",
                   "--tune-trials", "3",
                   "--model", "tiny-llama", "--data", f"cnn={train},{validation},{test_file}", "--bootstrap", "50",
                   "--out", str(tmp_path / "results"), "--run-name", name, *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "results" / name, done


def curve(run, method: str) -> dict:
    """lr -> validation loss of a method's trials, read from their records (None for a trial the search pruned)."""
    out = {}
    for cell in sorted((run / "cnn").glob(f"{method}.trial*")):
        lr = read_json(cell / "config.json")["tuning"]["params"]["lr"]
        if read_json(cell / "status.json")["status"] == "pruned":
            out[lr] = None
            continue
        metrics = read_json(cell / "metrics.json")
        assert metrics["split"] == "validation"
        out[lr] = metrics["quality"]["loss"]["value"]
    return out


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """The same tuned run twice, the second with other rows in its test file."""
    tmp = tmp_path_factory.mktemp("tuning")
    first = tuned_run(tmp, "first", write(tmp / "test.jsonl", rows(8, 3)))
    other = tuned_run(tmp, "other", write(tmp / "test2.jsonl", rows(8, 4, "no it is not")))
    return first, other


def test_each_method_gets_its_own_best_learning_rate(runs):
    (run, done), _ = runs
    chosen = {}
    for method in ("full", "lora"):
        losses = curve(run, method)
        assert sorted(losses) == [1e-3, 1e-2, 1e-1]
        best = min((lr for lr in losses if losses[lr] is not None), key=losses.get)
        test_cell = read_json(run / "cnn" / method / "config.json")
        assert test_cell["tuning"]["role"] == "chosen" and test_cell["hyperparameters"]["lr"] == best
        assert read_json(run / "cnn" / method / "train.json")["lr"] == best
        assert read_json(run / "cnn" / method / "metrics.json")["split"] == "test"
        chosen[method] = best
        complete = sum(v is not None for v in losses.values())
        pruned = f", {3 - complete} pruned" if complete < 3 else ""
        assert f"search cnn x {method}: 3 trials on validation (8 rows; {complete} complete{pruned}), by loss: " \
               "chosen trial" in done.stderr
    # The two methods' best rates differ, so one shared rate would have handicapped one of them.
    assert chosen["full"] != chosen["lora"], chosen
    report = (run / "report.md").read_text()
    assert "settings searched on validation (8 rows), chosen by the validation loss" in report
    assert "settings were searched on the validation split" in report
    summary = (run / "summary.csv").read_text().splitlines()
    assert len(summary) == 3  # full and lora on test: the trials are not in the table


def test_no_test_figure_is_read_before_the_choice(runs):
    (first, _), (other, _) = runs
    for method in ("full", "lora"):
        assert curve(first, method) == curve(other, method)
        assert read_json(first / "cnn" / method / "config.json")["hyperparameters"]["lr"] == \
            read_json(other / "cnn" / method / "config.json")["hyperparameters"]["lr"]
    for cell in (first / "cnn").glob("*.trial*"):
        assert set(read_json(cell / "data.json")) == {"train", "validation", "validation_overlap"}  # no test rows
        if (cell / "predictions.jsonl").is_file():  # a pruned trial scores nothing
            ids = {p["id"] for p in read_jsonl(cell / "predictions.jsonl")}
            assert ids == {f"2-{i}" for i in range(8)}  # scored on validation rows only
    # while the test cells were scored on each run's own test rows
    test_ids = [{p["id"] for p in read_jsonl(run / "cnn" / "full" / "predictions.jsonl")} for run in (first, other)]
    assert test_ids == [{f"3-{i}" for i in range(8)}, {f"4-{i}" for i in range(8)}]


@pytest.mark.parametrize("method", ["full", "lora"])
def test_early_stopping_stops_on_the_validation_loss_and_keeps_the_best_weights(tiny_model_dir, tokenizer, method):
    """At a rate that overshoots, the validation loss rises after its best evaluation: training stops there, and
    the model it returns scores the best evaluation's loss, not the last one's."""
    from harness.cell.generate import completion_nll
    from harness.cell.load import load_model
    from harness.cell.training import train
    from harness.spec.config import RunConfig
    from harness.spec.methods import resolve_method
    from harness.spec.task import Context, get_task

    task, spec = get_task("cnn"), resolve_method(method)
    ctx = Context(tok=tokenizer, max_seq_len=512, max_new_tokens=16)
    pairs = [task.train_pair(r, ctx) for r in rows(32, 1)]
    val = [task.train_pair(r, ctx) for r in rows(8, 2)]
    # One evaluation batch (8 rows), so the trainer's eval loss is the token mean that completion_nll sums to.
    cfg = RunConfig(methods=(method,), lr=1.0 if method == "full" else 0.3, early_stop=1, batch_size=8, epochs=3)
    model, record = train(load_model(str(tiny_model_dir), spec, "cpu"), tokenizer, spec, pairs, cfg, "cpu",
                          merge=False, eval_pairs=val)
    early = record["early_stop"]
    losses = [e["loss"] for e in early["evals"]]
    assert early["patience"] == 1 and early["validation_rows"] == 8 and early["eval_every_steps"] == 1
    assert early["stopped_at_step"] is not None and record["steps"] == early["stopped_at_step"] < 12
    assert losses[-1] > early["best_loss"] == min(losses) and early["restored_step"] == early["best_step"]
    nll = completion_nll(model, tokenizer, [p["prompt"] for p in val], [p["completion"] for p in val], 8)
    kept = sum(t for t, _ in nll) / sum(n for _, n in nll)
    assert kept == pytest.approx(early["best_loss"], rel=1e-4), (kept, losses)
