"""A document store for the ReAct loop: Search[entity] and Lookup[keyword] over {title, text} pages.

It follows the Wikipedia environment of ReAct (Yao et al. 2023): Search on an exact title returns the first
sentences of the page; otherwise it lists similar titles, ranked by the run's --retriever through the harness's one
retriever interface (harness/spec/retrieval.py: BM25 by default), so a retriever registered there reaches the loop
too. Lookup returns, one call at a time, the next sentence of the current page that contains the keyword.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness.core.errors import DataError
from harness.spec.retrieval import make_retriever

SENTENCE = re.compile(r"(?<=[.!?])\s+")
FIRST_SENTENCES = 3  # ReAct's env shows the first 5 sentences of a Wikipedia page; our pages are short


def _key(title: str) -> str:
    return " ".join(title.lower().split())


class DocStore:
    def __init__(self, pages: list[dict], retriever: str = "bm25"):
        if not pages:
            raise DataError("the document store is empty; give --docstore a JSONL file of {title, text} pages")
        self.titles = [p["title"] for p in pages]
        self.sentences = {_key(p["title"]): [s for s in SENTENCE.split(p["text"].strip()) if s] for p in pages}
        self.pages = [{"title": p["title"], "text": p["text"]} for p in pages]
        self._retriever = make_retriever(retriever, [f"{p['title']} {p['text']}" for p in pages])

    @classmethod
    def from_jsonl(cls, path: str, retriever: str = "bm25") -> DocStore:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"document store {path} does not exist; pass a JSONL file of {{title, text}} pages")
        pages = []
        with p.open(encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise DataError(f"document store {path} line {i} is not JSON; each line must be "
                                    "{\"title\": ..., \"text\": ...}") from None
                if not isinstance(row, dict) or not row.get("title") or not isinstance(row.get("text"), str):
                    raise DataError(f"document store {path} line {i} lacks a title or text")
                pages.append({"title": str(row["title"]), "text": row["text"]})
        return cls(pages, retriever)

    def similar(self, query: str, k: int = 5) -> list[str]:
        return [self.titles[i] for i, _ in self._retriever.search(query, k)]

    def page(self, title: str) -> list[str] | None:
        return self.sentences.get(_key(title))


class Browser:
    """One episode's view of the store: the current page and the lookup cursor."""

    def __init__(self, store: DocStore):
        self.store = store
        self.page: list[str] | None = None
        self.keyword: str | None = None
        self.cursor = 0

    def search(self, entity: str) -> str:
        entity = entity.strip()
        page = self.store.page(entity)
        if page is None:
            self.page = None
            similar = self.store.similar(entity)
            return f"Could not find {entity}. Similar: [{', '.join(similar)}]."
        self.page, self.keyword, self.cursor = page, None, 0
        return " ".join(page[:FIRST_SENTENCES])

    def lookup(self, keyword: str) -> str:
        if self.page is None:
            return "There is no page to look up in; Search for an entity first."
        keyword = keyword.strip()
        if keyword.lower() != (self.keyword or "").lower():
            self.keyword, self.cursor = keyword, 0
        hits = [s for s in self.page if keyword.lower() in s.lower()]
        if self.cursor >= len(hits):
            return "No more results."
        self.cursor += 1
        return f"(Result {self.cursor} / {len(hits)}) {hits[self.cursor - 1]}"
