"""Balanced FEVER-style claims with gold ReAct trajectories, over the fictional encyclopedia (encyclopedia.py).

Pages are ``{title, text}`` with five sentences; Search shows the first three, so some facts need a Lookup.
Claims follow FEVER's labels: SUPPORTS (a fact from the page), REFUTES (the same fact with a wrong value)
and NOT ENOUGH INFO (about something no page mentions). Each gold trajectory is made by running its actions
against the document store, so its observations are exactly what the harness's tools return.
"""

from __future__ import annotations

import hashlib
import random
from functools import lru_cache

from tasks.docstore import Browser, DocStore
from tasks.embedded.encyclopedia import encyclopedia


@lru_cache(maxsize=1)
def store() -> DocStore:
    return DocStore(list(encyclopedia()[0]))


def _trajectory(entity: str, label: str, fact: tuple | None, claimed: str | None, keyword: str) -> str:
    """Run the gold actions against the store and write the trajectory the model should produce.

    The deciding thought compares the claimed value with the page's value in so many words ("The claim says
    X; the page says Y."), a step a small model can learn to copy and compare.
    """
    browser = Browser(store())
    lines = [f"Thought 1: I need to search {entity}.", f"Action 1: Search[{entity}]",
             f"Observation 1: {browser.search(entity)}"]
    step = 2
    if fact is None or fact[1] is not None:  # the fact (or its absence) needs a Lookup
        lines += [f"Thought 2: The first sentences do not mention this. I need to look up {keyword}.",
                  f"Action 2: Lookup[{keyword}]", f"Observation 2: {browser.lookup(keyword)}"]
        step = 3
    if label == "NOT ENOUGH INFO":
        lines.append(f"Thought {step}: The page says nothing about {keyword}. So there is not enough information.")
    else:
        verdict = "So the claim is supported." if label == "SUPPORTS" else "So the claim is refuted."
        lines.append(f"Thought {step}: The claim says {claimed}; the page says {fact[3]}. {verdict}")
    lines.append(f"Action {step}: Finish[{label}]")
    return "\n".join(lines)


SPLIT_SEEDS = {"train": 101, "validation": 202, "test": 303}
SPLIT_SIZES = {"train": 150, "validation": 48, "test": 48}


def generate(split: str, n: int | None = None) -> list[dict]:
    """Balanced claims (labels cycle S, R, N). Splits draw different (entity, fact) pairs."""
    used = set()
    if split != "train":  # keep evaluation claims unseen: reserve what train uses
        used = {(r["entity"], r["fact"]) for r in _generate_raw("train")}
    return [{k: v for k, v in r.items() if k not in ("entity", "fact")} for r in _generate_raw(split, used, n)]


def _generate_raw(split: str, used: set | None = None, n: int | None = None) -> list[dict]:
    pages, facts = encyclopedia()
    names = [p["title"] for p in pages]
    rng = random.Random(SPLIT_SEEDS[split])
    used = set(used or ())
    rows = []
    total = SPLIT_SIZES[split] if n is None else n
    while len(rows) < total:
        label = ("SUPPORTS", "REFUTES", "NOT ENOUGH INFO")[len(rows) % 3]
        entity = rng.choice(names)
        page_facts, nei = facts[entity]
        if label == "NOT ENOUGH INFO":
            which = rng.randrange(len(nei))
            claim_text, keyword = nei[which]
            claim, fact, claimed, key = f"{entity} {claim_text}.", None, None, ("nei", which)
        else:
            which = rng.randrange(len(page_facts))
            fact = page_facts[which]
            claimed = fact[3] if label == "SUPPORTS" else fact[4]
            claim, keyword, key = fact[2].format(claimed), fact[1], (label, which)
        if (entity, key) in used:
            continue
        used.add((entity, key))
        evidence = " ".join(store().page(entity))
        rows.append({"id": hashlib.sha1(claim.encode()).hexdigest()[:16], "claim": claim, "label": label,
                     "evidence": evidence, "trajectories": _trajectory(entity, label, fact, claimed, keyword),
                     "entity": entity, "fact": key})
    return rows
