"""Generate a fictional encyclopedia and balanced FEVER-style claims with gold ReAct trajectories.

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
from tasks.embedded.world import FIRST, LAST, TOWNS

OCCUPATIONS = ["painter", "engineer", "novelist", "composer", "chemist", "architect", "sculptor", "surgeon"]
WORKS = ["a series of harbour paintings", "a bridge design", "a trilogy of crime novels", "a cello concerto",
         "a cheap water filter", "a glass library", "a statue of a heron", "a new heart operation"]
AWARDS = ["Golden Quill Prize", "Ember Medal", "Harwood Award", "Silver Compass"]
COUNTIES = ["Eastmoor", "Westvale", "Northwold", "Southmere"]
RIVERS = ["Wend", "Carrow", "Idle", "Maun", "Soar", "Leven"]
FEATURES = ["stone bridge", "summer fair", "old lighthouse", "cheese market", "clock tower", "rose garden"]
INDUSTRIES = ["paper", "glass", "biscuit", "bicycle", "clock", "rope"]
PRODUCTS = ["Kestrel bicycle", "Lantern clock", "Harbour biscuit", "Meadow notebook", "Anchor rope", "Crystal jug"]
NEI_PERSON = [("has three children", "children"), ("speaks fluent French", "French"),
              ("plays the violin", "violin"), ("owns a sailing boat", "boat")]
NEI_TOWN = [("has an airport", "airport"), ("has a football stadium", "stadium"), ("has a zoo", "zoo")]
NEI_COMPANY = [("sells its products in Japan", "Japan"), ("is listed on the stock exchange", "stock"),
               ("has a shop in London", "London")]


def _other(rng, options, value):
    return rng.choice([o for o in options if o != value])


def _possessive(name: str) -> str:
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def _fact(index: int, keyword: str | None, template: str, true, false) -> tuple:
    """A checkable fact: the page sentence that holds it, the Lookup keyword that finds it (None when Search
    already shows it), the claim template, and the true and a false value."""
    return index, keyword, template, str(true), str(false)


def _person(rng, name):
    last = name.split()[1]  # encyclopedias refer to a person by surname
    f = {"birth": rng.randint(1930, 1995), "job": rng.choice(OCCUPATIONS), "home": rng.choice(TOWNS),
         "work": rng.choice(WORKS), "uni": rng.choice(TOWNS), "award": rng.choice(AWARDS),
         "award_year": rng.randint(1990, 2020), "lives": rng.choice(TOWNS)}
    text = (f"{name} (born {f['birth']}) is a {f['job']} from {f['home']}. {last} is best known for "
            f"{f['work']}. {last} studied at the University of {f['uni']}. In {f['award_year']}, {last} won the "
            f"{f['award']}. {last} now lives in {f['lives']}.")
    facts = [_fact(0, None, f"{name} is a {{}}.", f["job"], _other(rng, OCCUPATIONS, f["job"])),
             _fact(2, None, f"{name} studied at the University of {{}}.", f["uni"], _other(rng, TOWNS, f["uni"])),
             _fact(3, "won", f"{name} won the {f['award']} in {{}}.", f["award_year"],
                   f["award_year"] + rng.choice([-3, -2, 2, 3])),
             _fact(4, "lives", f"{name} lives in {{}}.", f["lives"], _other(rng, TOWNS, f["lives"]))]
    return text, facts, NEI_PERSON


def _town(rng, town):
    f = {"county": rng.choice(COUNTIES), "river": rng.choice(RIVERS), "founded": rng.randint(1100, 1890),
         "pop": rng.randint(3, 60) * 1000, "feature": rng.choice(FEATURES)}
    text = (f"{town} is a market town in the county of {f['county']}. It stands on the River {f['river']}. "
            f"The town was founded in {f['founded']}. Its population is about {f['pop']:,}. "
            f"{town} is known for its {f['feature']}.")
    facts = [_fact(1, None, f"{town} stands on the River {{}}.", f["river"], _other(rng, RIVERS, f["river"])),
             _fact(2, None, f"{town} was founded in {{}}.", f["founded"],
                   f["founded"] + rng.choice([-40, -10, 10, 40])),
             _fact(3, "population", f"{town} has a population of about {{}}.", f"{f['pop']:,}",
                   f"{f['pop'] + rng.choice([-2, 2, 5]) * 1000:,}"),
             _fact(4, "known", f"{town} is known for its {{}}.", f["feature"], _other(rng, FEATURES, f["feature"]))]
    return text, facts, NEI_TOWN


def _company(rng, name):
    f = {"industry": rng.choice(INDUSTRIES), "town": rng.choice(TOWNS),
         "founder": f"{rng.choice(FIRST)} {name.split()[0]}", "year": rng.randint(1850, 1990),
         "staff": rng.randint(2, 90) * 10, "product": rng.choice(PRODUCTS), "town2": rng.choice(TOWNS),
         "year2": rng.randint(1995, 2022)}
    text = (f"{name} is a {f['industry']} maker based in {f['town']}. It was founded by {f['founder']} in "
            f"{f['year']}. The company employs about {f['staff']} people. Its best-known product is the "
            f"{f['product']}. In {f['year2']}, it opened a second factory in {f['town2']}.")
    facts = [_fact(0, None, f"{name} is based in {{}}.", f["town"], _other(rng, TOWNS, f["town"])),
             _fact(1, None, f"{name} was founded in {{}}.", f["year"], f["year"] + rng.choice([-20, -5, 5, 20])),
             _fact(3, "product", f"{_possessive(name)} best-known product is the {{}}.", f["product"],
                   _other(rng, PRODUCTS, f["product"])),
             _fact(4, "factory", f"{name} opened a second factory in {{}}.", f["town2"],
                   _other(rng, TOWNS, f["town2"]))]
    return text, facts, NEI_COMPANY


@lru_cache(maxsize=1)
def encyclopedia() -> tuple:
    """(pages, facts): 60 people, every town, and 30 companies, all fictional."""
    rng = random.Random(7)
    people = rng.sample([f"{a} {b}" for a in FIRST for b in LAST], 60)
    companies = [f"{b} {s}" for b, s in zip(rng.sample(LAST, 24) + rng.sample(LAST, 6),
                                            ["Works"] * 12 + ["Company"] * 12 + ["Brothers"] * 6)]
    companies = list(dict.fromkeys(companies))
    pages, facts = [], {}
    for maker, names in ((_person, people), (_town, TOWNS), (_company, companies)):
        for name in names:
            text, page_facts, nei = maker(rng, name)
            pages.append({"title": name, "text": text})
            facts[name] = (page_facts, nei)
    return tuple(pages), facts


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
