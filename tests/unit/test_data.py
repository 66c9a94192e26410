"""Sources and loaders: local files in the hub schema, column mapping, and the clear errors."""

import json

import pandas as pd
import pytest

from harness.core.errors import DataError
from harness.spec.config import RunConfig
from harness.spec.data import holdout, parse_source
from harness.spec.task import get_task
from tasks.embedded.cnn_gen import generate

CNN = get_task("cnn")


def write(path, rows, fmt):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    return str(path)


def test_parse_source():
    assert parse_source("embedded").kind == "embedded"
    s = parse_source("abisee/cnn_dailymail:3.0.0:test")
    assert (s.kind, s.ref, s.config, s.split) == ("hub", "abisee/cnn_dailymail", "3.0.0", "test")
    assert parse_source("abisee/cnn_dailymail").config is None
    with pytest.raises(DataError, match="does not exist"):
        parse_source("/no/such/file.jsonl")
    with pytest.raises(DataError, match="is not 'embedded', a hub id"):
        parse_source("just-a-word")


def test_unknown_format(tmp_path):
    f = tmp_path / "rows.txt"
    f.write_text("hello")
    with pytest.raises(DataError, match=r"unknown format '.txt'; use one of .jsonl, .json, .csv, .parquet"):
        parse_source(str(f))


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_local_file_in_hub_schema_is_split_into_train_and_eval(tmp_path, fmt):
    rows = generate("test", 40)
    path = write(tmp_path / f"cnn.{fmt}", rows, fmt)
    data = CNN.load(RunConfig(data={"cnn": path}, eval_limit=8, train_limit=100))
    assert len(data["test"]) == 8 and len(data["train"]) == 32
    ids = {r["id"] for r in data["train"]} | {r["id"] for r in data["test"]}
    assert ids == {r["id"] for r in rows}  # nothing lost, nothing duplicated
    assert set(data["train"][0]) >= {"article", "highlights", "id"}
    assert data["fingerprint"]["test"]["source"].endswith("(held-out part)")


def test_separate_train_and_eval_files_and_limits(tmp_path):
    tr = write(tmp_path / "tr.jsonl", generate("train", 20), "jsonl")
    ev = write(tmp_path / "ev.jsonl", generate("test", 10), "jsonl")
    data = CNN.load(RunConfig(data={"cnn.train": tr, "cnn.eval": ev}, train_limit=5, eval_limit=3))
    assert [r["id"] for r in data["train"]] == [r["id"] for r in generate("train", 5)]
    assert [r["id"] for r in data["test"]] == [r["id"] for r in generate("test", 3)]


def test_column_mapping(tmp_path):
    rows = [{"story": r["article"], "summary": r["highlights"], "id": r["id"]} for r in generate("test", 12)]
    path = write(tmp_path / "mine.jsonl", rows, "jsonl")
    data = CNN.load(RunConfig(data={"cnn": path}, columns={"cnn": {"article": "story", "highlights": "summary"}},
                              eval_limit=4))
    assert data["test"][0]["article"] and "story" not in data["test"][0]


def test_missing_column_names_it_and_the_flag(tmp_path):
    rows = [{"story": "x", "highlights": "y"}]
    path = write(tmp_path / "mine.jsonl", rows, "jsonl")
    with pytest.raises(DataError) as e:
        CNN.load(RunConfig(data={"cnn": path}))
    msg = str(e.value)
    assert "has no column 'article'" in msg and "--columns cnn:article=YOUR_COLUMN" in msg and "\n" not in msg


def test_empty_dataset_and_empty_text(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="cannot read|is empty"):
        CNN.load(RunConfig(data={"cnn": str(empty)}))
    rows = generate("test", 6)
    rows[3]["article"] = "   "
    path = write(tmp_path / "blank.jsonl", rows, "jsonl")
    with pytest.raises(DataError, match=r"1 row\(s\) have empty 'article' \(first: row \d\)"):
        CNN.load(RunConfig(data={"cnn": path}))


def test_malformed_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"article": "a", "highlights": "b"}\n{not json\n')
    with pytest.raises(DataError, match="cannot read .*bad.jsonl as json"):
        CNN.load(RunConfig(data={"cnn": str(bad)}))


def test_hub_source_fails_with_a_clear_line_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as e:
        CNN.load(RunConfig(data={"cnn": "abisee/cnn_dailymail:3.0.0:test"}))
    assert "cannot load abisee/cnn_dailymail:3.0.0:test" in str(e.value) and "\n" not in str(e.value)


def test_holdout_is_content_based_and_stable():
    rows = generate("test", 20)
    tr1, ev1 = holdout(rows, 5)
    tr2, ev2 = holdout(list(reversed(rows)), 5)
    assert ev1 == ev2 and len(tr1) == 15
    assert sorted(r["id"] for r in tr1) == sorted(r["id"] for r in tr2)
    assert holdout(rows + generate("validation", 3), 5)[1] != [] and len(holdout(rows, 100)[1]) == 10
