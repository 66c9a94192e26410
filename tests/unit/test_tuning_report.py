"""The search in the report: every trial with its state, the chosen point, the settings left out, the importances,
an edge or a budget that ran out, and the plot, from the trial cells' records and the searches' own records."""

import json

import pytest
from matplotlib.colors import to_hex

from harness.records.tuning import search_path, tunings
from harness.report.render import markdown
from harness.report.tuning import search_figure, search_notes, tuning_note, tuning_table, validation_curves
from harness.spec.search import Dim

LR = Dim("lr", "log", 1e-4, 1e-2)
RANK = Dim("lora_r", "pow2", 2, 6)  # 4..64


def _cells(method: str, trials: list[tuple], by: str) -> list[dict]:
    """The trial cells' records (one seed): (number, params, status, rougeL, loss) per trial."""
    out = []
    for number, params, status, rouge, loss in trials:
        metrics = {"main_metric": "rougeL", "quality": {"rougeL": {"value": rouge, "n": 8},
                                                        "loss": {"value": loss, "n": 8}}} if status == "ok" else None
        out.append({"task": "cnn", "method": method, "status": {"status": status}, "metrics": metrics,
                    "dir": f"/nowhere/cnn/{method}.trial{number}", "config": {
                        "hyperparameters": {"seed": 0},
                        "tuning": {"role": "trial", "study": f"cnn/{method}", "number": number, "params": params,
                                   "by": by}}})
    return out


def _search(run, method: str, space: dict, searched: dict, trials: list[dict], chosen: int, **more) -> None:
    """A search's own record as the engine writes it: JSON with its keys sorted (lora_r before lr)."""
    record = {"by": "rougeL", "budget": len(trials), "space": {"dims": {k: d.to_dict() for k, d in space.items()},
                                                              "left_out": more.pop("left_out", {})},
              "searched": {k: d.to_dict() for k, d in searched.items()}, "trials": trials, "chosen": chosen,
              "sampler": "TPE", "pruner": "median", **more}
    path = search_path(run, "cnn", method)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, sort_keys=True))


def _run(run, by: str = "rougeL") -> list:
    """full searched lr and chose the top of its range; lora searched lr and lora_r, widened lora_r to 2 after
    trial 1 and chose rank 4 again, and its budget ended before any trial below 4 ran."""
    full = [(0, {"lr": 1e-5}, "ok", 0.20, 2.0), (1, {"lr": 1e-3}, "ok", 0.30, 1.5)]
    lora = [(0, {"lr": 1e-3, "lora_r": 8}, "ok", 0.40, 1.2), (1, {"lr": 3e-3, "lora_r": 4}, "ok", 0.50, 1.1),
            (2, {"lr": 1e-2, "lora_r": 16}, "pruned", None, None),
            (3, {"lr": 1e-4, "lora_r": 64}, "failed", None, None)]
    _search(run, "full", {"lr": Dim("lr", "log", 1e-5, 1e-3)}, {"lr": Dim("lr", "log", 1e-5, 1e-3)},
            [{"number": n, "state": "complete", "drawn": p, "losses": {}} for n, p, *_ in full], 1,
            left_out={"lora_alpha": "full trains no LoRA adapter", "lora_r": "full trains no LoRA adapter"})
    drawn = [{"lr": 1e-3, "lora_r": 3}, {"lr": 3e-3, "lora_r": 2}, {"lr": 1e-2, "lora_r": 4}, {"lr": 1e-4, "lora_r": 6}]
    states = ("complete", "complete", "pruned", "failed")
    _search(run, "lora", {"lr": LR, "lora_r": RANK}, {"lr": LR, "lora_r": Dim("lora_r", "pow2", 1, 6)},
            [{"number": n, "state": s, "drawn": d, "losses": {"4": 2.5, "8": 2.9} if s == "pruned" else {}}
             for n, (s, d) in enumerate(zip(states, drawn))], 1,
            widened=[{"after_trial": 1, "key": "lora_r", "side": "low", "from": RANK.describe(),
                      "to": "lora_r 2..64 (powers of 2)"}], importance={"lora_r": 0.1, "lr": 0.9})
    return tunings(_cells("full", full, by) + _cells("lora", lora, by), run)


