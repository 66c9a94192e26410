"""Train-test overlap: exact and near duplicates planted between a user's train and test files are counted, warned
about, and kept out of training by --drop-overlap; independent rows are not flagged."""

import json

import pytest

from harness.report.tables import overlap_note
from harness.spec.config import RunConfig
from harness.spec.overlap import NEAR_SHARE, OverlapIndex, describe, ngrams, row_text, words
from harness.spec.task import get_task
from tasks.embedded.cnn_gen import generate

CNN = get_task("cnn")


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def near_copy(row: dict) -> dict:
    """The row with its last highlight line replaced and its case and punctuation changed: most 13-grams kept."""
    lines = row["highlights"].split("\n")
    return {**row, "id": row["id"] + "-near", "article": row["article"].upper().replace(".", " !"),
            "highlights": "\n".join(lines[:-1] + ["An entirely different closing line was written here."])}


@pytest.fixture
def planted(tmp_path):
    """A test file of 6 rows; the train file holds an exact copy of test row 1 and a near copy of test row 4."""
    test_rows = generate("test", 6)
    train_rows = generate("train", 20)
    train_rows[3] = {**test_rows[1], "id": "copy"}  # the same text under another id
    train_rows[10] = near_copy(test_rows[4])
    return write(tmp_path / "train.jsonl", train_rows), write(tmp_path / "test.jsonl", test_rows), train_rows


def test_planted_duplicates_are_counted_and_warned_about(planted):
    train, test, _ = planted
    data = CNN.load(RunConfig(data={"cnn": f"{train},{test}"}, train_limit=100))
    overlap = data["fingerprint"]["overlap"]
    assert (overlap["exact"], overlap["near"], overlap["overlapping_test_rows"]) == (1, 1, [1, 4])
    assert overlap["dropped_from_train"] == 0 and len(data["train"]) == 20
    shares = {e["test_row"]: (e["kind"], e["share"]) for e in overlap["examples"]}
    assert shares[1] == ("exact", 1.0) and shares[4][0] == "near" and NEAR_SHARE <= shares[4][1] < 1
    line = describe("cnn", overlap)
    assert line.startswith("cnn: 2 of 6 test rows overlap the training rows (1 exact, 1 near") and \
        "--drop-overlap" in line
    assert overlap_note("cnn", overlap).startswith("**Warning: train-test overlap.**")


def test_drop_overlap_removes_them_from_training_and_refills_from_the_source(planted):
    train, test, train_rows = planted
    data = CNN.load(RunConfig(data={"cnn": f"{train},{test}"}, train_limit=12, drop_overlap=True))
    ids = [r["id"] for r in data["train"]]
    assert "copy" not in ids and train_rows[10]["id"] not in ids
    assert ids == [r["id"] for r in train_rows if r["id"] not in ("copy", train_rows[10]["id"])][:12]
    overlap = data["fingerprint"]["overlap"]
    assert overlap["dropped_from_train"] == 2 and overlap["exact"] == overlap["near"] == 0
    assert describe("cnn", overlap) is None
    assert "kept 2 overlapping rows out of training" in overlap_note("cnn", overlap)


def test_the_runner_warns_in_the_terminal(planted, capsys):
    from harness.execute.runner import warn_overlap

    train, test, _ = planted
    warn_overlap({"cnn": CNN.load(RunConfig(data={"cnn": f"{train},{test}"}, train_limit=100))})
    assert "warning: cnn: 2 of 6 test rows overlap" in capsys.readouterr().err  # the console writes to stderr


@pytest.mark.parametrize("task", ["cnn", "guanaco", "fever"])
def test_independent_rows_of_one_template_are_not_near_duplicates(task):
    """The embedded tasks' train and test rows are written by one template each, so they share boilerplate; the
    most a test row shares with any training row stays below NEAR_SHARE (cnn 0.39, guanaco 0.38 here)."""
    t = get_task(task)
    columns = t.text_columns or t.columns
    test_rows, train_rows = t.embedded("eval"), t.embedded("train")
    index = OverlapIndex.of(test_rows, columns)
    most = 0.0
    for row in train_rows:
        grams = ngrams(words(row_text(row, columns)))
        for i, size in enumerate(index.sizes):
            if size:
                shared = sum(1 for g in grams if i in index.grams.get(g, ()))
                most = max(most, shared / size)
        assert not index.match(row)
    assert most < NEAR_SHARE - 0.05, most
    assert t.load(RunConfig(tasks=(task,), docstore="embedded"))["fingerprint"]["overlap"]["exact"] == 0


def test_rows_shorter_than_an_ngram_match_only_exactly():
    index = OverlapIndex.of([{"claim": "Paris is in France."}], ("claim",))
    assert index.match({"claim": "paris IS in france"}) == [(0, "exact", 1.0)]
    assert index.match({"claim": "Paris is in Spain."}) == []
