"""The CPU's LoftQ start (harness/cell/adapters.py ``loftq_steps``, which the conformance matrix's plain peft script
calls too) held against an independent reference: peft's own ``replace_lora_weights_loftq`` run on the CPU.

peft 0.21.2 computes LoftQ's start on ``cuda`` (or ``xpu``) whatever the model's device: ``_loftq_init_new`` moves
the original weight there by the string constants "cuda" and "xpu". Those two constants, and nothing else, are
made "cpu" here; every other step (reading the safetensors file, matching layer names, dequantizing, the rank-r SVD,
placing A and B) is peft's own code. The model is the smallest that shows it: two bitsandbytes 4-bit layers of
different shapes under peft's LoRA, so a factor put on the wrong layer or transposed would not fit.
"""

import types

import bitsandbytes as bnb
import peft
import pytest
import torch
from peft.utils import loftq_utils
from safetensors.torch import save_file

from harness.cell import adapters

RANK = 4
# The same float32 SVD of the same residual on both sides: equal but for rounding (measured: bit for bit).
RTOL, ATOL = 1e-5, 1e-7


class TwoLayers(torch.nn.Module):
    """Two 4-bit layers (NF4, float32 compute), as a 4-bit model holds them; ``is_loaded_in_4bit`` is what peft
    reads to give them its 4-bit LoRA layer, as for a transformers model loaded in 4 bits."""

    is_loaded_in_4bit = True

    def __init__(self, weights: dict):
        super().__init__()
        for key, w in weights.items():
            layer = bnb.nn.Linear4bit(w.shape[1], w.shape[0], bias=False, compute_dtype=torch.float32,
                                      quant_type="nf4")
            layer.weight = bnb.nn.Params4bit(w.clone(), requires_grad=False, quant_type="nf4")
            setattr(self, key.split(".")[0], layer)
        self.to("cpu")  # bitsandbytes quantizes on the move to a device

    def forward(self, x):
        return self.down(self.up(x))


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    weights = {"up.weight": 0.05 * torch.randn(32, 64), "down.weight": 0.05 * torch.randn(64, 32)}
    save_file(weights, str(tmp_path / "model.safetensors"))  # where both starts read the original weights
    return tmp_path, weights


def adapted(weights: dict):
    """The 4-bit model under peft's default LoRA start (A random, B zero), the same on every call."""
    torch.manual_seed(1)
    config = peft.LoraConfig(r=RANK, lora_alpha=RANK, target_modules=["up", "down"], init_lora_weights=True)
    return peft.get_peft_model(TwoLayers(weights), config)


def on_cpu(fn):
    """peft's function with its compute device's constants, "cuda" and "xpu", made "cpu" (see the module docstring)."""
    inner = fn.__wrapped__  # under torch.no_grad()
    consts = tuple("cpu" if c in ("cuda", "xpu") else c for c in inner.__code__.co_consts)
    assert consts != inner.__code__.co_consts, "peft's LoftQ no longer names cuda: rewrite this reference"
    code = inner.__code__.replace(co_consts=consts)
    return torch.no_grad()(types.FunctionType(code, inner.__globals__, inner.__name__, inner.__defaults__))


def start(model) -> dict:
    """What a LoftQ start sets: each LoRA A and B, and each 4-bit base weight (packed bytes and block scales)."""
    out = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    for name, m in model.named_modules():
        if isinstance(m, bnb.nn.Linear4bit):
            out[f"{name}.base"] = m.weight.data.clone()
            out[f"{name}.absmax"] = m.weight.quant_state.absmax.clone()
    return out


def mismatched(ours: dict, reference: dict) -> list[str]:
    assert ours.keys() == reference.keys()
    return sorted(n for n in reference if not torch.allclose(ours[n].float(), reference[n].float(), RTOL, ATOL))


def the_port(weights, location) -> tuple[dict, dict]:
    model = adapted(weights)
    return adapters.loftq_start(model, str(location)), start(model)


def test_the_cpu_loftq_start_is_peft_s_own_start_run_on_the_cpu(folder, monkeypatch):
    location, weights = folder
    before = start(adapted(weights))
    reference_model = adapted(weights)
    monkeypatch.setattr(loftq_utils, "_loftq_init_new", on_cpu(loftq_utils._loftq_init_new))
    loftq_utils.replace_lora_weights_loftq(reference_model, model_path=str(location))
    reference = start(reference_model)
    lora = sorted(n for n in reference if "lora_" in n)
    assert len(lora) == 4 and all(float(reference[n].abs().max()) > 0 for n in lora)  # B no longer peft's zeros
    assert mismatched(before, reference) == lora  # peft's start changed every factor and left the base weights

    record, ours = the_port(weights, location)
    assert record["how"] == "peft's LoftQ steps on the CPU" and record["layers"] == 2  # the port ran, on both
    assert mismatched(ours, reference) == []
    assert record["error_after"] < record["error_before"]

    # The same comparison catches a port that did not run, or that ran broken: every factor is off.
    monkeypatch.setattr(adapters, "loftq_steps", lambda model, location: {"how": "switched off"})
    assert mismatched(the_port(weights, location)[1], reference) == lora
    monkeypatch.undo()

    real_dequantize = bnb.functional.dequantize_4bit
    monkeypatch.setattr(bnb.functional, "dequantize_4bit", lambda *a, **k: torch.zeros_like(real_dequantize(*a, **k)))
    assert mismatched(the_port(weights, location)[1], reference) == lora  # the SVD of W, not of W - Q(W)
    monkeypatch.undo()

    real_svd = loftq_utils._low_rank_decomposition

    def one_direction_short(weight, reduced_rank):
        out = real_svd(weight, reduced_rank=reduced_rank)
        out["L"][:, -1], out["R"][-1, :] = 0, 0
        return out

    monkeypatch.setattr(loftq_utils, "_low_rank_decomposition", one_direction_short)
    assert mismatched(the_port(weights, location)[1], reference) == lora  # rank r - 1
