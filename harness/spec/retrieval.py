"""Knowledge bases and the one retriever interface that ranks their passages for a query.

A knowledge base is a JSONL of documents, ``{title, text}`` or ``{id, text}`` (``--corpus TASK=FILE``), or the one a
task brings for its embedded data (qa's and fever's fictional encyclopedia). Documents longer than
``--passage-words`` are split into passages of that many words, each keeping its document's id and title, so a
gold document id names all of its passages. A ``Retriever`` ranks passages (or any texts) for a query, best
first; ``RETRIEVERS`` maps ``--retriever`` names to retrievers, BM25 through the bm25s library the only one built
in, so that a dense retriever can join as an optional extra behind the same interface.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from harness.core.errors import DataError
from harness.core.files import sha256_json
from harness.core.registry import Registry
from harness.spec.prompts import Passage

EMBEDDED = "embedded"


@dataclass(frozen=True)
class Corpus:
    """A knowledge base cut into passages; ``fingerprint`` is what a cell records of it."""

    source: str
    passages: tuple
    documents: int
    sha256: str
    without_text: int = 0  # documents whose text is empty or blank, left out

    def fingerprint(self) -> dict:
        return {"source": self.source, "documents": self.documents, "passages": len(self.passages),
                "sha256": self.sha256, "documents_without_text": self.without_text}


def read_documents(path: str) -> tuple[list[dict], int]:
    """The documents of a JSONL knowledge base, each {"id", "title", "text"}, and how many were left out for empty
    text (nothing to retrieve); one clear error per problem."""
    p = Path(path)
    where = f"--corpus {path}"
    if not p.is_file():
        raise DataError(f"{where} does not exist; pass a JSONL file of {{title, text}} or {{id, text}} documents")
    docs, without_text = [], 0
    with p.open(encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise DataError(f"{where} line {i} is not JSON; a knowledge base is JSONL, one "
                                "{\"title\": ..., \"text\": ...} document per line") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                found = ", ".join(sorted(row)) if isinstance(row, dict) else type(row).__name__
                raise DataError(f"{where} line {i} has no text column (found: {found}); each document needs "
                                "\"text\" and a \"title\" or \"id\"")
            doc_id = row.get("id", row.get("title"))
            if doc_id is None or not str(doc_id).strip():
                raise DataError(f"{where} line {i} has neither a title nor an id; give each document one")
            if row["text"].strip():
                docs.append({"id": str(doc_id), "title": str(row.get("title") or doc_id), "text": row["text"]})
            else:
                without_text += 1
    if not docs:
        raise DataError(f"{where} holds no documents with text; pass a JSONL file of {{title, text}} documents")
    return docs, without_text


def split_passages(docs: list[dict], words: int) -> list[Passage]:
    """Each document as passages of at most ``words`` words, in order, with its id and title."""
    out = []
    for d in docs:
        ws = d["text"].split()
        if len(ws) <= words:
            out.append(Passage(d["id"], d["title"], d["text"].strip()))
            continue
        out += [Passage(d["id"], d["title"], " ".join(ws[i:i + words])) for i in range(0, len(ws), words)]
    return out


def corpus_of(docs: list[dict], source: str, words: int, without_text: int = 0) -> Corpus:
    return Corpus(source, tuple(split_passages(docs, words)), len(docs), sha256_json(docs), without_text)


@lru_cache(maxsize=4)
def load_corpus(path: str, words: int) -> Corpus:
    """A knowledge base file, read and split once per process (every method's cell of a run shares it)."""
    docs, without_text = read_documents(path)
    return corpus_of(docs, path, words, without_text)


class Retriever(Protocol):
    """Ranks the texts it was built over for a query: (index, score) pairs, best first, at most ``k``, none
    with a score of zero or less (a passage that shares nothing with the query is not retrieved)."""

    def search(self, query: str, k: int) -> list[tuple[int, float]]: ...


class BM25:
    """Okapi BM25 over the texts, with bm25s' defaults (k1 1.5, b 0.75) and English stop words removed."""

    def __init__(self, texts: list[str]):
        import bm25s

        if not texts:
            raise DataError("there is nothing to retrieve from: the knowledge base is empty")
        self.n = len(texts)
        self._bm25 = bm25s.BM25()
        self._bm25.index(bm25s.tokenize(list(texts), stopwords="en", show_progress=False), show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        import bm25s

        k = min(k, self.n)
        if k <= 0:
            return []
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.ids or not tokens.ids[0]:  # a query of stop words only
            return []
        docs, scores = self._bm25.retrieve(tokens, k=k, show_progress=False)
        return [(int(d), float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]


RETRIEVERS = Registry("retriever")
RETRIEVERS.add("bm25", BM25)


def make_retriever(name: str, texts: list[str]) -> Retriever:
    return RETRIEVERS.lookup(name)(texts)


def knowledge_base(task, cfg) -> Corpus | None:
    """The knowledge base of ``task`` under ``cfg`` (``Task.knowledge_base`` says where it is), or None."""
    source = task.knowledge_base(cfg)
    if source is None:
        return None
    if source == EMBEDDED:
        return _embedded(task, cfg.passage_words)
    return load_corpus(source, cfg.passage_words)


@lru_cache(maxsize=4)
def _embedded(task, words: int) -> Corpus:
    return corpus_of(task.embedded_corpus(), f"{task.name} embedded", words)


def index_text(p: Passage) -> str:
    """What a passage is ranked by: its title and its text."""
    return f"{p.title} {p.text}"
