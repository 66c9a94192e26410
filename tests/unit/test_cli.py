"""Bad input gets one clear line on stderr, exit status 2, and no traceback."""

import pytest

from harness.cli import main
from tests.conftest import one_error_line, run_cli

# These tests count stderr lines. On a cold cache the first run converts the SmolLM2 tokenizer and says so in
# one progress line, so the conversion happens before them, whatever order xdist picks.
pytestmark = pytest.mark.usefixtures("tokenizer_dir")


@pytest.mark.parametrize("argv, expected", [
    (["--tasks", "cnn,summarise"], "unknown task 'summarise'; valid tasks: cnn"),
    (["--methods", "lora,qlora16"],
     "unknown method 'qlora16'; valid methods: base, dora, fewshot, full, loftq, lora, lora+"),
    (["--methods", "full:bits=8"], "quantization without an adapter"),
    (["--methods", "qlora8:load_in_4bit=true"], "4-bit and 8-bit at once"),
    (["--methods", "lora,lora"], "method 'lora' is listed twice"),
    (["--train-limit", "0"], "--train-limit must be a positive integer, got 0"),
    (["--eval-limit", "-5"], "--eval-limit must be a positive integer, got -5"),
    (["--batch-size", "-1"], "--batch-size must be a positive integer"),
    (["--epochs", "abc"], "epochs in the command line must be float"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
    (["--data", "cnn=/no/such/file.jsonl"], "data file /no/such/file.jsonl does not exist"),
    (["--data", "fever=x.jsonl"], "task 'fever', which is not in --tasks"),
    (["--config", "/no/such.yaml"], "config file /no/such.yaml does not exist"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--model", "not-a-model", "--out", "/tmp/harness-cli-test"], "model 'not-a-model' is not a catalogue"),
])
def test_bad_input_is_one_line(argv, expected, capsys, tmp_path):
    if "--out" not in argv:
        argv = argv + ["--out", str(tmp_path)]
    with pytest.raises(SystemExit) if "--device" in argv or "--no-such-flag" in argv else _nothing():
        code = main(argv)
        assert code == 2
    assert expected in one_error_line(capsys)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("name, content, expected", [
    ("rows.xml", "<rows/>", "unknown format '.xml'"),
    ("rows.jsonl", '{"text": "a", "highlights": "b"}\n', "--columns cnn:article=YOUR_COLUMN"),
    ("empty.csv", "article,highlights,id\n", "empty.csv is empty"),
    ("blank.jsonl", '{"article": "A story.", "highlights": "x ."}\n{"article": "", "highlights": "y ."}\n',
     "1 row(s) have empty 'article'"),
])
def test_bad_data_file_contents(tmp_path, capsys, name, content, expected):
    bad = tmp_path / name
    bad.write_text(content)
    assert main(["--data", f"cnn={bad}", "--out", str(tmp_path)]) == 2
    assert expected in one_error_line(capsys)


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["--out", str(blocker / "sub"), "--model", "tiny-llama"]) == 2
    assert "is not writable" in one_error_line(capsys)


def test_subprocess_has_no_traceback(tmp_path):
    done = run_cli("--tasks", "nope", "--out", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip() == "error: unknown task 'nope'; valid tasks: cnn, fever, guanaco, qa"
    assert done.stdout == ""


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for text in ("--tasks", "--methods", "--data TASK=SOURCE", "--max-seq-len", "report RESULTS_DIR", "gate"):
        assert text in out


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "cnn" in out and "qlora8" in out and "smollm2-135m" in out and "rougeL" in out


def test_help_is_in_sections_with_the_first_run_flags_first(capsys):
    from harness.spec.config import GROUPS

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    heads = [line[:-1] for line in out.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert [h for h in heads if h in GROUPS] == list(GROUPS)
    first = out.split("what to run:")[1].split("training:")[0]
    for flag in ("--tasks", "--methods", "--model", "--data", "--train-limit", "--eval-limit", "--out", "--config"):
        assert flag in first


def test_plan_and_run_share_their_flags(capsys):
    """The flags plan has in common with a run are the run's own: the same help text, the same default."""
    from harness.cli.plan import SHARED, parser
    from harness.cli.run import run_parser

    run = {a.dest: a for a in run_parser()._actions}
    plan = {a.dest: a for a in parser()._actions}
    assert set(SHARED) <= set(plan) and len(SHARED) >= 10
    for name in SHARED:
        assert plan[name].option_strings[0] == run[name].option_strings[0], name
        assert plan[name].choices == run[name].choices and plan[name].nargs == run[name].nargs, name
        if name not in ("model", "device", "out"):  # what these mean to plan is said in its own words
            assert plan[name].help == run[name].help, name
