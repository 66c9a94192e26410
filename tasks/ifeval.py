"""Verifiable instruction checks in the style of IFEval (Zhou et al. 2023, arXiv:2311.07911).

Each checker is a small function keyed by IFEval's instruction id, so rows in IFEval's own schema
(``instruction_id_list`` + ``kwargs``) are checked as written. "Strict" means the raw response is checked
as is, without IFEval's loose-mode variants (dropping the first or last line, removing asterisks).
The rules follow the reference implementation (google-research/instruction_following_eval).
"""

from __future__ import annotations

import json
import re

from harness.core.registry import Registry

CHECKERS = Registry("instruction")


@CHECKERS.register("length_constraints:number_words")
def number_words(response: str, num_words: int, relation: str = "less than") -> bool:
    """Word count (runs of \\w, as IFEval's RegexpTokenizer) below, or at least, ``num_words``."""
    n = len(re.findall(r"\w+", response))
    if relation == "less than":
        return n < num_words
    if relation == "at least":
        return n >= num_words
    raise ValueError(f"relation must be 'less than' or 'at least', got {relation!r}")


@CHECKERS.register("detectable_format:number_bullet_lists")
def number_bullet_lists(response: str, num_bullets: int) -> bool:
    """Exactly ``num_bullets`` markdown bullets: lines starting with '* ' (not '**') or '-'."""
    stars = re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


@CHECKERS.register("keywords:existence")
def keywords_existence(response: str, keywords: list[str]) -> bool:
    return all(re.search(re.escape(k), response, flags=re.IGNORECASE) for k in keywords)


@CHECKERS.register("keywords:forbidden_words")
def forbidden_words(response: str, forbidden_words: list[str]) -> bool:
    return not any(re.search(r"\b" + re.escape(w) + r"\b", response, flags=re.IGNORECASE)
                   for w in forbidden_words)


@CHECKERS.register("change_case:english_lowercase")
def english_lowercase(response: str) -> bool:
    """All cased characters lowercase, and at least one of them (str.islower). IFEval also runs language
    detection; every embedded prompt is English, so that part is left out."""
    return response.islower()


@CHECKERS.register("startend:end_checker")
def end_checker(response: str, end_phrase: str) -> bool:
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


@CHECKERS.register("detectable_format:json_format")
def json_format(response: str) -> bool:
    """The whole response parses as JSON, allowing a surrounding ```json fence."""
    text = response.strip()
    for prefix in ("```json", "```Json", "```JSON", "```"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    text = text.removesuffix("```").strip()
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def check(response: str, instruction_ids: list[str], kwargs_list: list[dict]) -> list[bool]:
    """One pass/fail per instruction. IFEval rows carry every kwarg name with None for unused ones."""
    results = []
    for iid, kwargs in zip(instruction_ids, kwargs_list, strict=True):
        fn = CHECKERS.lookup(iid)
        results.append(bool(fn(response, **{k: v for k, v in (kwargs or {}).items() if v is not None})))
    return results


def score(responses: list[str], instruction_id_lists: list[list[str]], kwargs_lists: list[list[dict]]
          ) -> dict[str, list]:
    """Per-example values of the two IFEval strict metrics, for the harness's aggregations: prompt level, 1.0
    when every instruction passed; instruction level, (passed, checked) pairs. A response without instructions
    gets None (it does not count), as a guanaco row without IFEval columns."""
    prompt_level, instruction_level = [], []
    for response, ids, kwargs in zip(responses, instruction_id_lists, kwargs_lists, strict=True):
        if ids:
            passed = check(response, ids, kwargs)
            prompt_level.append(float(all(passed)))
            instruction_level.append((sum(passed), len(passed)))
        else:
            prompt_level.append(None)
            instruction_level.append(None)
    return {"ifeval_prompt_strict": prompt_level, "ifeval_instruction_strict": instruction_level}
