"""Generate CNN/DailyMail-style rows: ``{id, article, highlights}``.

The style follows the real dataset (abisee/cnn_dailymail 3.0.0): an article that opens with a dateline and
"(CNN) --", and highlights of three short lines, each a compressed restatement of a fact from the article,
ending in " ." and separated by newlines. The compression rules are consistent per story type, so the format
is learnable: a fine-tuned model picks it up, while a zero-shot model tends to copy or paraphrase at length.
"""

from __future__ import annotations

import hashlib
import random

from tasks.embedded.world import DAYS, MONTHS, TOWNS, person

STRUCTURES = [("railway bridge", "bridge"), ("town library", "library"), ("swimming pool", "pool"),
              ("harbour wall", "wall"), ("market hall", "hall"), ("primary school", "school")]
DAMAGE = ["storm", "flood", "fire", "landslide"]
TEAMS = ["Rovers", "United", "Athletic", "Wanderers", "City", "Albion"]
CUPS = ["County Cup", "Regional Shield", "Northern Trophy", "Coastal League Cup"]
ITEMS = ["copper cable", "farm machinery", "antique clocks", "church silver", "bicycles", "garden tools"]
JOBS = ["builder", "accountant", "postman", "shop manager", "lorry driver", "gardener"]
WEATHER = [("floods", "flooding"), ("snowstorms", "snow"), ("high winds", "wind damage"),
           ("heavy rain", "rain damage")]
SHELTERS = ["the town hall", "a sports centre", "local schools", "a church hall"]
INDUSTRIES = [("shoe", "shoes"), ("paper", "paper"), ("glass", "glassware"), ("biscuit", "biscuits"),
              ("furniture", "furniture")]
ANIMALS = [("beetle", "forests"), ("frog", "wetlands"), ("moth", "moorland"), ("snail", "caves"),
           ("spider", "sand dunes")]
FEATURES = ["a bright blue shell", "long curled antennae", "striped back legs", "glowing green spots"]
ISSUES = ["cheaper bus fares", "more police patrols", "a new hospital wing", "lower council tax"]


def _money(rng) -> str:
    return f"${rng.randint(2, 19)}.{rng.randint(1, 9)} million"


def infrastructure(rng):
    town, name = rng.choice(TOWNS), person(rng)
    structure, short = rng.choice(STRUCTURES)
    years, money, month, damage = rng.randint(2, 9), _money(rng), rng.choice(MONTHS), rng.choice(DAMAGE)
    year = rng.randint(2009, 2019)
    article = (
        f"{town.upper()} (CNN) -- The {structure} in {town} will be rebuilt after {years} years of delays, "
        f"the town's mayor, {name}, said on {rng.choice(DAYS)}. The work will cost {money} and is due to "
        f"finish in {month}, officials said. Residents have campaigned for repairs since a {damage} damaged the "
        f"{short} in {year}. \"This is a proud day for everyone who lives here,\" {name.split()[0]} told "
        f"reporters. Contractors are expected to begin work within weeks.")
    highlights = [f"{town}'s {structure} to be rebuilt after {years}-year delay .",
                  f"Work will cost {money} and finish in {month}, officials say .",
                  f"Residents campaigned for repairs since {year} {damage} ."]
    return article, highlights


def sports(rng):
    town, rival, third = rng.sample(TOWNS, 3)
    team, rival_team, third_team = (f"{t} {rng.choice(TEAMS)}" for t in (town, rival, third))
    scorer, goals, cup = person(rng), rng.randint(2, 4), rng.choice(CUPS)
    win, lose = goals + rng.randint(0, 2), rng.randint(0, goals - 1)
    article = (
        f"{town.upper()} (CNN) -- {team} beat {rival_team} {win}-{lose} on {rng.choice(DAYS)} to reach the "
        f"final of the {cup}. Striker {scorer} scored {goals} goals in front of a crowd of "
        f"{rng.randint(2, 9)},{rng.randint(100, 999)}. The club will now face {third_team} in the final in "
        f"{rng.choice(MONTHS)}. \"The players gave everything tonight,\" said the manager. It is the first "
        f"time the club has reached a final in {rng.randint(10, 40)} years.")
    highlights = [f"{team} beat {rival_team} {win}-{lose} to reach {cup} final .",
                  f"{scorer} scores {goals} goals for the home side .",
                  f"{team} will face {third_team} in the final ."]
    return article, highlights


def court(rng):
    town, name, job, item = rng.choice(TOWNS), person(rng), rng.choice(JOBS), rng.choice(ITEMS)
    age, jail, money = rng.randint(24, 61), rng.randint(2, 9), f"${rng.randint(20, 95)},000"
    article = (
        f"{town.upper()} (CNN) -- A {age}-year-old {job} from {town} has been jailed for {jail} years for "
        f"stealing {item} worth {money}. {name} took the goods from {rng.randint(3, 12)} properties over "
        f"{rng.randint(4, 18)} months, a court heard on {rng.choice(DAYS)}. Police caught the thief after "
        f"a neighbour reported a van parked late at night. \"There was no remorse,\" the judge said. Most of the "
        f"{item} has never been recovered.")
    highlights = [f"{town} {job}, {age}, jailed for {jail} years .",
                  f"{name} stole {item} worth {money} .",
                  "Police caught the thief after a neighbour reported a van ."]
    return article, highlights


