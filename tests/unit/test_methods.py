import dataclasses

import pytest

from harness.core.errors import ConfigError
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
    with pytest.raises(ConfigError, match="unknown method 'lorax'; valid methods: base, fewshot, full, lora"):
        resolve_method("lorax")
