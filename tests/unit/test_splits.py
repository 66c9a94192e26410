"""Three splits: train, validation and test, from the embedded data, from files, or carved from a training source."""

import json

import pytest

from harness.cell.job import rows_for
from harness.core.errors import ConfigError, DataError
from harness.execute.runner import warn_overlap
from harness.report.tables import notes
from harness.spec.config import RunConfig
from harness.spec.task import ROLES, get_task
from tasks.embedded.cnn_gen import generate

CNN = get_task("cnn")
TUNED = {"methods": ("lora",), "tune": "lr"}  # a run that reads a validation split


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_the_embedded_validation_rows_come_from_past_the_training_rows_which_stay_the_same():
    plain = CNN.load(RunConfig())
    tuned = CNN.load(RunConfig(**TUNED, validation_limit=16))
    assert "validation" not in plain and plain["fingerprint"].keys() == {"train", "test", "overlap"}
    assert tuned["train"] == plain["train"] and tuned["test"] == plain["test"]  # untuned results do not move
    pool = CNN.embedded("train")
    assert tuned["validation"] == pool[-16:]
    ids = {r["id"] for r in tuned["validation"]}
    assert not ids & {r["id"] for r in tuned["train"]} and not ids & {r["id"] for r in tuned["test"]}
    fp = tuned["fingerprint"]
    assert fp["validation"]["rows"] == 16 and len(fp["validation"]["sha256"]) == 64
    assert fp["validation"]["source"] == "embedded train (its last 16 rows)"


def test_three_files_give_the_three_splits(tmp_path):
    rows = generate("train", 30)
    files = [write(tmp_path / f"{n}.jsonl", part) for n, part in
             (("train", rows[:20]), ("validation", rows[20:25]), ("test", rows[25:]))]
    data = CNN.load(RunConfig(**TUNED, data={"cnn": ",".join(files)}, train_limit=100))
    assert [len(data[r]) for r in ("train", "validation", "test")] == [20, 5, 5]
    assert data["validation"] == rows[20:25] and data["test"] == rows[25:]
    assert {r: data["fingerprint"][r]["source"] for r in ("train", "validation", "test")} == dict(
        zip(("train", "validation", "test"), files))
    # TRAIN,TEST and the single-split keys say the same; TASK.eval is the test split's old name
    two = CNN.load(RunConfig(data={"cnn": f"{files[0]},{files[2]}"}, train_limit=100))
    named = CNN.load(RunConfig(data={"cnn.train": files[0], "cnn.eval": files[2]}, train_limit=100))
    assert two["test"] == named["test"] == rows[25:] and two["train"] == named["train"] == rows[:20]


def test_a_training_file_holds_out_a_stated_fraction_by_content_not_by_seed(tmp_path):
    rows = generate("train", 50)
    path = write(tmp_path / "train.jsonl", rows)
    test = write(tmp_path / "test.jsonl", generate("test", 4))
    cfgs = [RunConfig(**TUNED, data={"cnn.train": path, "cnn.test": test}, validation_fraction=0.2,
                      train_limit=100, seed=seed) for seed in (0, 7)]
    a, b = (CNN.load(c) for c in cfgs)
    assert len(a["validation"]) == 10 and len(a["train"]) == 40
    assert a["validation"] == b["validation"] and a["train"] == b["train"]  # the same for every --seed
    kept = {r["id"] for r in a["train"]}
    assert [r for r in rows if r["id"] in kept] == a["train"]  # the rest keep their order
    # shuffling the file's rows holds out the same rows
    shuffled = write(tmp_path / "shuffled.jsonl", rows[::-1])
    c = CNN.load(RunConfig(**TUNED, data={"cnn.train": shuffled, "cnn.test": test}, validation_fraction=0.2,
                           train_limit=100))
    assert {r["id"] for r in c["validation"]} == {r["id"] for r in a["validation"]}
    assert "held out by content hash" in a["fingerprint"]["validation"]["source"]


def test_a_tuning_cell_never_reads_the_test_split(tmp_path):
    data = CNN.load(RunConfig(**TUNED), roles=("train", "validation"))
    assert "test" not in data and set(data["fingerprint"]) == {"train", "validation", "validation_overlap"}
    train = write(tmp_path / "train.jsonl", generate("train", 20))
    broken = tmp_path / "test.jsonl"
    broken.write_text("this is not JSON\n")  # reading it would fail
    cfg = RunConfig(**TUNED, data={"cnn": f"{train},{broken}"})
    assert len(CNN.load(cfg, roles=("train", "validation"))["validation"]) == 2  # a tenth of 20
    with pytest.raises(DataError, match="cannot read"):
        CNN.load(cfg)


