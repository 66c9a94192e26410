"""Mistakes a new user makes: each is one line naming the fix, before any cell runs."""

import json
import shutil

import pytest

from harness.cell import load
from harness.cli import main
from harness.core.errors import ModelError
from harness.spec import models
from harness.spec.config import RunConfig
from harness.spec.task import get_task
from tests.conftest import one_error_line, run_cli

CLAIMS = [{"id": i, "claim": f"Real claim number {i}.", "label": ("SUPPORTS", "REFUTES")[i % 2]} for i in range(8)]


# These tests count stderr lines. On a cold cache the first run converts the SmolLM2 tokenizer and says so in
# one progress line, so the conversion happens before them, whatever order xdist picks.
pytestmark = pytest.mark.usefixtures("tokenizer_dir")


@pytest.fixture
def claims(tmp_path):
    path = tmp_path / "claims.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in CLAIMS))
    return path


@pytest.mark.parametrize("flag", ["fever", "fever.eval"])
def test_own_claims_in_react_mode_need_a_docstore(claims, tmp_path, capsys, flag):
    code = main(["--tasks", "fever", "--data", f"{flag}={claims}", "--model", "tiny-llama", "--out", str(tmp_path)])
    assert code == 2
    line = one_error_line(capsys)
    assert f"--data {flag}={claims} in react mode would search the embedded fictional encyclopedia" in line
    assert "--docstore FILE.jsonl" in line and "--docstore embedded" in line
    assert not any(tmp_path.glob("*/fever"))  # refused before any cell folder was made


def test_embedded_store_on_purpose_closed_mode_and_embedded_claims_still_load(claims):
    fever = get_task("fever")
    mine = {"fever": str(claims)}
    assert len(fever.load(RunConfig(tasks=("fever",), data=mine, docstore="embedded", eval_limit=2))["test"]) == 2
    assert fever.load(RunConfig(tasks=("fever",), data=mine, fever_mode="closed", eval_limit=2))["test"]
    assert fever.load(RunConfig(tasks=("fever",), eval_limit=2))["test"]  # the embedded claims need no flag
    own_train = {"fever.train": str(claims)}  # embedded eval claims still match the embedded store
    assert fever.load(RunConfig(tasks=("fever",), data=own_train, eval_limit=2))["train"]
    # --docstore embedded names the default store: the cells' settings, and so their results, are the same
    assert fever.options(RunConfig(tasks=("fever",), docstore="embedded")) == fever.options(RunConfig(tasks=("fever",)))


@pytest.mark.parametrize("name, content, expected", [
    ("broken.jsonl", '{"article": "a", "highlights": "b"}\n{"article": "a", "highlights": \n',
     "cannot read {path} as json: JSON parse error: Invalid value. in row 1; check the file's format"),
    ("broken.parquet", "PAR1 not really parquet PAR1", "cannot read {path} as parquet: "),
])
def test_corrupt_file_is_exactly_one_line_on_stderr(tmp_path, name, content, expected):
    """datasets logs its own line before raising; the user sees only the harness's line."""
    path = tmp_path / name
    path.write_text(content)
    done = run_cli("--data", f"cnn={path}", "--model", "tiny-llama", "--out", str(tmp_path / "out"), timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: " + expected.format(path=path)), lines[0]


def test_a_number_where_text_belongs_is_not_called_empty(tmp_path, capsys):
    path = tmp_path / "numbers.jsonl"
    path.write_text('{"article": 5, "highlights": "x ."}\n{"article": "A story.", "highlights": "y ."}\n')
    assert main(["--data", f"cnn={path}", "--model", "tiny-llama", "--out", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert "column 'article' is not text: 1 row(s) hold int values (first: row 0: '5')" in line
    assert "empty" not in line


def test_missing_hub_model_fails_once_up_front(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as e:
        load.check_loadable(models.resolve_model("owner/missing"))
    assert str(e.value) == ("cannot load config 'owner/missing' from the Hugging Face Hub (offline, gated or "
                            "misspelt?); download it on a connected machine and pass the local folder to --model")


def test_local_folder_with_a_broken_config_or_no_tokenizer(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    load.check_loadable(models.resolve_model(str(folder)))  # the intact copy resolves
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"has no tokenizer files \(tokenizer.json"):
        load.check_loadable(models.resolve_model(str(folder)))
    (folder / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(ModelError) as e:
        load.check_loadable(models.resolve_model(str(folder)))
    assert str(e.value).startswith(f"cannot load config from {folder}: ") and "not a valid JSON file" in str(e.value)
    (folder / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="Should have a `model_type` key"):
        load.check_loadable(models.resolve_model(str(folder)))


def test_a_run_whose_every_cell_is_left_out_is_refused_and_writes_nothing(tmp_path, capsys):
    """cnn has no knowledge base, so cnn x rag is left out; with nothing else to run the run is bad input (exit 2),
    not '0 of 0 cells ok' with an empty report."""
    code = main(["--tasks", "cnn", "--methods", "rag", "--model", "tiny-llama", "--out", str(tmp_path)])
    assert code == 2
    line = one_error_line(capsys)
    assert line.startswith("error: nothing to run") and "cnn x rag" in line and "knowledge base" in line
    assert not any(tmp_path.iterdir())  # no run folder, no report


def test_a_run_with_one_cell_left_out_still_runs_the_rest(tmp_path):
    """Only a run with nothing at all to do is refused: cnn x rag left out beside cnn x base plans base."""
    from harness.plan.matrix import plan
    cells = plan(RunConfig(tasks=("cnn",), methods=("base", "rag"), model="tiny-llama", out=tmp_path))
    assert [c.spec.method.name for c in cells] == ["base"]