def weather(rng):
    town, name = rng.choice(TOWNS), person(rng)
    event, effect = rng.choice(WEATHER)
    families, shelter = rng.randint(20, 400), rng.choice(SHELTERS)
    article = (
        f"{town.upper()} (CNN) -- Heavy {event} forced {families} families from their homes in {town} on "
        f"{rng.choice(DAYS)}, emergency services said. Many are spending the night in {shelter}. Forecasters "
        f"warn that more {effect} is likely over the next {rng.randint(2, 5)} days. \"We have never seen "
        f"anything like this,\" said resident {name}. Schools in the area will stay closed until further "
        f"notice.")
    highlights = [f"{event.capitalize()} force {families} families from homes in {town} .",
                  f"Many are spending the night in {shelter} .",
                  f"Forecasters warn more {effect} is likely ."]
    return article, highlights


def business(rng):
    town, name = rng.choice(TOWNS), person(rng)
    industry, goods = rng.choice(INDUSTRIES)
    jobs, year = rng.randint(40, 900), rng.randint(1890, 1975)
    company = f"{name.split()[1]} & Sons"
    article = (
        f"{town.upper()} (CNN) -- {company}, the {industry} maker based in {town}, will cut {jobs} jobs and "
        f"close its main factory, the company said on {rng.choice(DAYS)}. The firm blamed falling demand for "
        f"{goods} and rising energy costs. It has made {goods} in the town since {year}. \"This is a sad day "
        f"for our workers,\" chief executive {name} said. Unions said they would fight the closure.")
    highlights = [f"{company} to cut {jobs} jobs and close {town} factory .",
                  f"Firm blames falling demand for {goods} and energy costs .",
                  f"Company has made {goods} in {town} since {year} ."]
    return article, highlights


def science(rng):
    town, name = rng.choice(TOWNS), person(rng)
    animal, habitat = rng.choice(ANIMALS)
    feature, n = rng.choice(FEATURES), rng.randint(3, 40)
    article = (
        f"{town.upper()} (CNN) -- Scientists at the University of {town} say they have found a new species "
        f"of {animal} living in the {habitat} nearby. The team, led by Professor {name}, spotted {n} of the "
        f"creatures during a survey in {rng.choice(MONTHS)}. The {animal} has {feature} that set it apart "
        f"from its relatives. \"We were amazed to find something new so close to home,\" {name.split()[0]} "
        f"said. The findings will be published next year.")
    highlights = [f"New species of {animal} found in {habitat} near {town} .",
                  f"Team led by Professor {name} spotted {n} of them .",
                  f"The {animal} has {feature} ."]
    return article, highlights


def election(rng):
    town, winner, loser = rng.choice(TOWNS), person(rng), person(rng)
    pct, issue = rng.randint(51, 74), rng.choice(ISSUES)
    turnout = rng.randint(22, 68)
    article = (
        f"{town.upper()} (CNN) -- {winner} has been elected mayor of {town}, winning {pct} percent of the "
        f"vote on {rng.choice(DAYS)}. {winner.split()[1]} beat {loser}, who had held the job for "
        f"{rng.randint(4, 12)} years. The new mayor campaigned for {issue}. Turnout was {turnout} percent, "
        f"officials said. \"The people of {town} have asked for change,\" {winner.split()[1]} told supporters.")
    highlights = [f"{winner} elected mayor of {town} with {pct} percent of vote .",
                  f"{winner.split()[1]} beat {loser} and campaigned for {issue} .",
                  f"Turnout was {turnout} percent ."]
    return article, highlights


STORIES = [infrastructure, sports, court, weather, business, science, election]

# Fixed seeds, one per split, so every machine writes the same rows; distinct seeds keep eval unseen.
SPLIT_SEEDS = {"train": 1001, "validation": 2002, "test": 3003}
SPLIT_SIZES = {"train": 160, "validation": 48, "test": 48}


def generate(split: str, n: int | None = None) -> list[dict]:
    rng = random.Random(SPLIT_SEEDS[split])
    rows = []
    for i in range(SPLIT_SIZES[split] if n is None else n):
        story = STORIES[i % len(STORIES)]
        article, highlights = story(rng)
        # The real ids are SHA-1 hex digests (of the story URL); these hash the article text.
        rows.append({"id": hashlib.sha1(article.encode()).hexdigest(), "article": article,
                     "highlights": "\n".join(highlights)})
    return rows
