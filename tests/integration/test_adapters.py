"""The adapters users compare, end to end on the tiny model: each trains, passes the weight checks (differs from
base, merged equals unmerged where merging is defined, the saved adapter reloads to the trained logits), keeps and
reports its adapter, and exports; a PiSSA or OLoRA adapter is saved so that it applies to the original base."""

import json

import pytest
import torch
from peft import PeftModel, get_peft_model
from peft.utils.loftq_utils import replace_lora_weights_loftq
from transformers import AutoModelForCausalLM

from harness.cell import adapters
from harness.cell.load import load_model
from harness.cli import main
from harness.conformance.checks import config
from harness.core.files import read_json
from harness.spec.methods import resolve_method

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("adapters")]  # its session fixture runs once

SMALL = ["--model", "tiny-llama", "--tasks", "cnn", "--train-limit", "8", "--eval-limit", "2", "--max-new-tokens", "8",
         "--bootstrap", "50", "--executor", "inline"]
METHODS = ("dora", "qdora", "rslora", "pissa", "olora", "loftq", "lora+")


def folder(method: str) -> str:
    return method.replace("+", "_")


@pytest.fixture(scope="session")
def run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("adapters")
    assert main([*SMALL, "--methods", ",".join(("lora", *METHODS)), "--out", str(out), "--run-name", "a"]) == 0
    return out / "a"


@pytest.mark.parametrize("method", METHODS)
def test_each_adapter_trains_and_passes_the_weight_checks(run, method):
    cell = run / "cnn" / folder(method)
    assert read_json(cell / "status.json")["status"] == "ok"
    train = read_json(cell / "train.json")
    checks = {c["name"]: c["passed"] for c in train["checks"]}
    assert all(checks.values()) and "differs_from_base" in checks and "reload_matches" in checks
    quantized = method in ("qdora", "loftq")
    assert ("merged_matches_unmerged" in checks) == (not quantized)  # merging into 4-bit weights is not defined
    config = json.loads((cell / "adapter" / "adapter_config.json").read_text())
    assert config["use_dora"] == method.endswith("dora") and config["use_rslora"] == (method == "rslora")
    params = read_json(cell / "metrics.json")["measurements"]["params"]
    assert params["trainable"] > 0 and params["adapter_bytes"] > 0


def test_dora_trains_a_magnitude_vector_per_adapted_weight_and_lora_plus_its_own_optimizer(run):
    lora = read_json(run / "cnn" / "lora" / "train.json")["trainable_params"]
    dora = read_json(run / "cnn" / "dora" / "train.json")["trainable_params"]
    assert dora > lora  # the magnitudes
    plus = read_json(run / "cnn" / "lora_" / "train.json")
    assert plus["adapter"]["optimizer"]["loraplus_lr_ratio"] == 16.0 and plus["trainable_params"] == lora
    loftq = read_json(run / "cnn" / "loftq" / "train.json")["adapter"]["loftq"]
    assert loftq["layers"] > 0 and loftq["error_after"] < loftq["error_before"]  # LoftQ's start shrinks the error
    assert "DoRA" in read_json(run / "cnn" / "dora" / "train.json")["trl_changes"]["left_out"]["fused_lora_dropout"]


@pytest.mark.parametrize("method", ["pissa", "olora"])
def test_a_start_that_rewrites_the_base_saves_an_adapter_for_the_original_base(run, method, tiny_model_dir):
    """peft converts the adapter on save: it is rank 2r and applies to the base a user loads, not the residual."""
    cell = run / "cnn" / method
    config = json.loads((cell / "adapter" / "adapter_config.json").read_text())
    run_r = read_json(cell / "config.json")["hyperparameters"]["lora_r"]
    assert config["r"] == 2 * run_r and config["init_lora_weights"] is True
    # no --lora-dropout given: it trained at its own 0, and its records and the report say so
    note = read_json(cell / "train.json")["lora_dropout"]
    assert config["lora_dropout"] == 0.0 and note.startswith(f"0: {method}'s default, as --lora-dropout was not given")
    assert read_json(cell / "config.json")["notes"]["lora_dropout"] == note
    assert f"Training path of cnn x {method}: LoRA dropout {note}." in (run / "report.md").read_text()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    ids = torch.tensor([[5, 17, 99, 4, 250, 1000]])
    with torch.inference_mode():
        plain = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, str(cell / "adapter")).eval()(input_ids=ids).logits
    assert float((tuned - plain).abs().max()) > 1e-4  # on the original base it is the trained model


@pytest.mark.parametrize("method", ["dora", "pissa"])
def test_export_merges_a_full_precision_adapter_into_the_original_base(run, method, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", str(run), "cnn", method, str(out)]) == 0
    assert "merged" in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_export_keeps_a_4bit_adapter_and_says_why(run, tmp_path, capsys):
    out = tmp_path / "loftq"
    assert main(["export", str(run), "cnn", "loftq", str(out)]) == 0
    said = capsys.readouterr().out
    assert "stays an adapter" in said and "LoftQ" in said
    assert "started from LoftQ" in (out / "README.md").read_text()
    assert (out / "adapter_config.json").is_file()


def test_the_report_shows_trainable_parameters_and_adapter_size(run):
    report = (run / "report.md").read_text()
    assert "| trainable | adapter MiB |" in report
    row = next(line for line in report.splitlines() if line.startswith("| dora |"))
    assert "M (" in row  # '0.06M (1.9%)'


@pytest.mark.gpu
def test_the_loftq_steps_equal_peft_s_own_start_on_cuda(tiny_model_dir, tokenizer):
    """On a GPU peft's replace_lora_weights_loftq runs; the steps the CPU takes instead give its start."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device: peft's LoftQ start runs on cuda only")
    spec = resolve_method("loftq")
    starts = []
    for ours in (False, True):
        torch.manual_seed(0)
        model = get_peft_model(load_model(str(tiny_model_dir), spec, "cuda"), adapters.lora_config(spec, config(), 0))
        if ours:
            adapters.loftq_steps(model, str(tiny_model_dir))
        else:
            replace_lora_weights_loftq(model, model_path=adapters.safetensors_path(str(tiny_model_dir)))
        starts.append({n: p.detach().float().cpu() for n, p in model.named_parameters() if "lora_" in n})
    assert starts[0].keys() == starts[1].keys() and starts[0]
    for name, ref in starts[0].items():
        assert torch.allclose(starts[1][name], ref, rtol=1e-4, atol=1e-6), name
