"""Trained weights kept, checked and exported: save, export and reload with the logits the cell evaluated with;
a no-op adapter fails its cell; --save none keeps nothing; a corrupted adapter makes its cell corrupt."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from harness.cli import main
from tests.conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("weights")]  # its session fixture runs once

SMALL = ["--model", "tiny-llama", "--tasks", "cnn", "--train-limit", "4", "--eval-limit", "2",
         "--max-new-tokens", "8", "--bootstrap", "50"]
INLINE = ["--executor", "inline"]  # cells in this process, so that the monkeypatches below reach them


def status(cell: Path) -> dict:
    return json.loads((cell / "status.json").read_text())


def probe(tokenizer_dir):
    """Fixed prompts, tokenised, for comparing logits across loads."""
    from harness.cell.load import load_tokenizer

    tok = load_tokenizer(str(tokenizer_dir))
    texts = ["The city council voted on Tuesday to", "Summarize: rain fell across the valley all week."]
    return [torch.tensor([tok(t)["input_ids"]]) for t in texts]


def logits_of(model, ids) -> list:
    model.eval()
    with torch.inference_mode():
        return [model(input_ids=i).logits.float() for i in ids]


def max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def no_op(train):
    """training.train, except that the LoRA B matrices end at zero: an adapter that changes nothing."""
    def wrapped(*a, **kw):
        model, record = train(*a, **kw)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.zero_()
        return model, record

    return wrapped


@pytest.fixture(scope="session")
def run_a(tmp_path_factory, tiny_model_dir, tokenizer_dir):
    """lora and qlora with the default --save (adapters), and each model's logits as the cell evaluated it."""
    from harness.spec.task import get_task

    out = tmp_path_factory.mktemp("weights")
    ids = probe(tokenizer_dir)
    evaluated = []
    task_cls = type(get_task("cnn"))
    real = task_cls.evaluate

    def capture(self, model, *a, **kw):
        evaluated.append(logits_of(model, ids))
        return real(self, model, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_cls, "evaluate", capture)
        code = main([*SMALL, *INLINE, "--methods", "lora,qlora", "--out", str(out), "--run-name", "a"])
    assert code == 0
    return {"run": out / "a", "ids": ids, "lora": evaluated[0], "qlora": evaluated[1]}


def test_adapters_are_saved_checksummed_and_checked(run_a):
    for method, names in (("lora", ["differs_from_base", "reload_matches", "merged_matches_unmerged"]),
                          ("qlora", ["differs_from_base", "reload_matches"])):
        cell = run_a["run"] / "cnn" / method
        files = status(cell)["files"]
        for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
            assert files[name] == hashlib.sha256((cell / name).read_bytes()).hexdigest()
        train = json.loads((cell / "train.json").read_text())
        assert [c["name"] for c in train["checks"]] == names and all(c["passed"] for c in train["checks"])
        assert train["saved"]["kind"] == "adapter" and train["adapter_merged"] == (method == "lora")
        differs = train["checks"][0]
        assert differs["value"] > 100 * differs["tolerance"]  # a trained adapter is far above numeric noise


def test_lora_export_reloads_with_the_evaluated_logits_and_predictions(run_a, tmp_path, capsys):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.cell.generate import generate
    from harness.spec.task import GenerationStats

    out = tmp_path / "lora-export"
    assert main(["export", str(run_a["run"]), "cnn", "lora", str(out)]) == 0
    assert "with the adapter merged" in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(out)
    assert max_diff(logits_of(model, run_a["ids"]), run_a["lora"]) == 0.0  # the merged model the cell scored
    predictions = [json.loads(line) for line in (run_a["run"] / "cnn" / "lora" / "predictions.jsonl").open()]
    outputs = generate(model, AutoTokenizer.from_pretrained(out), [p["prompt"] for p in predictions], 8, 16,
                       GenerationStats())
    assert outputs == [p["output"] for p in predictions]
    # The cell's own adapter folder, in the standard peft layout, reloads onto a freshly loaded base model.
    reloaded = AutoPeftModelForCausalLM.from_pretrained(run_a["run"] / "cnn" / "lora" / "adapter")
    assert max_diff(logits_of(reloaded, run_a["ids"]), run_a["lora"]) < 1e-5  # unmerged against merged: float32


