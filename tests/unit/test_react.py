"""The ReAct parser on messy trajectories, and the loop with a scripted fake model."""

import pytest

from tasks.docstore import Browser, DocStore
from tasks.react import INVALID, Action, Episode, normalize_label, parse_action, parse_trajectory, run_loop


@pytest.mark.parametrize("text, label", [
    ("SUPPORTS", "SUPPORTS"), ("supported", "SUPPORTS"), (" Refutes. ", "REFUTES"), ("REFUTED", "REFUTES"),
    ("NOT ENOUGH INFO", "NOT ENOUGH INFO"), ("not_enough_info", "NOT ENOUGH INFO"), ("NEI", "NOT ENOUGH INFO"),
    ("Not enough information", "NOT ENOUGH INFO"), ("maybe", None), ("", None), (None, None),
])
def test_labels_in_the_usual_spellings(text, label):
    assert normalize_label(text) == label


@pytest.mark.parametrize("text, expected", [
    ("Action 1: Search[Alice Quill]", Action("search", "Alice Quill")),
    ("Action: search[ Alice Quill ]", Action("search", "Alice Quill")),  # no number, lower case, spaces
    ("  Action   2 :   LOOKUP[won]  ", Action("lookup", "won")),
    ("Action 3: Finish[SUPPORTS] because the page says so.", Action("finish", "SUPPORTS", "SUPPORTS")),
    ("Action 3: finish[not enough info]", Action("finish", "not enough info", "NOT ENOUGH INFO")),
    ("Thought: done\nAction 4: Finish[probably true]", Action("invalid", "probably true")),
    ("Action 1: Search[]", Action("invalid", "")),
    ("Action 1: Search[Alice Qu", Action("invalid", "Alice Qu")),  # cut off mid-action
    ("Action 2: Ask[someone]", Action("invalid", "Ask[someone]")),
    ("I think the claim is true.", None),
])
def test_parse_action(text, expected):
    assert parse_action(text) == expected


def test_parse_a_messy_trajectory():
    text = (
        "thought 1:  I should search.\n"
        "action: search[Brindlewick]\n"
        "Observation 1: Brindlewick is a town.\n"
        "  Thought:   look for the river  \n"
        "Action 2 : lookup[river]\n"
        "observation: (Result 1 / 1) It stands on the River Wend.\n"
        "Thought 3: supported\n"
        "Action 3: Finish[Supports] -- final answer\n"
        "Observation 3: this text after the finish is ignored\n"
        "Thought 4: extra rambling")
    t = parse_trajectory(text)
    assert [s.action.kind for s in t.steps] == ["search", "lookup", "finish"]
    assert t.steps[0].thought == "I should search." and t.steps[1].thought == "look for the river"
    assert t.steps[1].observation == "(Result 1 / 1) It stands on the River Wend."
    assert t.finished and t.label == "SUPPORTS" and len(t.actions) == 3


def test_unfinished_and_actions_without_thoughts():
    t = parse_trajectory("Action 1: Search[X]\nObservation 1: nothing\nAction 2: Lookup[y]\nObservation 2: No more")
    assert [s.action.kind for s in t.steps] == ["search", "lookup"] and not t.finished and t.label is None
    assert parse_trajectory("").steps == []
    bad = parse_trajectory("Thought 1: hmm\nAction 1: Dance[now]")
    assert bad.steps[0].action.kind == "invalid" and not bad.finished


PAGES = [{"title": "Alice Quill", "text": "Alice Quill is a painter. Quill was born in 1961. Quill paints boats. "
                                         "Quill won the Ember Medal in 2001. Quill lives in Dunmere."},
         {"title": "Dunmere", "text": "Dunmere is a town on the River Wend. It has a bridge."}]


class ScriptedModel:
    """A fake model: answers each episode's next step from a script, and records every context it is given."""

    def __init__(self, scripts):
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.seen: list[str] = []

    def __call__(self, contexts, step=None):
        out = []
        for c in contexts:
            self.seen.append(c)
            key = next(k for k in self.scripts if k in c)
            out.append(self.scripts[key].pop(0))
        return out


