import dataclasses
import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import peft
import pytest

from harness.cell import adapters, job, training
from harness.cell.distributed import DistributedError, multi_process_issue, train_distributed
from harness.cli import parse_run_args
from harness.core.errors import ConfigError
from harness.execute import preflight
from harness.records.store import CellStore
from harness.spec.cell import CellSpec
from harness.spec.config import RunConfig
from harness.spec.methods import METHODS, MethodSpec, lora, resolve_method
from harness.spec.resolve import resolve
from harness.spec.task import get_task


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


@pytest.mark.parametrize("method, flags, what", [
    ("pissa", {}, "PiSSA/OLoRA adapters are converted on save"),
    ("olora", {"fsdp": True}, "PiSSA/OLoRA adapters are converted on save"),
    ("lora+", {}, "built before the model is wrapped"),
    ("lora+", {"fsdp": True}, "FSDP and DeepSpeed replace the parameters"),
])
def test_a_method_the_multi_process_job_cannot_train_is_refused_before_any_cell(monkeypatch, method, flags, what):
    """PiSSA's and OLoRA's conversion on save needs the adapter as it started, which lives in the cell's process;
    LoRA+'s optimizer is built before accelerate wraps the model. One line, naming the method, the flag and the fix,
    from the preflight (and from the cell itself when it is started alone)."""
    cfg = RunConfig(methods=(method,), num_processes=2, **flags)
    flag = "--num-processes 2" + (" --fsdp" if flags else "")
    why = multi_process_issue(cfg.specs[0], cfg)
    assert why.startswith(f"{method} with {flag}: ") and what in why and why.endswith("run it with --num-processes 1")
    assert "\n" not in why
    monkeypatch.setattr(preflight, "check_loadable", lambda model: None)  # no model needed for this check
    monkeypatch.setattr(preflight, "shape_for", lambda location: None)
    with pytest.raises(ConfigError, match=f"^method {re.escape(method)} with {flag}: "):
        preflight.check_integrations(cfg, SimpleNamespace(location="unused"))
    with pytest.raises(DistributedError, match="run it with --num-processes 1"):  # before any process is launched
        train_distributed(cfg, cfg.specs[0], Path("/nonexistent"), "unused", "cpu")
    one = RunConfig(methods=(method,))
    assert multi_process_issue(one.specs[0], one) is None  # one process: it runs
    for fine in ("lora", "rslora", "loftq", "dora", "full"):  # these train on several processes as before
        assert multi_process_issue(resolve_method(fine), cfg) is None, fine


@pytest.mark.parametrize("method", ["qlora4", "qdora", "loftq", "qlora8"])
def test_a_k_bit_method_without_bitsandbytes_is_skipped_cell_by_cell_like_qlora(monkeypatch, method):
    """Every method over 4/8-bit weights gets the same treatment without bitsandbytes: no refusal of the run, each
    cell recorded as skipped with the reason (what qlora4 and qlora8 always did)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    cfg = RunConfig(methods=(method,))
    assert adapters.check_installed(cfg.specs[0], cfg) is None
    kind, message = job.skip_reason(cfg.specs[0], "cpu")
    assert kind == "needs_bitsandbytes" and message.startswith(f"method {method} needs bitsandbytes")
    assert job.skip_reason(resolve_method("lora"), "cpu") is None


def test_qdora_over_8_bit_weights_is_a_method_peft_can_make():
    """peft 0.21 resolves DoRA's variant for its 8-bit layers too (lora/bnb.py Linear8bitLt), so bits=8 is allowed."""
    spec = resolve_method("qdora:bits=8")
    assert spec.use_dora and spec.load_in_8bit and adapters.check_installed(spec, RunConfig()) is None


def test_the_initial_adapter_folder_is_removed_on_every_path():
    with adapters.initial_folder(resolve_method("lora")) as none:
        assert none is None  # nothing to keep for a start that leaves the base alone
    with adapters.initial_folder(resolve_method("pissa")) as kept:
        assert Path(kept).is_dir()
    assert not Path(kept).exists()
    with pytest.raises(RuntimeError), adapters.initial_folder(resolve_method("olora")) as failed:
        raise RuntimeError("training failed")
    assert not Path(failed).exists()