def test_validation_rows_that_are_test_rows_are_refused(tmp_path):
    rows = generate("train", 12)
    train, val = write(tmp_path / "train.jsonl", rows), write(tmp_path / "val.jsonl", rows[:3])
    with pytest.raises(DataError, match="validation rows are also test rows"):
        CNN.load(RunConfig(**TUNED, data={"cnn": f"{train},{val},{val}"}))


def test_a_training_source_too_small_to_hold_out_validation_says_how_to_give_one(tmp_path):
    path = write(tmp_path / "one.jsonl", generate("train", 1))
    test = write(tmp_path / "test.jsonl", generate("test", 2))
    with pytest.raises(DataError, match=r"--data cnn.validation=FILE"):
        CNN.load(RunConfig(**TUNED, data={"cnn.train": path, "cnn.test": test}))


@pytest.mark.parametrize("text, message", [
    ("a.jsonl,b.jsonl,c.jsonl,d.jsonl", "TRAIN,TEST or TRAIN,VALIDATION,TEST"),
    ("a.jsonl,,c.jsonl", "TRAIN,TEST or TRAIN,VALIDATION,TEST"),
])
def test_a_malformed_split_list_is_one_clear_error(text, message):
    with pytest.raises(ConfigError, match=message):
        CNN.load(RunConfig(data={"cnn": text}))


def test_a_validation_row_that_duplicates_a_training_row_is_counted_and_warned_about(tmp_path, capsys):
    rows = generate("train", 20)
    val = [dict(rows[0], id="v0"), dict(rows[1], id="v1", article=rows[1]["article"].upper())] + generate("test", 3)
    test = generate("test", 8)[3:]
    cfg = RunConfig(**TUNED, data={"cnn": f"{write(tmp_path / 't.jsonl', rows)},{write(tmp_path / 'v.jsonl', val)},"
                                          f"{write(tmp_path / 'x.jsonl', test)}"})
    data = CNN.load(cfg)
    overlap = data["fingerprint"]["validation_overlap"]
    assert overlap["test_rows"] == 5 and overlap["exact"] == 2 and overlap["overlapping_test_rows"] == [0, 1]
    warn_overlap({"cnn": data})
    err = capsys.readouterr().err
    assert "cnn: 2 of 5 validation rows overlap the training rows (2 exact, 0 near" in err
    assert "a choice made on them may reward memorisation" in err


def test_carving_validation_below_the_training_limit_warns_with_both_numbers(capsys):
    data = CNN.load(RunConfig(**TUNED, train_limit=150, validation_limit=32))
    assert len(data["train"]) == 128 and data["fingerprint"]["train"]["asked"] == 150
    warn_overlap({"cnn": data})
    assert ("cnn: holding out 32 validation rows left 128 training rows of the 150 asked (--train-limit)"
            in capsys.readouterr().err)
    assert "asked" not in CNN.load(RunConfig(**TUNED, validation_limit=32))["fingerprint"]["train"]


def test_resample_train_gives_each_seed_its_own_training_rows():
    same = [CNN.load(RunConfig(seed=s))["train"] for s in (0, 1)]
    assert same[0] == same[1]
    drawn = {s: CNN.load(RunConfig(seed=s, resample_train=True))["train"] for s in (0, 1)}
    assert drawn[0] != drawn[1] and len(drawn[0]) == len(same[0]) == 48
    assert drawn[0] == CNN.load(RunConfig(seed=0, resample_train=True))["train"]  # seeded
    pool = {r["id"] for r in CNN.embedded("train")}
    assert {r["id"] for r in drawn[1]} <= pool
    fp = CNN.load(RunConfig(seed=1, resample_train=True))["fingerprint"]["train"]
    assert fp["resampled"] == {"seed": 1, "from_rows": 160, "limit": 48, "same_rows": False}


