"""Bad input to shots, retrieval and the qa task: one line that names the bad thing and the fix, before any cell
runs, and nothing on disk touched."""

import json

import pytest

from harness.cli import main
from harness.execute.preflight import check_prompting
from harness.spec.config import RunConfig
from harness.spec.retrieval import knowledge_base, read_documents, split_passages
from harness.spec.task import get_task
from tests.conftest import one_error_line

pytestmark = pytest.mark.usefixtures("tokenizer_dir")  # a cold cache's conversion line would be a second line


def _run(capsys, tmp_path, *argv) -> str:
    code = main([*argv, "--model", "tiny-llama", "--out", str(tmp_path / "out"), "--executor", "inline"])
    assert code == 2
    line = one_error_line(capsys)
    assert not any((tmp_path / "out").glob("*/*/*/status.json"))  # no cell ran
    return line


@pytest.fixture
def files(tmp_path):
    out = {"empty": tmp_path / "empty.jsonl", "notjson": tmp_path / "notjson.jsonl",
           "notext": tmp_path / "notext.jsonl", "qa_noq": tmp_path / "qa_noq.jsonl"}
    out["empty"].write_text("\n")
    out["notjson"].write_text('{"title": "a", "text": "b"}\nthis is not json\n')
    out["notext"].write_text(json.dumps({"title": "a", "body": "b"}) + "\n")
    out["qa_noq"].write_text("".join(json.dumps({"prompt": f"Q{i}?", "answer": "A"}) + "\n" for i in range(6)))
    return out


@pytest.mark.parametrize("which, message", [
    ("missing", "--corpus {path} does not exist; pass a JSONL file of {{title, text}} or {{id, text}} documents"),
    ("empty", "--corpus {path} holds no documents with text"),
    ("notjson", "--corpus {path} line 2 is not JSON; a knowledge base is JSONL"),
    ("notext", "--corpus {path} line 1 has no text column (found: body, title)"),
])
def test_a_bad_corpus_is_one_line(capsys, tmp_path, files, which, message):
    path = files.get(which, tmp_path / "missing.jsonl")
    line = _run(capsys, tmp_path, "--tasks", "qa", "--methods", "base,rag", "--corpus", f"qa={path}")
    assert message.format(path=path) in line


@pytest.mark.parametrize("method, message", [
    ("fewshot:shots=0", "shots must be a whole number of at least 1, got 0"),
    ("base:shots=2.5", "shots must be a whole number of at least 1, got 2.5"),
    ("rag:retrieve=-1", "retrieve must be a whole number of at least 1, got -1"),
    ("fewshot:shot_select=nearest", "shot_select must be one of random, similar, got 'nearest'"),
    ("base:shot_select=similar", "shot_select=similar chooses shots, and the method has none; add shots=K"),
    ("rag:raft=0.8", "raft shapes the retrieved passages of training prompts; it needs a trained method"),
    ("lora:retrieve=3:raft=2", "raft is the share of training prompts that keep the gold passage, a number from 0"),
])
def test_bad_prompting_fields_are_one_line(capsys, tmp_path, method, message):
    assert message in _run(capsys, tmp_path, "--tasks", "qa", "--methods", method)


def test_more_shots_than_training_rows_is_one_line(capsys, tmp_path):
    line = _run(capsys, tmp_path, "--tasks", "cnn", "--methods", "fewshot:shots=20", "--train-limit", "8")
    assert "cnn x fewshot:shots=20: shots=20 is more than the 8 training rows of cnn; lower shots" in line


def test_retrieval_in_react_mode_is_refused_in_one_line(capsys, tmp_path):
    line = _run(capsys, tmp_path, "--tasks", "fever", "--methods", "base,rag")
    assert "in --fever-mode react the ReAct loop retrieves by itself" in line and "--fever-mode closed" in line


def test_columns_on_embedded_data_are_refused_instead_of_ignored(capsys, tmp_path):
    line = _run(capsys, tmp_path, "--tasks", "cnn", "--methods", "base", "--columns", "cnn:article=story")
    assert line == ("error: --columns cnn:article=story maps the columns of your own data, and every split of cnn is "
                    "the embedded data, which needs no mapping; add --data cnn=FILE, or drop --columns")


def test_a_qa_file_without_a_question_column_points_to_columns(capsys, tmp_path, files):
    line = _run(capsys, tmp_path, "--tasks", "qa", "--methods", "base", "--data", f"qa={files['qa_noq']}")
    assert "has no column 'question' (found: answer, prompt); map yours with --columns qa:question=YOUR_COLUMN" in line


def test_two_stores_for_fever_are_one_line(capsys, tmp_path):
    line = _run(capsys, tmp_path, "--tasks", "fever", "--methods", "base", "--docstore", "a.jsonl", "--corpus",
                "fever=b.jsonl")
    assert "--docstore a.jsonl and --corpus fever=b.jsonl name two stores for fever; give one of them" in line


def test_documents_become_passages_of_the_stated_size_with_their_ids(tmp_path):
    path = tmp_path / "kb.jsonl"
    path.write_text(json.dumps({"id": "d1", "text": " ".join(f"w{i}" for i in range(25))}) + "\n"
                    + json.dumps({"title": "Short", "text": "one two"}) + "\n")
    docs, _ = read_documents(str(path))
    assert [d["id"] for d in docs] == ["d1", "Short"] and docs[0]["title"] == "d1"
    passages = split_passages(docs, 10)
    assert [(p.doc, len(p.text.split())) for p in passages] == [("d1", 10), ("d1", 10), ("d1", 5), ("Short", 2)]


def test_documents_without_text_are_counted_in_the_record_and_said_once(capsys, tmp_path):
    """A document whose text is blank has nothing to retrieve and is left out; the knowledge base's record (data.json
    and the prompts' record) counts it, and the run's checks say it in one line."""
    path = tmp_path / "kb.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in (
        {"title": "Kept", "text": "one two"}, {"title": "Blank", "text": "  "}, {"id": "e", "text": ""},
        {"title": "Also kept", "text": "three"})))
    cfg = RunConfig(tasks=("qa",), methods=("rag",), corpus={"qa": str(path)})
    record = knowledge_base(get_task("qa"), cfg).fingerprint()
    assert record["documents"] == 2 and record["documents_without_text"] == 2
    check_prompting(cfg, {"qa": {"train": []}})
    err = capsys.readouterr().err.strip().splitlines()  # the console writes to stderr
    assert err == [f"warning: qa: 2 documents of {path} have no text and are left out of retrieval (2 kept); give "
                   "them text or drop them"]