def test_qlora_export_is_the_adapter_with_the_base_model_id(run_a, tmp_path, tiny_model_dir):
    from peft import AutoPeftModelForCausalLM
    from transformers import BitsAndBytesConfig

    from harness.cell.weights import RELATIVE_TOLERANCE

    out = tmp_path / "qlora-export"
    assert main(["export", str(run_a["run"]), "cnn", "qlora", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    readme = (out / "README.md").read_text()
    assert f"base_model: {tiny_model_dir}" in readme and "AutoPeftModelForCausalLM.from_pretrained" in readme
    assert (out / "tokenizer.json").is_file()
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
    model = AutoPeftModelForCausalLM.from_pretrained(out, quantization_config=quant)
    # peft loads the bfloat16 adapter that trl trained into float32 layers: rounding, within bfloat16's noise.
    scale = max(float(x.abs().max()) for x in run_a["qlora"])
    assert max_diff(logits_of(model, run_a["ids"]), run_a["qlora"]) <= RELATIVE_TOLERANCE["match"]["bfloat16"] * scale


def test_export_errors_are_one_line(run_a, tmp_path, capsys):
    run = str(run_a["run"])
    cases = [
        ([str(tmp_path / "nope"), "cnn", "lora"],
         f"error: run {tmp_path / 'nope'} not found; runs in {tmp_path}/: none"),
        ([run, "guanaco", "lora"], f"error: run {run} has no task 'guanaco'; tasks: cnn"),
        ([run, "cnn", "full"], f"error: run {run} has no method 'full' for task cnn; methods: lora, qlora"),
    ]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases.append(([run, "cnn", "lora"], f"error: {tmp_path / 'full'} exists and is not empty; pass a new folder "
                                         "to export into"))
    for args, line in cases:
        target = tmp_path / ("full" if "exists" in line else "out")
        assert main(["export", *args, str(target)]) == 2
        assert capsys.readouterr().err.strip() == line
    assert not (tmp_path / "out").exists()


def test_no_op_adapter_fails_the_cell_with_adapter_check(monkeypatch, tmp_path, capsys, tiny_model_dir):
    """An adapter whose B matrices stay zero changes nothing (peft #1836's 0.50 against 0.97): the cell fails."""
    import harness.cell.training as training

    monkeypatch.setattr(training, "train", no_op(training.train))
    code = main([*SMALL, *INLINE, "--methods", "lora", "--out", str(tmp_path), "--run-name", "n"])
    assert code == 1
    st = status(tmp_path / "n" / "cnn" / "lora")
    assert st["status"] == "failed" and st["error_kind"] == "adapter_check"
    assert st["message"].startswith("check differs_from_base failed: max |logit difference|, the evaluated model "
                                    "against the base model before training is 0, must be above ")
    assert "the adapter was not applied or did not train" in st["message"]
    assert "1 adapter_check: cnn x lora: check differs_from_base failed" in capsys.readouterr().err


def test_save_model_keeps_merged_lora_and_full_models(tmp_path, tokenizer_dir):
    from transformers import AutoModelForCausalLM

    done = run_cli(*SMALL, "--methods", "lora,full", "--save", "model", "--out", str(tmp_path), "--run-name", "m")
    assert done.returncode == 0, done.stderr[-2000:]
    ids = probe(tokenizer_dir)
    for method in ("lora", "full"):
        cell = tmp_path / "m" / "cnn" / method
        assert not (cell / "adapter").exists() and (cell / "model" / "model.safetensors").is_file()
        assert "model/model.safetensors" in status(cell)["files"]
        out = tmp_path / f"{method}-export"
        assert main(["export", str(tmp_path / "m"), "cnn", method, str(out)]) == 0
        exported = logits_of(AutoModelForCausalLM.from_pretrained(out), ids)
        assert max_diff(exported, logits_of(AutoModelForCausalLM.from_pretrained(cell / "model"), ids)) == 0.0


def test_save_none_keeps_no_weights_and_export_says_how_to_keep_them(tmp_path, capsys):
    done = run_cli(*SMALL, "--methods", "lora,full", "--save", "none", "--out", str(tmp_path), "--run-name", "z")
    assert done.returncode == 0, done.stderr[-2000:]
    for method, flag in (("lora", "adapter"), ("full", "model")):
        cell = tmp_path / "z" / "cnn" / method
        assert sorted(p.name for p in cell.iterdir()) == ["config.json", "data.json", "env.json", "metrics.json",
                                                          "predictions.jsonl", "status.json", "train.json"]
        train = json.loads((cell / "train.json").read_text())
        assert train["saved"]["kind"] is None and all(c["passed"] for c in train["checks"])
        assert main(["export", str(tmp_path / "z"), "cnn", method, str(tmp_path / "out")]) == 2
        assert capsys.readouterr().err.strip() == (f"error: cell {cell} has no saved weights (it ran with --save "
                                                   f"none); rerun the matrix with --save {flag} to keep them")
    # the reload check ran on a temporary copy of the adapter, which is gone
    lora = json.loads((tmp_path / "z" / "cnn" / "lora" / "train.json").read_text())
    assert [c["name"] for c in lora["checks"]] == ["differs_from_base", "reload_matches", "merged_matches_unmerged"]


def test_corrupted_adapter_makes_the_cell_corrupt_and_resume_redoes_it(run_a, tmp_path, capsys):
    run = tmp_path / "a"
    shutil.copytree(run_a["run"], run)
    weights = run / "cnn" / "lora" / "adapter" / "adapter_model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-8] + b"\0" * 8)
    reason = "adapter/adapter_model.safetensors does not match its checksum"
    assert main(["export", str(run), "cnn", "lora", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: cell {run / 'cnn' / 'lora'} is corrupt ({reason}); run the "
                                               "run's command again to redo it, then export")
    done = run_cli(*SMALL, "--methods", "lora,qlora", "--out", str(tmp_path), "--run-name", "a")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"cnn x lora: corrupt ({reason}), redoing" in done.stderr
    assert "cnn x qlora: already complete, skipped" in done.stderr
    assert weights.read_bytes() == original  # retrained deterministically, checksummed again
    assert status(run / "cnn" / "lora")["status"] == "ok"


@pytest.mark.gpu
def test_checks_hold_under_cuda_mixed_precision(monkeypatch, tmp_path, capsys):
    """On CUDA the checks run in bfloat16 (float16 below capability 8.0): trained weights pass, and a no-op
    adapter still fails, although prepare_model_for_kbit_training upcasts a quantized model's norms."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    import harness.cell.training as training

    cuda = [*SMALL, *INLINE, "--device", "cuda", "--train-limit", "8"]
    assert main([*cuda, "--methods", "lora,qlora4,qlora8,full", "--out", str(tmp_path), "--run-name", "t"]) == 0
    for method in ("lora", "qlora4", "qlora8", "full"):
        train = json.loads((tmp_path / "t" / "cnn" / method / "train.json").read_text())
        assert all(c["passed"] and c["dtype"] in ("bfloat16", "float16") for c in train["checks"])
    monkeypatch.setattr(training, "train", no_op(training.train))
    assert main([*cuda, "--methods", "lora,qlora4,qlora8", "--out", str(tmp_path), "--run-name", "n"]) == 1
    for method in ("lora", "qlora4", "qlora8"):
        st = status(tmp_path / "n" / "cnn" / method)
        assert st["error_kind"] == "adapter_check" and "differs_from_base" in st["message"]
