"""What a method adds to a cell's prompts: shots from the training split, and passages from the knowledge base.

``Prompting`` is built once per cell and handed to the task on its Context; the task's prompts ask it, row by row,
for the shots and the passages (harness/spec/task.py, ``Task.prompt``), and harness/spec/prompts.py fits them.

* **Shots** (``shots=K``): ``random`` orders the training rows once per cell with the cell's seed, so one draw
  serves every query (HELM does the same) and ``--seeds`` gives several draws; each query takes the first K of them
  that are neither itself nor a duplicate of it (the same normalised text). The order starts with the K + 1 rows
  lm-eval would draw (one more example, to drop the query), then goes on through the rest, so a query that meets
  itself and a duplicate among the first K + 1 still gets K shots. ``similar`` takes, for each query, the K training
  rows nearest to it by BM25, nearest first, so that dropping shots from the end to fit drops the least similar.
* **Passages** (``retrieve=K``): the K passages ranked highest for the task's search text of the row. For training
  rows with ``raft=P`` (RAFT, Zhang et al. 2024), a share P of the rows, chosen by a hash of the row and the seed,
  keeps its gold passage among the K (put in place of the last when retrieval missed it), and the rest get the K
  best passages of other documents, distractors only.

Each prompt's outcome (shots kept, passage documents) is noted by the prompt text, for the cell's predictions and
its record of what the prompts held.
"""

from __future__ import annotations

import hashlib
import random
from itertools import islice

from harness.core.errors import DataError
from harness.spec.overlap import words
from harness.spec.prompts import Passage
from harness.spec.retrieval import Corpus, index_text, make_retriever

DEEPER = 5  # times K passages searched for RAFT, to find distractors once gold passages are set aside


def normalised(text: str) -> str:
    """A query's text as duplicates are compared: lower-case words of letters and digits."""
    return " ".join(words(text))


def seeded_order(n: int, first: int, seed: int) -> list[int]:
    """Every index below ``n`` once, in the order of the cell's seed: the ``first`` exactly as ``random.sample``
    drew them before the order went on past them (a query they do not hold keeps the shots and the recorded draw it
    had), then the rest, shuffled by the same generator."""
    rng = random.Random(f"shots-{seed}")
    head = rng.sample(range(n), min(first, n))
    taken = set(head)
    rest = [i for i in range(n) if i not in taken]
    rng.shuffle(rest)
    return head + rest


