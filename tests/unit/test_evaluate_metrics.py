"""The harness's metrics as evaluate modules: loaded offline from the package folder, same numbers as a cell."""

import socket

import pytest

from harness.integrations.evaluate_metrics import NAMES, path
from harness.spec.metrics import summarise
from harness.spec.task import get_task
from tasks.embedded import cnn_gen, guanaco_gen

BOOT, SEED = 200, 3


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1, and any attempt to open a network connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    evaluate = pytest.importorskip("evaluate")
    return evaluate


def flat(quality: dict) -> dict:
    out = {}
    for name, q in quality.items():
        out.update({name: q["value"], f"{name}_ci_low": q["ci_low"], f"{name}_ci_high": q["ci_high"]})
    return out


def test_every_module_is_a_folder_evaluate_can_load(offline):
    for name in NAMES:
        module = offline.load(path(name))
        assert module.name == name and module.description.strip()


def test_rouge_matches_the_cnn_cell(offline):
    rows = cnn_gen.generate("validation")[:12]
    # outputs of varying quality: the first sentence of the article, the reference, and a truncated reference
    outputs = [r["article"].split(". ")[0] if i % 3 == 0 else r["highlights"] if i % 3 == 1
               else r["highlights"][: len(r["highlights"]) // 3] for i, r in enumerate(rows)]
    refs = [r["highlights"] for r in rows]
    got = offline.load(path("harness_rouge")).compute(predictions=outputs, references=refs, bootstrap=BOOT, seed=SEED)
    values = get_task("cnn").score([{"output": o, "reference": r} for o, r in zip(outputs, refs)])
    assert got == flat(summarise(values, BOOT, SEED))
    assert 0 < got["rougeL"] < 1 and got["rougeL_ci_low"] < got["rougeL"] < got["rougeL_ci_high"]


def test_ifeval_matches_the_guanaco_cell(offline):
    rows = [r for r in guanaco_gen.generate("validation") if r["instruction_id_list"]][:10]
    answers = [r["text"].split("[/INST] ", 1)[1].removesuffix(" </s>") for r in rows]
    outputs = [a if i % 2 else a.upper() + " because" for i, a in enumerate(answers)]  # half break some checks
    ids, kwargs = [r["instruction_id_list"] for r in rows], [r["kwargs"] for r in rows]
    got = offline.load(path("harness_ifeval")).compute(predictions=outputs, instruction_id_list=ids, kwargs=kwargs,
                                                       bootstrap=BOOT, seed=SEED)
    preds = [{"output": o, "reference": a, "ref_nll": 1.0, "ref_tokens": 1, "instruction_id_list": i, "kwargs": k}
             for o, a, i, k in zip(outputs, answers, ids, kwargs)]
    values = get_task("guanaco").score(preds)
    expected = flat(summarise({k: values[k] for k in ("ifeval_prompt_strict", "ifeval_instruction_strict")},
                              BOOT, SEED))
    assert got == expected
    assert 0 < got["ifeval_instruction_strict"] < 1


def test_fever_labels_match_the_fever_cell(offline):
    gold = ["SUPPORTS", "REFUTES", "NOT ENOUGH INFO"] * 4
    said = ["supported", "REFUTES", "nei", "REFUTES", "REFUTES", "banana", "SUPPORTS", "Refuted", "NEI",
            "SUPPORTS", "SUPPORTS", ""]
    got = offline.load(path("harness_fever")).compute(predictions=said, references=gold, bootstrap=BOOT, seed=SEED)
    from tasks.react import normalize_label

    values = get_task("fever").score([{"label": normalize_label(s), "reference": g} for s, g in zip(said, gold)])
    assert got == flat(summarise(values, BOOT, SEED))
    assert got["label_accuracy"] == 8 / 12  # every usual spelling counts; "banana" and "" count as no answer
    with pytest.raises(ValueError, match="reference 'maybe' is not a label"):
        offline.load(path("harness_fever")).compute(predictions=["SUPPORTS"], references=["maybe"])


def test_defaults_are_the_harness_defaults(offline):
    """Without bootstrap= and seed=, the CI is the one a cell run with the default --bootstrap and --seed gets."""
    outputs, refs = ["a cat sat", "the dog ran far", "birds"], ["a cat sat down", "a dog ran", "fish swim"]
    got = offline.load(path("harness_rouge")).compute(predictions=outputs, references=refs, rouge_types=["rougeL"])
    values = get_task("cnn").score([{"output": o, "reference": r} for o, r in zip(outputs, refs)])
    assert got == flat(summarise({"rougeL": values["rougeL"]}, 1000, 0))
