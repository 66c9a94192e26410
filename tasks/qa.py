"""Knowledge questions whose answers are not in the prompt: does the model know them, or can it read them?

Rows: ``{question, answer | answers, [gold], [fact]}``; SQuAD's ``answers: {text: [...], answer_start: [...]}`` is read
as its list of texts, and ``--columns qa:gold=title`` names a SQuAD row's document. ``gold`` is the id (or title)
of the knowledge-base document that holds the answer, for retrieval recall; ``fact`` names what a question asks, so
that two phrasings of one question count as one fact (else the gold id and the answer do).

The embedded data (tasks/embedded/qa_gen.py) asks about a fictional world, so the base model cannot know the
answers; its knowledge base is that world's encyclopedia, every split's pages included, as a deployed corpus
would be. A test row is **seen** when a training row of the run asked its fact (in other words), else **unseen**:
fine-tuning can only have taught the seen ones, retrieval can find both, and the metrics give each part apart.

Metrics are SQuAD v1.1's (Rajpurkar et al. 2016; its evaluate-v1.1.py): exact match and token F1 after lower-casing
and removing punctuation, the articles a/an/the and extra white space, the best over the gold answers. The answer
scored is the first line of the output (a model that runs on after its answer is not penalised for what follows,
as fever's closed mode reads its label). Retrieval recall counts a question when a passage of its gold document
was in its prompt. ``ref_perplexity`` is the first gold answer's perplexity after the eval prompt: it shows what
shots, passages or training changed even where the generated answers score the same.
"""

from __future__ import annotations

import re
import string
from collections import Counter

from harness.core.errors import DataError
from harness.spec.metrics import register_metric
from harness.spec.prompts import Passage, Query, completion_text, passage_block
from harness.spec.retrieval import EMBEDDED
from harness.spec.splits import uses_embedded
from harness.spec.task import ROLES, Context, GenerationStats, Task, register_task
from tasks.embedded import encyclopedia, qa_gen

register_metric("exact_match", True, "mean", "SQuAD exact match after normalisation, best over the gold answers")
register_metric("f1", True, "mean", "SQuAD token F1 after normalisation, best over the gold answers")
register_metric("f1_seen", True, "mean", "F1 on test questions about facts a training question asked in other words")
register_metric("f1_unseen", True, "mean", "F1 on test questions about facts no training question asked")
register_metric("recall_at_k", True, "mean", "share of questions whose gold document is among the retrieved passages")

SYSTEM = "Answer the question with a short phrase, and nothing else."
RAG_SYSTEM = "Answer the question with a short phrase from the passages, and nothing else."


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: list[str]) -> float:
    return max(float(normalize_answer(prediction) == normalize_answer(a)) for a in answers)


def _f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, answers: list[str]) -> float:
    return max(_f1(prediction, a) for a in answers)


def _answers(row: dict) -> list | None:
    """The gold answers of a row: ``answers`` (a list, a string, or SQuAD's {text: [...]}), else ``answer``."""
    value = row.get("answers", row.get("answer"))
    if isinstance(value, dict):
        value = value.get("text")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return None
    texts = [str(a).strip() for a in value if isinstance(a, (str, int, float)) and str(a).strip()]
    return texts or None


def fact_of(row: dict) -> str:
    """What a question asks, so that its phrasings count as one fact: the row's ``fact``, else gold and answer."""
    return str(row.get("fact") or f"{row.get('gold')}|{normalize_answer(row['answers'][0])}")