class Prompting:
    def __init__(self, task, method, ctx, train_rows: list[dict], seed: int, corpus: Corpus | None = None,
                 retriever: str = "bm25"):
        self.task, self.ctx, self.seed = task, ctx, seed
        self.k_shots, self.select = method.shots or 0, method.shot_select
        self.k_passages, self.raft = method.retrieve or 0, method.raft
        self.pool = list(train_rows)
        self.corpus = corpus
        self.notes: dict[str, dict] = {}
        self._keys = [self._key(r) for r in self.pool]
        self._draw = None
        self._shot_index = self._passage_index = None
        self._searched: dict[tuple, list] = {}
        if self.k_shots:
            if self.k_shots > len(self.pool):
                raise DataError(f"{task.name}: shots={self.k_shots} is more than the {len(self.pool)} training rows; "
                                "lower shots or give more training rows (--train-limit)")
            if self.select == "random":
                self._draw = seeded_order(len(self.pool), self.k_shots + 1, seed)
            else:
                self._shot_index = make_retriever(retriever, [task.search_text(r) for r in self.pool])
        if self.k_passages:
            if corpus is None:
                raise DataError(f"{task.name} has no knowledge base; pass --corpus {task.name}=FILE.jsonl")
            self._passage_index = make_retriever(retriever, [index_text(p) for p in corpus.passages])

    def _key(self, row: dict) -> str:
        return normalised(self.task.query(row, self.ctx).user())

    # --- shots -------------------------------------------------------------------------------------------
    def shots(self, row: dict) -> list[dict]:
        """The training rows shown as worked examples before ``row``, never ``row`` itself or a duplicate of it."""
        if not self.k_shots:
            return []
        own = self._key(row)
        if self._draw is not None:
            order = self._draw
        else:
            order = [i for i, _ in self._search(self._shot_index, "shots", self.task.search_text(row),
                                                self.k_shots + 1 + self._copies(own))]
        return list(islice((self.pool[i] for i in order if self._keys[i] != own), self.k_shots))

    def _copies(self, key: str) -> int:
        """How many training rows duplicate the query: similar search looks that much further."""
        return sum(k == key for k in self._keys)

    def draw(self) -> list:
        """The ids of the K + 1 rows a random draw puts first (the record of which examples a cell showed; a query
        among them, or duplicated among them, goes on to the next rows of the order)."""
        first = self._draw[:self.k_shots + 1] if self._draw is not None else []
        return [self.pool[i].get("id", i) for i in first]

    # --- passages ----------------------------------------------------------------------------------------
    def passages(self, row: dict, training: bool = False) -> list[Passage]:
        if not self.k_passages:
            return []
        query, k = self.task.search_text(row), self.k_passages
        if not (training and self.raft is not None):
            return [self.corpus.passages[i] for i, _ in self._search(self._passage_index, "passages", query, k)]
        gold = row.get("gold")
        if not gold:
            raise DataError(f"{self.task.name}: raft needs each training row to name its gold document (a 'gold' "
                            "column); this row has none")
        ranked = [self.corpus.passages[i] for i, _ in self._search(self._passage_index, "passages", query,
                                                                  k * DEEPER)]
        others = [p for p in ranked if p.doc != str(gold)]
        if not self._keeps_gold(row):
            return others[:k]
        golds = [p for p in ranked if p.doc == str(gold)] or [p for p in self.corpus.passages if p.doc == str(gold)]
        if not golds:
            raise DataError(f"{self.task.name}: a training row names gold document {gold!r}, which the knowledge base "
                            f"({self.corpus.source}) does not hold")
        top = ranked[:k]
        if any(p.doc == str(gold) for p in top):
            return top
        return others[:k - 1] + golds[:1]

    def _keeps_gold(self, row: dict) -> bool:
        """RAFT's coin for one training row: the same for the same row and seed, on every machine."""
        digest = hashlib.sha256(f"raft-{self.seed}-{self._key(row)}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.raft

    def _search(self, index, what: str, query: str, k: int) -> list:
        key = (what, query, k)
        if key not in self._searched:
            self._searched[key] = index.search(query, k)
        return self._searched[key]

    # --- what the prompts held ---------------------------------------------------------------------------
    def note(self, prompt: str, shots: int, passages: list[Passage], offered: int | None = None) -> None:
        """``shots``: what the prompt kept of the ``offered`` shots (fewer only when they did not fit)."""
        self.notes[prompt] = {"shots": shots, "offered": shots if offered is None else offered,
                              "passages": [p.doc for p in passages]}

    def info(self, prompt: str) -> dict:
        """What the prompt held: shots kept, and the documents of its passages (when the method has them)."""
        note = self.notes.get(prompt, {})
        out = {}
        if self.k_shots:
            out["shots"] = note.get("shots")
        if self.k_passages:
            out["passages"] = note.get("passages")
        return out

    def record(self, predictions: list[dict]) -> dict:
        """The cell's record of its prompts: how many shots they kept and dropped, and what retrieval gave."""
        out = {}
        if self.k_shots:
            shown = [p for p in predictions if p.get("shots") is not None]
            kept = [p["shots"] for p in shown]
            # Dropped means dropped to fit --max-seq-len: a query offered fewer than K (a training split short of
            # K rows other than the query and its duplicates) dropped nothing.
            dropped = [self.notes.get(p.get("prompt"), {}).get("offered", self.k_shots) - p["shots"] for p in shown]
            out["shots"] = {"asked": self.k_shots, "select": self.select, "pool": len(self.pool),
                            "mean_kept": sum(kept) / len(kept) if kept else None,
                            "rows_with_shots_dropped": sum(d > 0 for d in dropped),
                            "shots_dropped": sum(dropped)}
            if self._draw is not None:
                out["shots"]["draw"] = self.draw()
        if self.k_passages:
            out["retrieve"] = {"k": self.k_passages, **self.corpus.fingerprint(),
                               **({"raft": self.raft} if self.raft is not None else {})}
        return out
