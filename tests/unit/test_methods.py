import dataclasses

import peft
import pytest

from harness.cell import adapters
from harness.core.errors import ConfigError
from harness.spec.config import RunConfig
from harness.spec.methods import METHODS, MethodSpec, lora, resolve_method


def test_matrix_methods():
    base, full, lo, q4, q8 = (resolve_method(n) for n in ("base", "full", "lora", "qlora", "qlora8"))
    assert not base.trains and base.lr is None
    assert full.finetune == "full" and not full.quantized
    assert lo.finetune == "lora" and lo.lora_target_modules == "all-linear" and not lo.quantized
    assert q4.load_in_4bit and q4.bnb_4bit_quant_type == "nf4" and q4.bnb_4bit_use_double_quant
    assert q8.load_in_8bit and not q8.load_in_4bit and q8.bits == 8
    assert resolve_method("qlora4") == dataclasses.replace(q4, name="qlora4")


def test_variants_are_partials_of_lora():
    assert METHODS["qlora4"].func is lora and METHODS["qlora4"].keywords["bits"] == 4
    assert METHODS["qlora8"].func is lora and METHODS["qlora8"].keywords["bits"] == 8


@pytest.mark.parametrize("kwargs, message", [
    ({"finetune": "lora", "lr": 1e-3, "load_in_4bit": True, "load_in_8bit": True}, "4-bit and 8-bit at once"),
    ({"finetune": "full", "lr": 1e-3, "load_in_8bit": True}, "quantization without an adapter"),
    ({"finetune": "none", "load_in_4bit": True}, "quantization without an adapter"),
    ({"finetune": "lora"}, "positive lr"),
    ({"finetune": "sideways", "lr": 1.0}, "finetune must be"),
])
def test_cross_field_rules(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        MethodSpec(name="x", **kwargs)


def test_overrides():
    spec = resolve_method("lora:lr=2e-4")
    assert spec.lr == 2e-4 and spec.name == "lora:lr=2e-4"
    assert resolve_method("lora:bits=8").load_in_8bit
    with pytest.raises(ConfigError, match="quantization without an adapter"):
        resolve_method("full:bits=8")  # the "qlora8 with full" combination
    with pytest.raises(ConfigError, match="4-bit and 8-bit at once"):
        resolve_method("qlora8:load_in_4bit=true")
    with pytest.raises(ConfigError, match="not key=value with a known key"):
        resolve_method("lora:rank=4")
    with pytest.raises(ConfigError, match="lr must be a number"):
        resolve_method("lora:lr=fast")
    with pytest.raises(ConfigError, match="unknown method 'lorax'; valid methods: base, dora, fewshot, full, loftq"):
        resolve_method("lorax")


def test_the_adapters_users_compare_are_lora_with_one_field_set():
    dora, qdora, rs, pissa, olora, loftq, plus = (resolve_method(n) for n in (
        "dora", "qdora", "rslora", "pissa", "olora", "loftq", "lora+"))
    assert dora.use_dora and not dora.quantized and qdora.use_dora and qdora.load_in_4bit
    assert rs.use_rslora and pissa.init_lora_weights == "pissa_niter_4" and olora.init_lora_weights == "olora"
    assert loftq.init_lora_weights == "loftq" and loftq.load_in_4bit and plus.loraplus_ratio == 16.0
    assert pissa.mutates_base and olora.mutates_base and not loftq.mutates_base and not dora.mutates_base
    for name in ("dora", "qdora", "rslora", "pissa", "olora", "loftq", "lora+"):
        assert METHODS[name].func is lora, name
    assert resolve_method("lora:use_dora=true:use_rslora=true").use_dora  # fields combine as overrides
    assert resolve_method("lora:init_lora_weights=pissa_niter_16").init_lora_weights == "pissa_niter_16"


@pytest.mark.parametrize("text, message", [
    ("lora:init_lora_weights=loftq", "loftq offsets the error of 4-bit weights, and this method's are not "
                                     "quantized; use loftq (4-bit), or add bits=4"),
    ("qlora8:init_lora_weights=loftq", "loftq offsets the error of 4-bit weights, and this method's are 8-bit"),
    ("pissa:bits=4", "pissa_niter_4 rewrites the base weights as their residual, and 4-bit weights"),
    ("full:use_dora=true", "use_dora is a LoRA setting, and the method trains no adapter"),
    ("base:loraplus_ratio=16", "loraplus_ratio is a LoRA setting"),
    ("lora:loraplus_ratio=0.5", "loraplus_ratio is B's learning rate over A's, at least 1"),
    ("lora:init_lora_weights=eva", "init_lora_weights must be one of default, gaussian, pissa, olora, loftq"),
])
def test_an_adapter_that_cannot_be_made_is_one_line(text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_method(text)


def test_a_method_the_installed_peft_cannot_make_is_refused_before_any_cell(monkeypatch):
    cfg = RunConfig(methods=("dora",))
    assert adapters.check_installed(cfg.specs[0], cfg) is None

    class OldLoraConfig:  # a peft from before DoRA: LoraConfig takes no use_dora
        def __init__(self, *, r, lora_alpha, lora_dropout, target_modules, task_type, init_lora_weights):
            pass

    monkeypatch.setattr(peft, "LoraConfig", OldLoraConfig)
    why = adapters.check_installed(cfg.specs[0], cfg)
    assert why.startswith("peft ") and "cannot make its adapter" in why and "pip install -U peft" in why


def test_an_adapter_peft_cannot_put_on_fused_experts_is_refused_in_one_line():
    """peft 0.21 adapts a mixture of experts' 3-D expert weights through lora.ParamWrapper, which refuses DoRA,
    and the PiSSA and OLoRA starts read a 2-D weight; the preflight says so before a cell is made."""
    from harness.execute.preflight import fused_experts_issue
    from harness.plan.shape import Shape

    dense = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "vocab_size": 100, "model_type": "llama"}
    moe = Shape.from_config({**dense, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2})
    for name, what in (("dora", "DoRA"), ("qdora", "DoRA"), ("pissa", "PiSSA's start"), ("olora", "OLoRA's start")):
        why = fused_experts_issue(resolve_method(name), moe)
        assert why and what in why and "lora_target_modules" in why, (name, why)
    for name in ("lora", "rslora", "lora+", "loftq", "full", "base"):  # these peft can make on fused experts
        assert fused_experts_issue(resolve_method(name), moe) is None, name
    assert fused_experts_issue(resolve_method("dora"), Shape.from_config(dense)) is None
    assert fused_experts_issue(resolve_method("dora"), None) is None  # shape unknown: peft's own error stays
    named = dataclasses.replace(resolve_method("dora"), lora_target_modules="q_proj,v_proj")
    assert fused_experts_issue(named, moe) is None  # the projections are Linear modules: DoRA applies


def test_a_method_s_own_dropout_stands_in_for_the_run_s_and_the_principal_part_starts_train_without_it():
    from harness.spec.cell import CellSpec, cell_config

    cfg = RunConfig(tasks=("cnn",), methods=("lora", "pissa", "olora", "pissa:lora_dropout=0.05"))
    assert cfg.lora_dropout == 0.05
    for text, dropout in (("lora", 0.05), ("pissa", 0.0), ("olora", 0.0), ("pissa:lora_dropout=0.05", 0.05),
                          ("lora:lora_dropout=0.2", 0.2)):
        assert cell_config(cfg, resolve_method(text)).lora_dropout == dropout, text
    # the cell trains with it and hashes it: pissa's record says 0.0, and lora's hash is what it was before the field
    from harness.spec.task import get_task, load_tasks

    load_tasks()
    cell = CellSpec.create(cfg, get_task("cnn"), resolve_method("pissa"))
    assert cell.hyperparameters["lora_dropout"] == 0.0 and cell.run.lora_dropout == 0.0
    assert "lora_dropout" not in CellSpec.create(cfg, get_task("cnn"), resolve_method("lora"))._hashed()["method"]
    for bad, message in (("lora:lora_dropout=1", "from 0 to below 1"), ("full:lora_dropout=0.1", "trains no adapter")):
        with pytest.raises(ConfigError, match=message):
            resolve_method(bad)