def test_resample_train_from_a_source_no_larger_than_the_limit_warns_once_with_both_numbers(capsys, monkeypatch):
    monkeypatch.delenv("HARNESS_CELL", raising=False)
    drawn = {s: CNN.load(RunConfig(seed=s, resample_train=True, train_limit=200)) for s in (0, 1)}
    rows = [{r["id"] for r in drawn[s]["train"]} for s in (0, 1)]
    assert rows[0] == rows[1] and len(rows[0]) == 160  # every seed the whole source: only the order differs
    assert drawn[0]["fingerprint"]["train"]["resampled"] == {"seed": 0, "from_rows": 160, "limit": 200,
                                                             "same_rows": True}
    lines = [line for line in capsys.readouterr().err.splitlines() if "--resample-train" in line]
    assert len(lines) == 2 and lines[0] == lines[1]  # one line per load
    assert ("cnn: --resample-train draws each seed's training rows from a source of 160 rows, not more than "
            "--train-limit 200, so every seed trains on the same rows" in lines[0])
    assert "shows the training order and initialisation only" in lines[0]
    CNN.load(RunConfig(seed=0, resample_train=True))  # 160 rows for 48: a real draw, no warning
    monkeypatch.setenv("HARNESS_CELL", "cnn x lora seed 0")  # a cell records it; the runner's load said it
    assert CNN.load(RunConfig(resample_train=True, train_limit=200))["fingerprint"]["train"]["resampled"]["same_rows"]
    assert "--resample-train" not in capsys.readouterr().err


def test_the_inline_executor_passes_its_rows_only_to_a_cell_of_the_seed_they_were_drawn_for():
    # The runner loads each task once, with the run's seed, and the inline executor hands those rows to its cells;
    # under --resample-train a cell of another seed must draw its own, or every seed would train on one draw.
    drawn = CNN.load(RunConfig(seed=0, resample_train=True))
    other = rows_for(CNN, RunConfig(seed=1, resample_train=True), ROLES, drawn)
    assert other["train"] == CNN.load(RunConfig(seed=1, resample_train=True))["train"] != drawn["train"]
    assert other["fingerprint"]["train"]["resampled"]["seed"] == 1
    assert rows_for(CNN, RunConfig(seed=0, resample_train=True), ROLES, drawn)["train"] is drawn["train"]
    plain = CNN.load(RunConfig(seed=0))
    assert rows_for(CNN, RunConfig(seed=1), ROLES, plain)["train"] is plain["train"]  # no draw: one set of rows


def _seed_records(run, limit: int | None, resample: bool = True, same_draw: bool = False) -> list[dict]:
    """Two seeds of cnn x lora as the report reads them, each with the data.json its load makes."""
    out = []
    for seed in (0, 1):
        cfg = RunConfig(seed=0 if same_draw else seed, resample_train=resample, train_limit=limit)
        folder = run / "cnn" / f"lora-seed{seed}"
        folder.mkdir(parents=True)
        (folder / "data.json").write_text(json.dumps(CNN.load(cfg)["fingerprint"]))
        hp = {"seed": seed, **({"resample_train": True} if resample else {})}
        out.append({"task": "cnn", "method": "lora", "dir": str(folder), "config": {"hyperparameters": hp},
                    "metrics": {"main_metric": "rougeL", "quality": {}, "measurements": {}}})
    return out


def seeds_line(records) -> str:
    return next(line for line in notes(records) if line.startswith("Seeds:"))


def test_the_report_says_the_rows_were_drawn_anew_only_where_the_seeds_trained_on_different_rows(tmp_path):
    drawn = seeds_line(_seed_records(tmp_path / "drawn", 48))
    assert "covers the training order, the initialisation and the training rows, which each seed drew anew" in drawn
    small = seeds_line(_seed_records(tmp_path / "small", 200))
    assert "drew anew" not in small
    assert ("covers the training order and the initialisation only: --resample-train was asked, but every seed "
            "trained on the same rows: cnn x lora (a training source of 160 rows, not more than --train-limit 200)"
            in small)
    # one draw that reached both seeds (their data.json alike) is not a redraw either
    alike = seeds_line(_seed_records(tmp_path / "alike", 48, same_draw=True))
    assert "drew anew" not in alike and "cnn x lora (every seed's training rows hash alike)" in alike
    plain = seeds_line(_seed_records(tmp_path / "plain", 48, resample=False))
    assert "every seed trained on the same rows (--resample-train redraws them per seed)" in plain
