"""The fever task: both source schemas, labels, targets per mode, the gold trajectories, and scores."""

import json

import pytest

from harness.core.errors import DataError
from harness.spec.config import RunConfig
from harness.spec.retrieval import RETRIEVERS
from harness.spec.task import Context, get_task
from tasks import react
from tasks.docstore import Browser
from tasks.embedded import fever_gen
from tasks.fever import load_docstore

F = get_task("fever")


def load(tmp_path, rows, **cfg):
    path = tmp_path / "f.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg.setdefault("docstore", "embedded")  # these rows are about the embedded world (tasks/fever.py check_docstore)
    return F.load(RunConfig(tasks=("fever",), data={"fever": str(path)}, **cfg))


def test_claim_schema_with_label_spellings_and_bad_labels(tmp_path):
    rows = [{"id": 1, "claim": "A is B.", "label": "SUPPORTS"}, {"id": 2, "claim": "C.", "label": "refuted"},
            {"id": 3, "claim": "D.", "label": "NEI"}, {"id": 4, "claim": "E.", "label": "banana"},
            {"id": 5, "claim": "F.", "label": "Not Enough Info", "evidence": ["F is unknown."]}] * 2
    data = load(tmp_path, rows, eval_limit=4)
    labels = {r["label"] for r in data["train"] + data["test"]}
    assert labels == {"SUPPORTS", "REFUTES", "NOT ENOUGH INFO"}
    assert data["fingerprint"]["train"]["unparsed"]["count"] == 2
    assert "unknown label 'banana'" in data["fingerprint"]["train"]["unparsed"]["examples"][0]["reason"]


def test_trajectory_schema_and_missing_column(tmp_path):
    traj = "Thought 1: x\nAction 1: Finish[SUPPORTS]"
    data = load(tmp_path, [{"claim": "A.", "trajectories": [traj], "label": "SUPPORTS"}] * 4)
    assert data["test"][0]["trajectories"] == traj
    with pytest.raises(DataError, match="has no column 'label'.*--columns fever:label=YOUR_COLUMN"):
        load(tmp_path, [{"claim": "A.", "verdict": "SUPPORTS"}])
    with pytest.raises(DataError, match="no row has a known label"):
        load(tmp_path, [{"claim": "A.", "label": "yes"}])


def test_embedded_claims_are_balanced_and_unseen():
    train, ev = fever_gen.generate("train"), fever_gen.generate("validation")
    assert len(train) >= 128 and len(ev) >= 30
    for rows in (train, ev[:30]):
        counts = {lab: sum(r["label"] == lab for r in rows) for lab in react.LABELS}
        assert len(set(counts.values())) == 1
    assert not {r["claim"] for r in train} & {r["claim"] for r in ev}


def test_gold_trajectories_replay_exactly_through_the_loop():
    """A fake model that writes the gold Thought/Action steps gets the gold observations back from the real
    tools, and so reproduces each gold trajectory and its label."""
    for row in fever_gen.generate("validation")[:12]:
        gold = row["trajectories"]
        steps = [part.split("\nObservation")[0] for part in gold.split("Thought ")[1:]]
        outputs = iter(" " + s.split(":", 1)[1].lstrip() for s in steps)
        ep = react.Episode(Browser(fever_gen.store()))
        react.run_loop(["p"], [ep], lambda contexts, n, it=outputs: [next(it)], max_steps=6)
        assert ep.label == row["label"]
        assert ep.text == gold
        assert react.parse_trajectory(gold).label == row["label"]


class Reversed:
    """A stand-in retriever: every text, last first, whatever the query."""

    def __init__(self, texts):
        self.n = len(texts)

    def search(self, query, k):
        return [(i, 1.0) for i in reversed(range(self.n))][:k]


def test_the_react_loop_searches_through_the_retriever_interface(monkeypatch):
    """A retriever registered beside BM25 ranks the loop's similar titles; BM25's own ranking is unchanged."""
    monkeypatch.setitem(RETRIEVERS, "reversed", Reversed)
    load_docstore.cache_clear()
    try:
        titles = fever_gen.store().titles
        miss = Browser(load_docstore(None, "reversed")).search("no such page")
        assert miss == f"Could not find no such page. Similar: [{', '.join(titles[::-1][:5])}]."
        bm25 = load_docstore("embedded", "bm25")
        for entity in (titles[0].split()[0], "river town", titles[-1][:6]):
            assert bm25.similar(entity) == fever_gen.store().similar(entity) != []
    finally:
        load_docstore.cache_clear()


def test_training_targets_per_mode(tokenizer):
    row = {"id": "1", "claim": "A is B.", "label": "REFUTES", "evidence": "A is C.",
           "trajectories": "Thought 1: t\nAction 1: Finish[REFUTES]"}
    react_ctx = Context(tok=tokenizer, max_seq_len=512, max_new_tokens=8, cfg=RunConfig(fever_mode="react"))
    pair = F.train_pair(row, react_ctx)
    assert pair["completion"] == row["trajectories"] and "Search[entity]" in pair["prompt"]
    assert F.train_pair({**row, "trajectories": None}, react_ctx)["completion"].endswith("Finish[REFUTES]")
    closed = Context(tok=tokenizer, max_seq_len=512, max_new_tokens=8, cfg=RunConfig(fever_mode="closed"))
    pair = F.train_pair(row, closed)
    assert pair["completion"] == "REFUTES" and "Evidence: A is C." in pair["prompt"]


def test_scores_by_hand():
    preds = [
        {"label": "SUPPORTS", "reference": "SUPPORTS", "finished": True, "steps": 2, "invalid_actions": 0},
        {"label": "REFUTES", "reference": "SUPPORTS", "finished": True, "steps": 3, "invalid_actions": 1},
        {"label": None, "reference": "NOT ENOUGH INFO", "finished": False, "steps": 6, "invalid_actions": 6},
        {"label": "NOT ENOUGH INFO", "reference": "NOT ENOUGH INFO", "finished": True, "steps": 3,
         "invalid_actions": 0},
    ]
    from harness.spec.metrics import summarise

    out = summarise(F.score(preds), n_boot=200, seed=0)
    assert out["label_accuracy"]["value"] == 0.5
    # F1: SUPPORTS tp1 fp0 fn1 = 2/3; NEI tp1 fp0 fn1 = 2/3 (REFUTES and NONE are not gold labels)
    assert out["macro_f1"]["value"] == pytest.approx(2 / 3)
    assert out["finish_rate"]["value"] == 0.75
    assert out["invalid_action_rate"]["value"] == pytest.approx(7 / 14)
    assert out["mean_steps"]["value"] == 3.5
    assert out["invalid_action_rate"]["higher_is_better"] is False
    table = F.extra_report(preds)["confusion"]
    assert table["rows"][0] == ["SUPPORTS", "1", "1", "0", "0"]
    assert table["rows"][2] == ["NOT ENOUGH INFO", "0", "0", "1", "1"]


def test_closed_mode_scores_only_labels():
    preds = [{"label": "SUPPORTS", "reference": "SUPPORTS"}]
    assert set(F.score(preds)) == {"label_accuracy", "macro_f1"}
