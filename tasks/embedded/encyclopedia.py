"""A fictional encyclopedia over the world of world.py: people, towns and companies, one page each.

Pages are ``{title, text}`` with five sentences. Every value on a page is drawn with a fixed seed, so every machine
builds the same pages. fever_gen writes claims against them (true, false, and about what no page says); qa_gen
asks questions whose answers are spans of them. The pages are the knowledge base both tasks retrieve from.
"""

from __future__ import annotations

import random
from functools import lru_cache

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


def possessive(name: str) -> str:
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
    return text, facts, NEI_PERSON, f


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
    return text, facts, NEI_TOWN, f


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
             _fact(3, "product", f"{possessive(name)} best-known product is the {{}}.", f["product"],
                   _other(rng, PRODUCTS, f["product"])),
             _fact(4, "factory", f"{name} opened a second factory in {{}}.", f["town2"],
                   _other(rng, TOWNS, f["town2"]))]
    return text, facts, NEI_COMPANY, f


@lru_cache(maxsize=1)
def _build() -> tuple:
    rng = random.Random(7)
    people = rng.sample([f"{a} {b}" for a in FIRST for b in LAST], 60)
    companies = [f"{b} {s}" for b, s in zip(rng.sample(LAST, 24) + rng.sample(LAST, 6),
                                            ["Works"] * 12 + ["Company"] * 12 + ["Brothers"] * 6)]
    companies = list(dict.fromkeys(companies))
    pages, facts, fields = [], {}, {}
    for kind, maker, names in (("person", _person, people), ("town", _town, TOWNS), ("company", _company, companies)):
        for name in names:
            text, page_facts, nei, values = maker(rng, name)
            pages.append({"title": name, "text": text})
            facts[name] = (page_facts, nei)
            fields[name] = (kind, values)
    return tuple(pages), facts, fields


def encyclopedia() -> tuple:
    """(pages, facts): 60 people, every town, and 30 companies, all fictional; ``facts`` maps a page's title to its
    checkable claims and the claims it says nothing about (fever_gen)."""
    pages, facts, _ = _build()
    return pages, facts


def entities() -> dict:
    """{title: (kind, {field: value})}: what each page states, field by field (qa_gen asks about them)."""
    return _build()[2]
