"""The conformance matrix: the harness's training path against plain peft + trl on every model family it covers.

Every family of tests/families.py x every trained method: the loss, the first-step gradient of every trainable
parameter and the trained weights equal plain trl's on padded batches (tests/conformance.py says how, and the
tolerances); with dropout on, the fused dropout's gradients equal peft's under the same masks; batched greedy
generation equals one generate per prompt. A new family joins with one line in tests/families.py.
"""

from __future__ import annotations

import pytest

from harness.cell.trl_changes import CHANGES
from tests import conformance
from tests.families import FAMILIES, build

pytestmark = pytest.mark.integration

METHODS = ("full", "lora", "qlora4", "qlora8")


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("families")
    return {family: build(family, tokenizer, root / family) for family in FAMILIES}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_the_training_path_computes_what_plain_trl_computes(folders, tokenizer, family, method):
    got = conformance.training(folders[family], method, tokenizer)
    assert conformance.passes(got), {k: v for k, v in got.items() if k != "record"}
    changes = got["record"]["trl_changes"]
    assert set(changes["applied"]) | set(changes["left_out"]) | set(changes["not_applicable"]) == set(CHANGES)
    assert all(changes["left_out"].values()) and all(changes["not_applicable"].values())  # each says why


def test_a_window_shorter_than_the_rows_is_applied_per_row(folders, tokenizer):
    """Mistral with an 8-token window on ~180-token rows trains padding-free, and still computes trl's loss and
    gradients: per-row attention without the window computed another model's loss (about 1e-3 off)."""
    got = conformance.training(folders["mistral"], "full", tokenizer)
    assert conformance.passes(got), got
    assert "padding_free" in got["record"]["trl_changes"]["applied"]


def test_what_the_path_cannot_change_it_leaves_to_trl_and_says_why(folders, tokenizer):
    gemma2 = conformance.training(folders["gemma2"], "lora", tokenizer)["record"]["trl_changes"]["left_out"]
    assert "eager attention" in gemma2["padding_free"]
    assert "final_logit_softcapping" in gemma2["compact_lm_head"]
    mixtral = conformance.training(folders["mixtral"], "full", tokenizer)["record"]["trl_changes"]["left_out"]
    assert "router loss" in mixtral["compact_lm_head"]


def test_a_mixture_of_experts_adapter_trains_without_dropout_and_says_so(folders, tokenizer):
    """peft adapts Mixtral's fused expert weights with ParamWrapper, which refuses any dropout: the adapter
    trains with dropout 0, recorded, and computes what plain trl computes at dropout 0."""
    import torch

    from harness.cell.load import load_model
    from harness.cell.training import train
    from harness.spec.methods import resolve_method

    cfg = conformance.config(lora_dropout=0.05)
    rows = conformance.pairs(tokenizer, cfg)[:4]
    torch.manual_seed(0)
    _, record = train(load_model(str(folders["mixtral"]), resolve_method("lora"), "cpu"), tokenizer,
                      resolve_method("lora"), rows, cfg, "cpu", merge=False)
    assert record["lora_dropout"].startswith("0 instead of 0.05") and record["steps"] == 1


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "mixtral"])
def test_fused_dropout_gives_peft_gradients_under_the_same_masks(folders, tokenizer, family):
    assert conformance.dropout(folders[family], tokenizer) <= conformance.RTOL


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_generation_equals_one_generate_per_prompt(folders, tokenizer, family):
    same, n = conformance.generation(folders[family], tokenizer, conformance.eval_prompts(tokenizer))
    assert same == n
