"""The vLLM generation backend off its GPU: the CPU refusal, the install hint, and how a model is exported.

vLLM itself cannot run here (no GPU, and its wheel is hundreds of MB), so generation through it is not
exercised in the suite; docs/benchmarks.md leaves its row empty and says so.
"""

import sys

import pytest

from harness.cell import vllm as vllm_backend
from harness.core.errors import ConfigError, HarnessError


def test_cpu_is_refused_in_one_line():
    with pytest.raises(ConfigError) as e:
        vllm_backend.check_available("cpu")
    assert "needs a CUDA GPU and this run is on cpu" in str(e.value) and "\n" not in str(e.value)
    assert "--generate-backend hf" in str(e.value)


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setattr(vllm_backend.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(HarnessError) as e:
        vllm_backend.check_available("cuda")
    assert str(e.value) == ('--generate-backend vllm needs vLLM, which is not installed: pip install -e ".[vllm]"')


def test_generate_on_a_cpu_model_is_refused_before_vllm_is_imported(tiny_model, tokenizer):
    from harness.spec.task import GenerationStats

    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        vllm_backend.VLLMBackend().generate(tiny_model, tokenizer, ["hello"], 4, 2, GenerationStats())
    assert "vllm" not in sys.modules


def test_export_plan(tiny_model):
    from peft import LoraConfig, get_peft_model

    assert vllm_backend.export_plan(tiny_model) == {"kind": "folder"}  # merged, full or base: saved whole
    peft = get_peft_model(tiny_model, LoraConfig(r=12, target_modules="all-linear", task_type="CAUSAL_LM"))
    plan = vllm_backend.export_plan(peft)
    assert plan["kind"] == "adapter" and plan["quantization"] is None and plan["rank"] == 12
    assert plan["base"] == tiny_model.name_or_path
    peft.get_base_model().is_loaded_in_4bit = True
    assert vllm_backend.export_plan(peft)["quantization"] == "bitsandbytes"
    peft.get_base_model().is_loaded_in_4bit, peft.get_base_model().is_loaded_in_8bit = False, True
    with pytest.raises(ConfigError, match="cannot serve an 8-bit"):
        vllm_backend.export_plan(peft)
