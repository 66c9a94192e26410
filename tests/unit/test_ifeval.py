"""Every IFEval-style checker on hand-made positive and negative cases."""

import pytest

from tasks.ifeval import CHECKERS, check


@pytest.mark.parametrize("iid, kwargs, passing, failing", [
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
     "one two three four", "one two three four five"),
    ("length_constraints:number_words", {"num_words": 3, "relation": "at least"},
     "it's three words", "two words"),  # "it's" is two \w+ runs, as in IFEval's tokenizer
    ("detectable_format:number_bullet_lists", {"num_bullets": 2},
     "Intro\n* first\n- second", "* first\n* second\n* third"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 1},
     "* only one\n**bold line** is not a bullet", "no bullets here"),
    ("keywords:existence", {"keywords": ["River", "bridge"]}, "The river and the BRIDGE.", "The river only."),
    ("keywords:forbidden_words", {"forbidden_words": ["very"]}, "Everything is fine (every, avery).",
     "It is Very nice."),
    ("change_case:english_lowercase", {}, "all lower case, 123.", "Not lower case."),
    ("change_case:english_lowercase", {}, "lower", "123"),  # no cased character at all fails, like str.islower
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Done. any other questions?  ",
     "Any other questions? Yes."),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', '{"a": 1'),
    ("detectable_format:json_format", {}, '[1, 2]', "Here is JSON: {}"),
])
def test_checker(iid, kwargs, passing, failing):
    fn = CHECKERS[iid]
    assert fn(passing, **kwargs) is True
    assert fn(failing, **kwargs) is False


def test_check_ignores_ifeval_none_kwargs_and_returns_one_result_per_instruction():
    ids = ["change_case:english_lowercase", "startend:end_checker"]
    kwargs = [{"end_phrase": None, "num_words": None}, {"end_phrase": "bye", "num_words": None}]
    assert check("hello and bye", ids, kwargs) == [True, True]
    assert check("Hello and bye", ids, kwargs) == [False, True]


def test_unknown_instruction_lists_the_known_ones():
    from harness.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown instruction 'punctuation:no_comma'; valid instructions: "):
        check("x", ["punctuation:no_comma"], [{}])


def test_bad_relation():
    with pytest.raises(ValueError):
        CHECKERS["length_constraints:number_words"]("a b", num_words=3, relation="around")
