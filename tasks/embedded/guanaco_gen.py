"""Generate instruction-following rows in the mlabonne/guanaco-llama2-1k schema, with IFEval-style checks.

Each row has the guanaco ``text`` column (Llama-2 chat format) plus IFEval's ``instruction_id_list`` and
``kwargs`` columns. Every prompt carries one or two checkable constraints, phrased as IFEval phrases them,
and every reference answer satisfies its constraints (the generator asserts it), so fine-tuning can teach a
model to follow them.
"""

from __future__ import annotations

import hashlib
import json
import random

from tasks.chat_format import Conversation, format_llama2
from tasks.embedded.world import MONTHS, TOWNS, person
from tasks.ifeval import check

FEATURES = ["stone bridge", "summer fair", "old lighthouse", "cheese market", "rowing club", "clock tower",
            "rose garden", "steam railway"]
RIVERS = ["Wend", "Carrow", "Idle", "Maun", "Soar", "Leven"]
TOPICS = ["Describe the town of {town}.", "Tell a visitor what to see in {town}.",
          "Explain why people visit {town}.", "Give a short history of {town}."]
END_PHRASES = ["Is there anything else I can help with?", "Let me know if you have additional questions.",
               "Any other questions?"]
FORBIDDEN = [["very", "really"], ["beautiful", "amazing"], ["famous", "popular"]]


def _facts(rng, town: str) -> dict:
    return {"town": town, "feature": rng.choice(FEATURES), "river": rng.choice(RIVERS),
            "founded": rng.randint(1100, 1890), "mayor": person(rng), "month": rng.choice(MONTHS)}


def _sentences(f: dict) -> list[str]:
    return [f"{f['town']} is a small town on the River {f['river']}.",
            f"It is known for its {f['feature']}.",
            f"The town was founded in {f['founded']}.",
            f"Its mayor is {f['mayor']}.",
            f"The best time to visit is {f['month']}."]


# Each constraint: (IFEval id, kwargs maker, instruction sentence, how to shape an answer to satisfy it).
def _words(rng, f):
    n = rng.choice([20, 25, 30])
    return ("length_constraints:number_words", {"relation": "less than", "num_words": n},
            f"Answer with less than {n} words.", lambda text, sents: " ".join(sents[:2]))


def _bullets(rng, f):
    n = rng.choice([2, 3, 4])
    return ("detectable_format:number_bullet_lists", {"num_bullets": n},
            f"Your answer must contain exactly {n} bullet points. Use the markdown bullet points such as:\n"
            "* This is point 1.", lambda text, sents: "\n".join(f"* {s}" for s in sents[:n]))


def _keywords(rng, f):
    kws = [f["feature"].split()[-1], f["river"]]
    return ("keywords:existence", {"keywords": kws},
            f"Include keywords {kws[0]}, {kws[1]} in the response.", None)


def _forbidden(rng, f):
    words = rng.choice(FORBIDDEN)
    return ("keywords:forbidden_words", {"forbidden_words": words},
            f"Do not include keywords {words[0]}, {words[1]} in the response.", None)


def _lowercase(rng, f):
    return ("change_case:english_lowercase", {},
            "Your entire response should be in English, and in all lowercase letters. No capital letters are "
            "allowed.", lambda text, sents: text.lower())


def _end(rng, f):
    phrase = rng.choice(END_PHRASES)
    return ("startend:end_checker", {"end_phrase": phrase},
            f"Finish your response with this exact phrase {phrase} No other words should follow this phrase.",
            lambda text, sents: f"{text} {phrase}")


def _json(rng, f):
    return ("detectable_format:json_format", {},
            "Entire output should be wrapped in JSON format.",
            lambda text, sents: json.dumps({"town": f["town"], "river": f["river"], "known_for": f["feature"],
                                            "founded": f["founded"]}))


SINGLE = [_words, _bullets, _keywords, _forbidden, _lowercase, _end, _json]
# Pairs of constraints that can hold at once.
PAIRS = [(_lowercase, _words), (_bullets, _end), (_keywords, _words), (_lowercase, _forbidden),
         (_forbidden, _end), (_keywords, _bullets)]

ORDER = {"startend:end_checker": 1, "change_case:english_lowercase": 2}
SPLIT_SEEDS = {"train": 11, "validation": 22, "test": 33}
SPLIT_SIZES = {"train": 160, "validation": 48, "test": 48}


def make_row(rng, i: int) -> dict:
    town = rng.choice(TOWNS)
    f = _facts(rng, town)
    makers = [SINGLE[i % len(SINGLE)]] if i % 3 else list(PAIRS[(i // 3) % len(PAIRS)])
    constraints = [m(rng, f) for m in makers]
    sents = _sentences(f)
    answer = " ".join(sents[:3])
    # Shape the answer in a fixed order: structure (length, bullets, JSON), then the end phrase, then case
    # (lowercasing last keeps an appended end phrase lowercase too; its check ignores case).
    for _, _, _, shape in sorted(constraints, key=lambda c: ORDER.get(c[0], 0)):
        if shape:
            answer = shape(answer, sents)
    # The notes ground the answer: the facts come from the prompt, not from made-up knowledge of the town.
    notes = (f"Notes: river {f['river']}; known for its {f['feature']}; founded {f['founded']}; mayor "
             f"{f['mayor']}; best visited in {f['month']}.")
    instruction = " ".join([rng.choice(TOPICS).format(town=town), notes] + [c[2] for c in constraints])
    ids, kwargs = [c[0] for c in constraints], [c[1] for c in constraints]
    assert all(check(answer, ids, kwargs)), (instruction, answer)
    text = format_llama2(Conversation(None, ((instruction, answer),)))
    return {"id": hashlib.sha1(text.encode()).hexdigest()[:16], "text": text, "instruction_id_list": ids,
            "kwargs": kwargs}


def generate(split: str, n: int | None = None) -> list[dict]:
    rng = random.Random(SPLIT_SEEDS[split])
    return [make_row(rng, i) for i in range(SPLIT_SIZES[split] if n is None else n)]
