"""Atomic writes and the completeness check behind resume."""

import json

from harness.core.files import atomic_write_json, read_json
from harness.records.store import CellStore, environment, git_state


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    atomic_write_json(tmp_path / "a.json", {"b": 2})
    assert read_json(tmp_path / "a.json") == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    # sorted keys -> byte-identical for equal content
    atomic_write_json(tmp_path / "c.json", {"a": [1, 2], "b": 1})
    atomic_write_json(tmp_path / "d.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "c.json").read_bytes() == (tmp_path / "d.json").read_bytes()


def test_cell_states(tmp_path):
    store = CellStore(tmp_path, "cnn", "lora")
    assert store.state() == ("missing", "")
    store.write_json("config.json", {"x": 1})
    store.write_jsonl("predictions.jsonl", [{"output": "a"}])
    assert store.state()[0] == "incomplete"
    record = store.finish("ok")
    assert set(record["files"]) == {"config.json", "predictions.jsonl"}
    assert store.state() == ("complete", "ok")
    store.path("predictions.jsonl").write_text('{"output": "tampered"}\n')
    assert store.state() == ("corrupt", "predictions.jsonl does not match its checksum")
    store.path("status.json").write_text("{trunc")
    assert store.state() == ("corrupt", "status.json is unreadable")
    store.reset()
    assert store.state()[0] == "missing"


def test_environment_records_provenance():
    env = environment("cpu")
    assert env["device"] == "cpu" and env["gpu"] is None
    for pkg in ("torch", "transformers", "peft", "trl", "bitsandbytes", "datasets"):
        assert env["packages"][pkg]
    assert set(git_state()) == {"commit", "dirty"}
    json.dumps(env)
