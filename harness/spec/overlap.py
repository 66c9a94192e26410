"""Train-test overlap: test rows that duplicate, or nearly duplicate, a training row.

A row's text is its task's text columns joined; it is compared in normalised words (lower case, letters and
digits only). Exact: the same words. Near: at least ``NEAR_SHARE`` of the test row's distinct word 13-grams
also occur in one training row. 13-grams are the unit of the contamination checks in GPT-3 (Brown et al. 2020,
appendix C) and later reports; GPT-3 called a test example dirty on any shared 13-gram, which on short,
formulaic rows (a summary task's shared boilerplate) flags almost everything, so a share is used instead. A row
shorter than 13 words has no 13-gram and can only match exactly.

``OverlapIndex`` holds the test rows' 13-grams, so training rows stream past it one at a time: with
``--drop-overlap`` the training source is scanned in order and overlapping rows are skipped until the training
limit is filled.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

N = 13  # words per n-gram (GPT-3, appendix C)
# A test row is a near duplicate of a training row when half its 13-grams are in it: above what two independent
# rows of one template share (at most 0.39 between the embedded cnn train and test rows, 0.38 for guanaco;
# tests/unit/test_overlap.py), and below a copy with a sentence changed. The harness's own threshold, not a
# published one.
NEAR_SHARE = 0.5
EXAMPLES = 5  # overlapping pairs kept in data.json

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def row_text(row: dict, columns: tuple) -> str:
    """The text a row is compared by: its task's text columns, in order (every string value when none)."""
    keys = columns or tuple(k for k, v in row.items() if isinstance(v, str) and k != "id")
    return "\n".join(str(row.get(k, "")) for k in keys)


def ngrams(ws: list[str]) -> set[tuple]:
    return {tuple(ws[i:i + N]) for i in range(len(ws) - N + 1)}


@dataclass
class OverlapIndex:
    """The test rows' 13-grams and exact texts; ``match`` tells whether a training row overlaps any of them."""

    columns: tuple
    exact: dict = field(default_factory=dict)  # normalised text -> test row indices
    grams: dict = field(default_factory=lambda: defaultdict(list))  # 13-gram -> test row indices
    sizes: list = field(default_factory=list)  # distinct 13-grams per test row

    @classmethod
    def of(cls, test_rows: list[dict], columns: tuple) -> OverlapIndex:
        index = cls(columns)
        for i, row in enumerate(test_rows):
            ws = words(row_text(row, columns))
            index.exact.setdefault(" ".join(ws), []).append(i)
            grams = ngrams(ws)
            index.sizes.append(len(grams))
            for g in grams:
                index.grams[g].append(i)
        return index

    def match(self, row: dict) -> list[tuple[int, str, float]]:
        """(test row, "exact" or "near", share of its 13-grams in ``row``) for every test row ``row`` overlaps."""
        ws = words(row_text(row, self.columns))
        out = {i: (i, "exact", 1.0) for i in self.exact.get(" ".join(ws), [])}
        shared: dict[int, int] = defaultdict(int)
        for g in ngrams(ws):
            for i in self.grams.get(g, ()):
                shared[i] += 1
        for i, n in shared.items():
            share = n / self.sizes[i]
            if i not in out and share >= NEAR_SHARE:
                out[i] = (i, "near", share)
        return sorted(out.values())


def overlap_record(train_rows: list[dict], index: OverlapIndex, dropped: int = 0) -> dict:
    """data.json's ``overlap``: how many of ``index``'s test rows duplicate (exact) or nearly duplicate (near) a
    training row."""
    kind: dict[int, str] = {}
    examples = []
    for j, row in enumerate(train_rows):
        for i, how, share in index.match(row):
            if kind.get(i) != "exact":
                kind[i] = how
            if len(examples) < EXAMPLES:
                examples.append({"test_row": i, "train_row": j, "kind": how, "share": round(share, 3)})
    exact = sum(k == "exact" for k in kind.values())
    return {"test_rows": len(index.sizes), "exact": exact, "near": len(kind) - exact,
            "overlapping_test_rows": sorted(kind), "ngram": N, "near_share": NEAR_SHARE,
            "dropped_from_train": dropped, "examples": examples}


def describe(task: str, record: dict, split: str = "test") -> str | None:
    """One warning line when any test (or validation) row overlaps the training rows, else None."""
    n = record["exact"] + record["near"]
    if not n:
        return None
    what = ("so their scores may reflect memorisation; --drop-overlap removes those rows from training"
            if split == "test" else "so a choice made on them may reward memorisation; give a validation split of "
            f"its own with --data {task}.validation=FILE")
    return (f"{task}: {n} of {record['test_rows']} {split} rows overlap the training rows ({record['exact']} exact, "
            f"{record['near']} near: {record['near_share']:.0%} of their word {record['ngram']}-grams in one "
            f"training row), {what}")