def test_the_search_section_shows_every_trial_the_choice_what_was_left_out_and_where_the_search_stopped(tmp_path):
    ts = _run(tmp_path)
    table = markdown(tuning_table("cnn", ts))
    assert table.startswith("| method | trial | lr | lora_r | rougeL (validation) ↑ | loss (validation) ↓ |")
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines() if line.startswith("| ")]
    by_trial = {(r[0], r[1]): (r[2], r[3], r[-1]) for r in rows[1:]}
    assert by_trial == {("full", "0"): ("1e-05", "-", "complete"), ("full", "1"): ("0.001", "-", "chosen"),
                        ("lora", "0"): ("0.001", "8", "complete"), ("lora", "1"): ("0.003", "4", "chosen"),
                        ("lora", "2"): ("0.01", "16", "pruned"), ("lora", "3"): ("0.0001", "64", "failed")}
    assert tuning_note(ts).endswith("Chosen: cnn x full: trial 1 (lr=0.001); cnn x lora: trial 1 (lr=0.003, "
                                    "lora_r=4).")
    notes = search_notes(ts)
    assert ("Search of cnn x lora: 4 trials (2 complete, 1 pruned, 1 failed) over lr 0.0001..0.01 (log), lora_r "
            "4..64 (powers of 2); sampler: TPE; pruner: median.") in notes  # the spec's order, not the JSON's
    assert notes.index("cnn x full: lora_r left out of the search (full trains no LoRA adapter).") == \
        notes.index("cnn x full: lora_alpha left out of the search (full trains no LoRA adapter).") - 1
    assert ("cnn x lora: importance of the searched settings (Optuna's default evaluator, over the complete "
            "trials): lr 0.90, lora_r 0.10.") in notes
    assert ("**cnn x full: the chosen trial still sits at the high edge of lr 1e-05..0.001 (log)** when the budget "
            "of 2 trials ended; the best lr may lie beyond it.") in notes
    assert ("**cnn x lora: lora_r widened to lora_r 2..64 (powers of 2), but the budget ended before a trial below 4 "
            "ran**; rerun with more --tune-trials (and the same --run-name) to go on from these trials.") in notes
    assert not [n for n in notes if "cnn x lora: the chosen trial still sits" in n]


def _panel(ax) -> dict:
    """{legend label: (colour, [(x, y)], hollow)} of one panel's scatter plots."""
    out = {}
    for c in ax.collections:
        face, edge = c.get_facecolor(), c.get_edgecolor()
        hollow = len(face) == 0 or face[0][3] == 0
        out[c.get_label()] = (to_hex((edge if hollow else face)[0]), [tuple(p) for p in c.get_offsets()], hollow)
    return out


def test_the_plot_has_a_panel_per_searched_setting_and_one_colour_per_method_on_every_panel(tmp_path):
    ts = _run(tmp_path)
    assert validation_curves("cnn", ts).startswith("data:image/png;base64,")
    fig = search_figure("cnn", ts)
    assert [ax.get_title() for ax in fig.axes] == ["lr", "lora_r"]  # one panel per searched setting, in order
    lr, rank = (_panel(ax) for ax in fig.axes)
    assert set(lr) == {"full", "lora", "lora: 1 pruned, not drawn (no final rougeL)"} and "full" not in rank
    assert lr["lora"][0] == rank["lora"][0] != lr["full"][0]  # lora keeps its colour on the lora_r panel
    assert rank["lora"][1] == [(8.0, 0.40), (4.0, 0.50)] and lr["lora: 1 pruned, not drawn (no final rougeL)"][2]
    by_loss = _panel(search_figure("cnn", _run(tmp_path / "loss", by="loss")).axes[1])
    colour, points, hollow = by_loss["lora pruned (the loss where it stopped)"]
    assert hollow and points == [(16.0, pytest.approx(2.9))] and colour == by_loss["lora"][0]
