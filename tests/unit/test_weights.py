"""The weight checks and saving of harness/cell/weights.py on the tiny model, without training, and sub-folder
checksums."""

import json

import pytest
import torch

from harness.cell.weights import RELATIVE_TOLERANCE, finalize, logits, probe_inputs
from harness.core.errors import AdapterCheckError
from harness.records.store import CellStore
from harness.spec.config import RunConfig
from harness.spec.methods import ADAPTER, MODEL, resolve_method, save_kind


@pytest.mark.parametrize("save, method, expected", [
    ("auto", "lora", "adapter"), ("auto", "qlora", "adapter"), ("auto", "full", None),
    ("adapter", "full", None), ("model", "lora", "model"), ("model", "full", "model"),
    ("model", "qlora8", "adapter"),  # a quantized model is kept as its adapter
    ("none", "lora", None), ("none", "full", None),
])
def test_save_kind(save, method, expected):
    kind, note = save_kind(RunConfig(save=save), resolve_method(method))
    assert kind == expected
    assert (note is not None) == ((save, method) in (("adapter", "full"), ("model", "qlora8")))


@pytest.fixture
def probe(tokenizer, ctx):
    from harness.spec.task import get_task

    task = get_task("cnn")
    rows = task.load(RunConfig(model="tiny-llama", eval_limit=3, train_limit=4))["test"]
    ids = probe_inputs(task, rows, ctx)
    assert len(ids) == 3 and all(0 < t.shape[1] <= 64 for t in ids)
    return ids


def _lora(model, b_scale: float):
    """A LoRA model as peft initialises it (B = 0, a no-op) or with B filled in, as training would."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, b_scale) if b_scale else p.data.zero_()
    return peft_model


def test_a_trained_adapter_passes_every_check_is_saved_and_merged(tiny_model, tokenizer, probe, tmp_path):
    base = logits(tiny_model, probe)
    store = CellStore(tmp_path, "cnn", "lora")
    store.dir.mkdir(parents=True)
    model, record = finalize(_lora(tiny_model, 0.05), resolve_method("lora"), tokenizer, RunConfig(device="cpu"),
                             store, probe, base)
    assert [c["name"] for c in record["checks"]] == ["differs_from_base", "reload_matches",
                                                     "merged_matches_unmerged"]
    assert all(c["passed"] for c in record["checks"]) and record["adapter_merged"]
    differs, reload, merge = record["checks"]
    rel = RELATIVE_TOLERANCE["differs"]["float32"]
    assert differs["value"] > differs["tolerance"] == pytest.approx(rel * differs["logit_scale"])
    assert reload["value"] == 0.0 and merge["value"] <= merge["tolerance"]
    assert not hasattr(model, "peft_config")  # merged into a plain transformers model
    assert record["saved"] == {"kind": "adapter", "folder": "adapter"}
    assert {p.name for p in store.path(ADAPTER).iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    assert not [p for p in store.dir.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_a_no_op_adapter_fails_with_the_numbers(tiny_model, tokenizer, probe, tmp_path):
    base = logits(tiny_model, probe)
    store = CellStore(tmp_path, "cnn", "lora")
    store.dir.mkdir(parents=True)
    with pytest.raises(AdapterCheckError) as err:
        finalize(_lora(tiny_model, 0.0), resolve_method("lora"), tokenizer, RunConfig(device="cpu", save="none"),
                 store, probe, base)
    assert err.value.kind == "adapter_check"
    message = str(err.value)
    assert message.startswith("check differs_from_base failed: max |logit difference|, the evaluated model "
                              "against the base model before training is 0, must be above ")
    assert "float32" in message and "reload_matches" not in message  # only the failed check is named
    assert not store.path(ADAPTER).exists()  # --save none


def test_full_model_saved_in_the_transformers_layout(tiny_model, tokenizer, probe, tmp_path):
    from transformers import AutoModelForCausalLM

    base = logits(tiny_model, probe)
    with torch.no_grad():
        tiny_model.model.layers[0].mlp.up_proj.weight.add_(0.05)  # "training"
    store = CellStore(tmp_path, "cnn", "full")
    store.dir.mkdir(parents=True)
    model, record = finalize(tiny_model, resolve_method("full"), tokenizer, RunConfig(device="cpu", save="model"),
                             store, probe, base)
    assert [c["name"] for c in record["checks"]] == ["differs_from_base"] and record["saved"]["kind"] == "model"
    reloaded = AutoModelForCausalLM.from_pretrained(store.path(MODEL))
    assert (store.path(MODEL) / "tokenizer.json").is_file()
    assert all(torch.equal(a, b) for a, b in zip(logits(reloaded, probe), logits(model, probe)))


def test_checksums_cover_sub_folders_but_not_hidden_ones(tmp_path):
    store = CellStore(tmp_path, "cnn", "lora")
    store.write_json("config.json", {"x": 1})
    (store.dir / "adapter").mkdir()
    (store.dir / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    (store.dir / ".trained").mkdir()
    (store.dir / ".trained" / "rank0.json").write_text("{}")
    record = store.finish("ok")
    assert set(record["files"]) == {"config.json", "adapter/adapter_model.safetensors"}
    assert json.loads(store.path("status.json").read_text())["files"] == record["files"]
    assert store.state() == ("complete", "ok")
    (store.dir / "adapter" / "adapter_model.safetensors").write_bytes(b"weightz")
    assert store.state() == ("corrupt", "adapter/adapter_model.safetensors does not match its checksum")
    (store.dir / "adapter" / "adapter_model.safetensors").unlink()
    assert store.state() == ("corrupt", "adapter/adapter_model.safetensors is missing")