@pytest.mark.parametrize("outcome", ["pruned", "failed"])
def test_a_pissa_cell_leaves_no_initial_adapter_when_it_stops_before_saving(monkeypatch, tmp_path, tokenizer_dir,
                                                                           outcome):
    """A search's pruned trial returns before the weights are saved, and a training that fails never gets there:
    the folder the cell's training kept PiSSA's start in is gone either way."""
    task, spec = get_task("cnn"), resolve_method("pissa")
    cell = CellSpec.create(RunConfig(tasks=("cnn",), methods=("pissa",)), task, spec)
    kept = []

    def train(model, tok, spec, pairs, cfg, device, initial_dir=None, **kw):
        Path(initial_dir, "adapter_config.json").write_text("{}")  # what save_initial writes there
        kept.append(initial_dir)
        if outcome == "failed":
            raise RuntimeError("loss is nan at step 1")
        pruned = {"step": 1, "loss": 2.0, "median": 1.0, "of": 2}
        return model, {"trained": True, "trainable_params": 1, "total_params": 2, "validation": {"pruned": pruned}}

    model = SimpleNamespace(get_memory_footprint=lambda: 0)
    monkeypatch.setattr(job, "load_model", lambda location, spec, device: model)
    monkeypatch.setattr(job.weights, "logits", lambda model, probe: [])
    monkeypatch.setattr(job.training, "train", train)
    rows = task.embedded("train")[:4]
    store = CellStore(tmp_path, "cnn", "pissa")
    data = {"train": rows, "validation": rows, "test": rows, "fingerprint": {}}
    if outcome == "failed":
        with pytest.raises(RuntimeError, match="nan"):
            job.execute(cell, task, store, data, str(tokenizer_dir), "cpu")
    else:
        job.execute(cell, task, store, data, str(tokenizer_dir), "cpu")
        assert store.read_json("status.json")["status"] == "pruned"
    assert len(kept) == 1 and not Path(kept[0]).exists()


def _dropouts(cfg) -> dict:
    """{method: (the dropout its cell trains with, as config.json holds it, and the note it keeps there)}."""
    out = {}
    for method in cfg.specs:
        cell = CellSpec.create(cfg, get_task("cnn"), method).to_json()
        assert cell["run"]["lora_dropout"] == cell["hyperparameters"]["lora_dropout"], method.name
        out[method.name] = (cell["hyperparameters"]["lora_dropout"], cell.get("notes", {}).get("lora_dropout"))
    return out


def test_a_given_lora_dropout_wins_for_pissa_and_olora_as_lr_does_and_a_method_s_own_beats_it(tmp_path):
    """The run's --lora-dropout, given as a flag or in the YAML file, replaces PiSSA's and OLoRA's registered 0, even
    at the default's own value; a dropout written on the method still wins over it."""
    methods = "lora,pissa,olora,olora:lora_dropout=0.2"
    for given in ("0.1", "0.05"):
        got = _dropouts(parse_run_args(["--methods", methods, "--lora-dropout", given]))
        assert got == {"lora": (float(given), None), "pissa": (float(given), None), "olora": (float(given), None),
                       "olora:lora_dropout=0.2": (0.2, None)}, given
    yaml = tmp_path / "run.yaml"
    yaml.write_text("lora_dropout: 0.1\nmethods: [pissa, {name: pissa, lr: 0.002}]\n")
    assert _dropouts(resolve({}, str(yaml))) == {"pissa": (0.1, None), "pissa:lr=0.002": (0.1, None)}


def test_without_the_flag_pissa_and_olora_keep_0_and_their_cells_say_why():
    got = _dropouts(parse_run_args(["--methods", "lora,pissa,olora:lr=0.002,pissa:lora_dropout=0"]))
    assert got["lora"] == (0.05, None) and got["pissa:lora_dropout=0"] == (0, None)  # the user's own choices
    for name, base in (("pissa", "pissa"), ("olora:lr=0.002", "olora")):
        dropout, why = got[name]
        assert dropout == 0.0, name
        assert why.startswith(f"0: {base}'s default, as --lora-dropout was not given (its start puts part"), why
        assert "the other LoRA methods use --lora-dropout's 0.05" in why and f"{base}:lora_dropout=P sets it" in why


def test_a_pissa_cell_names_its_dropout_as_training_starts_and_hands_peft_the_same(monkeypatch, capsys):
    """training.train builds the adapter with the dropout adapters.dropout says: PiSSA's 0 named on the terminal
    (and in train.json's notes) when --lora-dropout was not given; the user's, silently, when it was."""
    import torch

    class Built(Exception):  # stops train() where the adapter's LoraConfig is made, before any trainer
        pass

    def built(spec, cfg, dropout):
        raise Built(dropout)

    monkeypatch.setattr(training.adapters, "lora_config", built)
    for flags, dropout, line in (([], 0.0, True), (["--lora-dropout", "0.1"], 0.1, False)):
        cfg = parse_run_args(["--methods", "pissa", *flags])
        cell = CellSpec.create(cfg, get_task("cnn"), cfg.specs[0])
        with pytest.raises(Built) as got:
            training.train(torch.nn.Linear(2, 2), None, cell.method, [], cell.run, "cpu")
        assert got.value.args == (dropout,), flags
        err = capsys.readouterr().err.replace("\n", " ")
        assert ("lora dropout 0: pissa's default, as --lora-dropout was not given" in err) is line, (flags, err)
        notes = {}
        assert adapters.dropout(cell.method, cell.run, torch.nn.Linear(2, 2), notes) == dropout
        assert notes == ({"lora_dropout": cell.to_json()["notes"]["lora_dropout"]} if line else {})
        capsys.readouterr()  # its own line, said again