def test_loop_runs_search_lookup_finish_and_feeds_back_observations():
    store = DocStore(PAGES)
    prompts = ["Claim: Alice Quill won the Ember Medal in 2001.\n", "Claim: Dunmere has an airport.\n"]
    model = ScriptedModel({
        "Ember": [" I need to search Alice Quill.\nAction 1: Search[Alice Quill]\nObservation",
                  " Look up the medal.\nAction 2: Lookup[medal]",
                  " The page agrees.\nAction 3: Finish[SUPPORTS] and some trailing words\nThought 4: more"],
        "airport": [" Search it.\nAction 1: search[Dunmere town]",
                    " Try the exact title.\nAction 2: Search[Dunmere]",
                    " Look for an airport.\nAction 3: Lookup[airport]",
                    " Nothing.\nAction 4: Finish[NOT ENOUGH INFO]"],
    })
    episodes = [Episode(Browser(store)) for _ in prompts]
    run_loop(prompts, episodes, model, max_steps=6)
    a, b = episodes
    assert (a.label, a.steps, a.invalid, a.stop_reason) == ("SUPPORTS", 3, 0, "finish")
    assert (b.label, b.steps) == ("NOT ENOUGH INFO", 4)
    # The observations the model received in its next context:
    second_a = next(c for c in model.seen if "Thought 2:" in c and "Ember" in c)
    assert second_a.endswith("Observation 1: Alice Quill is a painter. Quill was born in 1961. Quill paints "
                             "boats.\nThought 2:")
    third_a = next(c for c in model.seen if "Thought 3:" in c and "Ember" in c)
    assert "Observation 2: (Result 1 / 1) Quill won the Ember Medal in 2001.\nThought 3:" in third_a
    second_b = next(c for c in model.seen if "Thought 2:" in c and "airport" in c)
    assert "Observation 1: Could not find Dunmere town. Similar: [Dunmere, Alice Quill]." in second_b
    fourth_b = next(c for c in model.seen if "Thought 4:" in c and "airport" in c)
    assert fourth_b.endswith("Observation 3: No more results.\nThought 4:")
    assert "trailing words" not in a.text and "Thought 4" not in a.text
    # the two episodes were batched: one model call per step while both were active
    assert len(model.seen) == 3 + 4


def test_invalid_actions_and_max_steps():
    store = DocStore(PAGES)
    model = ScriptedModel({"Claim": [" hmm, let me think", " Action 2: Dance[now]", " still thinking"]})
    ep = Episode(Browser(store))
    run_loop(["Claim: x\n"], [ep], model, max_steps=3)
    assert (ep.steps, ep.invalid, ep.label, ep.stop_reason) == (3, 3, None, "max steps")
    assert ep.text.count(INVALID) == 3


def test_lookup_before_search_and_context_limit():
    store = DocStore(PAGES)
    model = ScriptedModel({"Claim": [" Action 1: Lookup[river]", " Action 2: Finish[REFUTES]"]})
    ep = Episode(Browser(store))
    run_loop(["Claim: y\n"], [ep], model, max_steps=5)
    assert "Observation 1: There is no page to look up in; Search for an entity first." in ep.text
    assert ep.label == "REFUTES"
    full = Episode(Browser(store))
    run_loop(["Claim: z\n"], [full], ScriptedModel({"Claim": []}), max_steps=5, fits=lambda c: False)
    assert full.stop_reason == "context full" and full.steps == 0


def test_browser_lookup_cursor():
    b = Browser(DocStore(PAGES))
    b.search("alice  quill")  # titles match case- and space-insensitively
    assert b.lookup("Quill").startswith("(Result 1 / 5) Alice Quill is a painter.")
    assert b.lookup("quill").startswith("(Result 2 / 5)")
    assert b.lookup("Wend") == "No more results."
    assert b.lookup("quill").startswith("(Result 1 / 5)")  # a new keyword restarts the cursor


def test_docstore_from_jsonl_errors(tmp_path):
    from harness.core.errors import DataError

    with pytest.raises(DataError, match="does not exist"):
        DocStore.from_jsonl(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "A", "text": "x"}\n{"name": "B"}\n')
    with pytest.raises(DataError, match="line 2 lacks a title or text"):
        DocStore.from_jsonl(str(bad))
    good = tmp_path / "good.jsonl"
    good.write_text('{"title": "A", "text": "Alpha one. Alpha two."}\n')
    assert DocStore.from_jsonl(str(good)).page("a") == ["Alpha one.", "Alpha two."]
