"""Questions about the fictional encyclopedia (encyclopedia.py), answered by short spans of its pages.

Every fact a page states (a person's occupation, a town's river, a company's founder, ...) can be asked in two or
three phrasings; each row names its gold page and its fact. The names are fictional, so a model cannot know the
answers from pretraining: it must read them in the prompt (retrieval) or have learnt them in training.

The splits are built so that training and retrieval can be told apart:

* the training pool asks one phrasing of each of its facts;
* the test split asks, half of it, facts that a training row asked in other words ("seen"), and half facts that no
  row of the pool touches ("unseen");
* the last rows of the pool, which the harness carves off as validation when a run tunes, mix the two the same way.

Which test rows are seen is decided against the training rows a run actually uses (tasks/qa.py), so a smaller
``--train-limit`` turns seen rows unseen rather than mislabelling them.
"""

from __future__ import annotations

import hashlib
import random
from functools import lru_cache

from tasks.embedded.encyclopedia import entities, possessive


def _person(name: str, f: dict) -> dict:
    return {
        "birth": (str(f["birth"]), [f"In what year was {name} born?", f"When was {name} born?",
                                    f"What is {possessive(name)} year of birth?"]),
        "job": (f["job"], [f"What is {possessive(name)} occupation?", f"What does {name} do for a living?",
                           f"What kind of work does {name} do?"]),
        "home": (f["home"], [f"Where is {name} from?", f"Which town does {name} come from?"]),
        "work": (f["work"], [f"What is {name} best known for?", f"What made {name} famous?"]),
        "uni": ([f["uni"], f"University of {f['uni']}"], [f"At which university did {name} study?",
                                                          f"Where did {name} go to university?"]),
        "award": (f["award"], [f"Which prize did {name} win?", f"What award has {name} received?"]),
        "award_year": (str(f["award_year"]), [f"In what year did {name} win the {f['award']}?",
                                              f"When was {name} awarded the {f['award']}?"]),
        "lives": (f["lives"], [f"Where does {name} live now?", f"In which town does {name} currently live?"]),
    }


def _town(name: str, f: dict) -> dict:
    return {
        "county": (f["county"], [f"In which county is {name}?", f"{name} lies in which county?"]),
        "river": ([f["river"], f"River {f['river']}"], [f"Which river does {name} stand on?",
                                                        f"On what river is {name}?"]),
        "founded": (str(f["founded"]), [f"When was {name} founded?", f"In what year was {name} founded?"]),
        "pop": (f"{f['pop']:,}", [f"What is the population of {name}?", f"How many people live in {name}?"]),
        "feature": (f["feature"], [f"What is {name} known for?", f"What is {name} famous for?"]),
    }


def _company(name: str, f: dict) -> dict:
    return {
        "industry": ([f["industry"], f"{f['industry']} maker"], [f"What does {name} make?",
                                                                f"What kind of maker is {name}?"]),
        "town": (f["town"], [f"Where is {name} based?", f"In which town is {name} based?"]),
        "founder": (f["founder"], [f"Who founded {name}?", f"Who was the founder of {name}?"]),
        "year": (str(f["year"]), [f"In what year was {name} founded?", f"When was {name} set up?"]),
        "staff": (str(f["staff"]), [f"How many people does {name} employ?",
                                    f"How many employees does {name} have?"]),
        "product": (f["product"], [f"What is {possessive(name)} best-known product?",
                                   f"Which product is {name} best known for?"]),
        "town2": (f["town2"], [f"Where did {name} open its second factory?",
                               f"In which town is {possessive(name)} second factory?"]),
        "year2": (str(f["year2"]), [f"When did {name} open its second factory?",
                                    f"In what year did {name} open a second factory?"]),
    }


ASK = {"person": _person, "town": _town, "company": _company}
POOL, SEEN, UNSEEN = 160, 20, 20  # training pool; test rows on seen and on unseen facts
VALIDATION = 40  # the pool's last rows: what the harness carves off as validation (the qa eval limit)


@lru_cache(maxsize=1)
def facts() -> tuple:
    """Every (page, field, answers, phrasings) the encyclopedia states, in a seeded order."""
    out = []
    for title, (kind, values) in entities().items():
        for field, (answers, phrasings) in ASK[kind](title, values).items():
            out.append((title, field, answers if isinstance(answers, list) else [answers], phrasings))
    random.Random(404).shuffle(out)
    return tuple(out)


def _row(fact: tuple, phrasing: int) -> dict:
    title, field, answers, phrasings = fact
    question = phrasings[phrasing % len(phrasings)]
    return {"id": hashlib.sha1(question.encode()).hexdigest()[:16], "question": question, "answers": list(answers),
            "gold": title, "fact": f"{title}|{field}"}


@lru_cache(maxsize=2)
def generate(split: str) -> list[dict]:
    """``train``: the pool (its first rows train; its last VALIDATION rows are validation when a run tunes);
    anything else: the test rows, SEEN on facts of the training rows in another phrasing and UNSEEN, alternating."""
    all_facts = facts()
    trained = all_facts[:POOL - VALIDATION]  # the facts the pool's training rows ask
    fresh = all_facts[POOL - VALIDATION:]  # facts no training row asks
    if split == "train":
        # The validation tail mirrors the test split: half paraphrases of training facts, half new facts.
        tail = _alternate([_row(f, 1) for f in trained[:VALIDATION // 2]],
                          [_row(f, 0) for f in fresh[:VALIDATION // 2]])
        return [_row(f, 0) for f in trained] + tail
    return _alternate([_row(f, 1) for f in trained[VALIDATION // 2:VALIDATION // 2 + SEEN]],
                      [_row(f, 1) for f in fresh[VALIDATION // 2:VALIDATION // 2 + UNSEEN]])


def _alternate(a: list, b: list) -> list:
    """a[0], b[0], a[1], b[1], ...: a smaller --eval-limit keeps both parts."""
    return [x for pair in zip(a, b) for x in pair]
