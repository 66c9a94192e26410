"""The qa task: SQuAD's exact match and F1, its rows in every schema it reads, and its knowledge base."""

import json

import pytest

from harness.core.errors import DataError
from harness.spec.config import RunConfig
from harness.spec.task import get_task
from tasks import qa

# Hand-made cases, each worked out by hand with SQuAD v1.1's rules (evaluate-v1.1.py): lower case, punctuation out,
# a/an/the out, single spaces; F1 over the remaining tokens; the best over the gold answers.
CASES = [
    # prediction, gold answers, exact match, F1
    ("The Eiffel Tower", ["Eiffel Tower"], 1.0, 1.0),  # the article goes
    ("eiffel tower!", ["The Eiffel Tower."], 1.0, 1.0),  # case and punctuation go
    ("  River   Wend ", ["River Wend"], 1.0, 1.0),  # white space collapses
    ("the river", ["River Wend"], 0.0, 2 * (1 / 1) * (1 / 2) / (1 / 1 + 1 / 2)),  # P 1, R 1/2 -> 2/3
    ("Wend river is long", ["River Wend"], 0.0, 2 * (2 / 4) * (2 / 2) / (2 / 4 + 2 / 2)),  # P 1/2, R 1 -> 2/3
    ("12,000", ["12000"], 1.0, 1.0),  # the comma is punctuation
    ("a cello concerto", ["concerto", "a cello concerto"], 1.0, 1.0),  # the best of the golds
    ("cello", ["concerto", "a cello concerto"], 0.0, 2 * 1 * (1 / 2) / (1 + 1 / 2)),  # best F1: vs "cello concerto"
    ("nothing alike", ["River Wend"], 0.0, 0.0),
    ("an", ["the"], 1.0, 0.0),  # both normalise to nothing: equal strings, but no tokens to share
]


def reference_normalise(s: str) -> str:
    """An implementation of SQuAD's normalisation written apart from the task's: step by step, as the script."""
    s = s.lower()
    s = "".join(c for c in s if c not in '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~')
    s = " ".join(w for w in s.split() if w not in ("a", "an", "the"))
    return s


@pytest.mark.parametrize("prediction, answers, em, f1", CASES)
def test_exact_match_and_f1_follow_squad(prediction, answers, em, f1):
    assert qa.exact_match(prediction, answers) == em
    assert qa.f1(prediction, answers) == pytest.approx(f1)
    assert qa.normalize_answer(prediction) == reference_normalise(prediction)


def test_scores_take_the_first_line_and_split_seen_from_unseen():
    preds = [{"output": "River Wend\nand more text", "answers": ["River Wend"], "part": "seen", "gold": "A",
              "passages": ["A", "B"]},
             {"output": "wrong", "answers": ["River Wend"], "part": "unseen", "gold": "C", "passages": ["A", "B"]},
             {"output": "", "answers": ["x"], "part": "unseen", "gold": None}]
    s = get_task("qa").score(preds)
    assert s["f1"] == [1.0, 0.0, 0.0] and s["exact_match"] == [1.0, 0.0, 0.0]
    assert s["f1_seen"] == [1.0, None, None] and s["f1_unseen"] == [None, 0.0, 0.0]
    assert s["recall_at_k"] == [1.0, 0.0, None]


def test_rows_in_the_hubs_squad_schema_read_as_questions_with_answers_and_gold(tmp_path):
    task = get_task("qa")
    squad = [{"id": "5733be28", "title": "University_of_Notre_Dame", "context": "Architecturally, ...",
              "question": "To whom did the Virgin Mary allegedly appear in 1858?",
              "answers": {"text": ["Saint Bernadette Soubirous"], "answer_start": [515]}},
             {"id": "5733be29", "title": "Beyonce", "context": "...", "question": "When did she become popular?",
              "answers": {"text": ["in the late 1990s", "late 1990s"], "answer_start": [269, 276]}}]
    rows, dropped = task.normalize(squad, {"gold": "title"}, "squad")
    assert not dropped
    assert rows[0] == {"id": "5733be28", "question": squad[0]["question"], "answers": ["Saint Bernadette Soubirous"],
                       "gold": "University_of_Notre_Dame"}
    assert rows[1]["answers"] == ["in the late 1990s", "late 1990s"]
    plain = task.normalize([{"question": "Q?", "answer": "A"}], {}, "plain")[0]
    assert plain[0]["answers"] == ["A"] and plain[0]["gold"] is None
    # read from a local file in the Hub's schema, through the run's own loader
    path = tmp_path / "squad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in squad * 4))
    cfg = RunConfig(tasks=("qa",), methods=("base",), data={"qa": str(path)}, columns={"qa": {"gold": "title"}})
    data = task.load(cfg)
    assert data["test"] and all(r["gold"] in ("University_of_Notre_Dame", "Beyonce") for r in data["test"])


@pytest.mark.parametrize("rows, message", [
    ([{"query": "Q?", "answer": "A"}], "has no column 'question' (found: answer, query); map yours with --columns "
                                       "qa:question=YOUR_COLUMN"),
    ([{"question": "Q?", "label": "A"}], "has no column 'answer' or 'answers' (found: label, question); map yours "
                                         "with --columns qa:answers=YOUR_COLUMN"),
    ([{"question": "Q?", "answer": ""}], "none of its 1 rows has an answer"),
])
def test_a_qa_file_without_a_question_or_answer_column_points_to_columns(rows, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_task("qa").normalize(rows, {}, "qa data")


def test_the_knowledge_base_is_the_encyclopedia_for_the_embedded_questions_only(tmp_path):
    task = get_task("qa")
    assert task.knowledge_base(RunConfig(tasks=("qa",), methods=("rag",))) == "embedded"
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": "A"}) + "\n")
    own = RunConfig(tasks=("qa",), methods=("rag",), data={"qa": str(path)})
    assert task.knowledge_base(own) is None
    assert "pass --corpus qa=FILE.jsonl" in task.method_issue(own.specs[0], own)
    assert task.knowledge_base(RunConfig(tasks=("qa",), methods=("rag",), corpus={"qa": "kb.jsonl"},
                                         data={"qa": str(path)})) == "kb.jsonl"
    pages = task.embedded_corpus()
    assert len(pages) == 120 and {"id", "title", "text"} <= set(pages[0])