@register_task
class QA(Task):
    name = "qa"
    description = "knowledge questions about a fictional world, answered from memory or from retrieved passages"
    columns = ("question", "answers")
    text_columns = ("question",)
    metrics = ("f1", "exact_match", "f1_seen", "f1_unseen", "recall_at_k", "ref_perplexity")
    main_metric = "f1"
    # 96 short questions (about 60 tokens with the prompt) train LoRA in about a minute on 2 CPU cores; with three
    # retrieved passages the rows are about 300 tokens.
    train_limit = 96
    eval_limit = qa_gen.SEEN + qa_gen.UNSEEN
    max_new_tokens = 16  # the longest embedded answer ("a series of harbour paintings") is 7 tokens

    def embedded(self, split: str) -> list[dict]:
        return qa_gen.generate("train" if split == "train" else "test")

    def embedded_corpus(self) -> list[dict]:
        return [{"id": p["title"], "title": p["title"], "text": p["text"]} for p in encyclopedia.encyclopedia()[0]]

    def knowledge_base(self, cfg) -> str | None:
        """--corpus qa=FILE, else the embedded encyclopedia for the embedded questions (your own questions need
        your own documents)."""
        if cfg.corpus.get(self.name):
            return cfg.corpus[self.name]
        return EMBEDDED if uses_embedded(self.name, cfg.data) else None

    def method_issue(self, method, cfg) -> str | None:
        if method.retrieve is not None and self.knowledge_base(cfg) is None:
            return ("qa's questions are your own and the embedded knowledge base holds only the embedded world; "
                    "pass --corpus qa=FILE.jsonl with the documents that answer them")
        return super().method_issue(method, cfg)

    def normalize(self, rows, columns, where):
        rows = self.rename(rows, columns, where)
        if "question" not in rows[0]:
            raise DataError(f"{where} has no column 'question' (found: {', '.join(sorted(rows[0]))}); map yours "
                            "with --columns qa:question=YOUR_COLUMN")
        if "answers" not in rows[0] and "answer" not in rows[0]:
            raise DataError(f"{where} has no column 'answer' or 'answers' (found: {', '.join(sorted(rows[0]))}); "
                            "map yours with --columns qa:answers=YOUR_COLUMN")
        out, dropped = [], []
        for i, row in enumerate(rows):
            answers = _answers(row)
            if answers is None:
                dropped.append({"row": i, "reason": "no answer text"})
                continue
            out.append({"id": str(row.get("id", i)), "question": row.get("question"), "answers": answers,
                        "gold": str(row["gold"]) if row.get("gold") not in (None, "") else None,
                        **({"fact": str(row["fact"])} if row.get("fact") else {})})
        if not out:
            raise DataError(f"{where}: none of its {len(rows)} rows has an answer; give each row an 'answer' or "
                            "'answers'")
        self.check_text(out, where)
        return out, dropped

    def load(self, cfg, roles: tuple = ROLES) -> dict:
        """The splits, each test and validation row marked seen or unseen against the training rows."""
        data = super().load(cfg, roles)
        trained = {fact_of(r) for r in data.get("train", [])}
        for role in ("validation", "test"):
            for row in data.get(role, []):
                row["part"] = "seen" if fact_of(row) in trained else "unseen"
        return data

    # --- prompts -----------------------------------------------------------------------------------------
    def query(self, row: dict, ctx: Context) -> Query:
        return Query(head=f"Question: {row['question']}", system=SYSTEM)

    def answer(self, row: dict, ctx: Context) -> str:
        return row["answers"][0]

    def search_text(self, row: dict) -> str:
        return row["question"]

    def with_passages(self, row: dict, query: Query, passages: list[Passage], ctx: Context) -> Query:
        """The passages first, cut from the end when they do not fit, then the question, whole."""
        if not passages:
            return query
        return Query(text=passage_block(passages), tail=f"\n\nQuestion: {row['question']}", system=RAG_SYSTEM)

    def reference(self, row: dict) -> str:
        return row["answers"][0]

    # --- evaluation --------------------------------------------------------------------------------------
    def evaluate(self, model, rows, ctx, stats: GenerationStats) -> list[dict]:
        preds = super().evaluate(model, rows, ctx, stats)
        nll = ctx.completion_nll(model, [p["prompt"] for p in preds],
                                 [completion_text(ctx, self.reference(r)) for r in rows], ctx.batch_size,
                                 label="perplexity qa")
        for p, r, (total, n) in zip(preds, rows, nll, strict=True):
            p.update(answers=r["answers"], gold=r.get("gold"), part=r.get("part"), ref_nll=total, ref_tokens=n)
        return preds

    def score(self, predictions: list[dict]) -> dict[str, list]:
        answer = [p["output"].splitlines()[0] if p["output"] else "" for p in predictions]
        f1s = [f1(a, p["answers"]) for a, p in zip(answer, predictions)]
        return {"f1": f1s,
                "exact_match": [exact_match(a, p["answers"]) for a, p in zip(answer, predictions)],
                "f1_seen": [v if p.get("part") == "seen" else None for v, p in zip(f1s, predictions)],
                "f1_unseen": [v if p.get("part") == "unseen" else None for v, p in zip(f1s, predictions)],
                "recall_at_k": [float(p["gold"] in p["passages"]) if p.get("gold") and p.get("passages") is not None
                                else None for p in predictions],
                # Records written before qa scored the reference's perplexity have no ref_nll: no value there.
                "ref_perplexity": [(p["ref_nll"], p["ref_tokens"]) if "ref_nll" in p else None for p in predictions]}
