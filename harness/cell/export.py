"""A deployable model from the weights a cell kept (``python run_matrix.py export RUN TASK METHOD OUT``).

* LoRA: the base model with the adapter merged in, in the transformers layout, tokenizer included;
  ``AutoModelForCausalLM.from_pretrained(OUT)`` loads it.
* QLoRA: the adapter, with ``base_model_name_or_path`` set to the model the run used, and the tokenizer;
  ``AutoPeftModelForCausalLM.from_pretrained(OUT)`` loads it (the README written there gives the 4/8-bit
  settings). Merging into quantized weights would re-quantize them and change the model (harness/cell/training.py).
* full: the model the cell saved with ``--save model``.

Only a complete cell (every checksum in status.json matches) that finished ok is exported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.cell.load import hub_guard, load_tokenizer
from harness.cell.weights import save_folder
from harness.core.errors import ConfigError
from harness.core.files import read_json
from harness.records.store import CellStore
from harness.spec.methods import ADAPTER, MODEL, MethodSpec
from harness.spec.models import resolve_model


def find_cell(run: str, task: str, method: str) -> CellStore:
    """The cell of ``task`` x ``method`` in ``run``, complete and ok; a one-line error names what exists."""
    run_dir = Path(run)
    if not run_dir.is_dir() and (Path("results") / run).is_dir():
        run_dir = Path("results") / run
    if not run_dir.is_dir():
        parent = run_dir.parent if str(run_dir.parent) != "." else Path("results")
        runs = sorted(r.parent.name for r in parent.glob("*/run.json"))
        raise ConfigError(f"run {run} not found; runs in {parent}/: {', '.join(runs) or 'none'}")
    cells = _cells(run_dir)
    if task not in {c["task"] for c in cells}:
        raise ConfigError(f"run {run_dir} has no task {task!r}; tasks: "
                          f"{', '.join(sorted({c['task'] for c in cells})) or 'none'}")
    mine = [c for c in cells if c["task"] == task]
    found = [c for c in mine if method in (c["method"], Path(c["folder"]).name)]
    if not found:
        raise ConfigError(f"run {run_dir} has no method {method!r} for task {task}; methods: "
                          f"{', '.join(c['method'] for c in mine)}")
    if len(found) > 1:
        raise ConfigError(f"{task} x {method} ran with several seeds; name one folder: "
                          f"{', '.join(Path(c['folder']).name for c in found)}")
    folder = run_dir / found[0]["folder"]
    store = CellStore(folder.parent.parent, folder.parent.name, folder.name)
    state, reason = store.state()
    if state != "complete":
        raise ConfigError(f"cell {folder} is {state}{f' ({reason})' if reason else ''}; run the run's command "
                          "again to redo it, then export")
    status = store.read_json("status.json")
    if status["status"] != "ok":
        raise ConfigError(f"cell {folder} {status['status']} ({status.get('error_kind')}: "
                          f"{status.get('message')}); there is nothing to export")
    return store


def _cells(run_dir: Path) -> list[dict]:
    """{task, method, folder} for each cell: from run.json, else from the cell folders' config.json."""
    if (run_dir / "run.json").is_file():
        return read_json(run_dir / "run.json")["cells"]
    return [{"task": c.parent.parent.name, "method": read_json(c)["method"]["name"],
             "folder": str(c.parent.relative_to(run_dir))} for c in sorted(run_dir.glob("*/*/config.json"))]


def export(store: CellStore, out: Path) -> str:
    """Write the deployable model of a complete cell to ``out``; return what was written, in words."""
    conf = store.read_json("config.json")
    spec = MethodSpec(**conf["method"])
    location = resolve_model(conf["run"]["model"]).location
    if store.path(MODEL).is_dir():  # --save model: a full model, or a LoRA model merged in the cell
        save_folder(out, lambda tmp: shutil.copytree(store.path(MODEL), tmp, dirs_exist_ok=True))
        return f"the model the cell saved ({'merged LoRA' if spec.finetune == 'lora' else spec.finetune})"
    if not store.path(ADAPTER).is_dir():
        flag = "adapter" if spec.finetune == "lora" else "model"
        raise ConfigError(f"cell {store.dir} has no saved weights (it ran with --save "
                          f"{conf['run'].get('save')}); rerun the matrix with --save {flag} to keep them")
    if spec.quantized:
        save_folder(out, lambda tmp: _adapter_with_base(store, spec, location, Path(tmp), out))
        start = (" It started from LoftQ; its base is the usual NF4 quantization of the original weights, so nothing "
                 "else needs keeping." if spec.init_lora_weights == "loftq" else "")
        return (f"the {spec.bits}-bit adapter over {location} (load it with AutoPeftModelForCausalLM); merging "
                f"{'DoRA ' if spec.use_dora else ''}into quantized weights would re-quantize them, so it stays an "
                f"adapter.{start}")
    save_folder(out, lambda tmp: _merged(store, conf, location, Path(tmp), out))
    return f"{location} with the adapter merged (load it with AutoModelForCausalLM)"


def _merged(store: CellStore, conf: dict, location: str, tmp: Path, out: Path) -> None:
    """Base + adapter, merged, in the dtype the cell evaluated in, on the CPU (no GPU needed to export)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype = _evaluated_dtype(store)
    base = hub_guard(lambda: AutoModelForCausalLM.from_pretrained(location, dtype=getattr(torch, dtype)), "model",
                      location)
    merged = PeftModel.from_pretrained(base, str(store.path(ADAPTER))).merge_and_unload()
    merged.save_pretrained(tmp)
    load_tokenizer(location).save_pretrained(tmp)
    (tmp / "README.md").write_text(
        f"# {conf['task']} x {conf['method']['name']}, merged\n\n"
        f"Base model `{location}` with the LoRA adapter of `{store.dir}` merged into its weights ({dtype}).\n\n"
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"model = AutoModelForCausalLM.from_pretrained(\"{out}\")\n"
        f"tokenizer = AutoTokenizer.from_pretrained(\"{out}\")\n```\n")


def _adapter_with_base(store: CellStore, spec, location: str, tmp: Path, out: Path) -> None:
    """The adapter files, pointed at the base model the run used, with the tokenizer and a loading note."""
    shutil.copytree(store.path(ADAPTER), tmp, dirs_exist_ok=True)
    config_path = tmp / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = location
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    load_tokenizer(location).save_pretrained(tmp)
    if spec.bits == 4:
        quant = (f"BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=\"{spec.bnb_4bit_quant_type}\",\n"
                 f"    bnb_4bit_use_double_quant={spec.bnb_4bit_use_double_quant}, "
                 "bnb_4bit_compute_dtype=torch.bfloat16)  # torch.float32 on a CPU")
    else:
        quant = "BitsAndBytesConfig(load_in_8bit=True)"
    loftq = ("Its adapter started from LoftQ (each layer's rank-r SVD of its 4-bit quantization error); the base is "
             "the usual NF4 quantization of the original weights, so it loads as below.\n\n"
             if spec.init_lora_weights == "loftq" else "")
    (tmp / "README.md").write_text(
        f"---\nbase_model: {location}\nlibrary_name: peft\n---\n\n"
        f"# {store.dir.parent.name} x {spec.name}: a {'DoRA' if spec.use_dora else 'LoRA'} adapter over a "
        f"{spec.bits}-bit base\n\n"
        f"The adapter of `{store.dir}`. It was trained over `{location}` loaded in {spec.bits} bits, and is kept "
        "unmerged: merging it into quantized weights would re-quantize them and change the model.\n\n" + loftq +
        "Load it over the base model, quantized as in training:\n\n"
        "```python\nimport torch\nfrom peft import AutoPeftModelForCausalLM\n"
        "from transformers import AutoTokenizer, BitsAndBytesConfig\n"
        f"quantization = {quant}\n"
        f"model = AutoPeftModelForCausalLM.from_pretrained(\"{out}\", quantization_config=quantization)\n"
        f"tokenizer = AutoTokenizer.from_pretrained(\"{out}\")\n```\n")


def _evaluated_dtype(store: CellStore) -> str:
    """The weight dtype the cell evaluated in (metrics.json), so the export is the model that was scored."""
    try:
        return store.read_json("metrics.json")["measurements"]["precision"]["weight_dtype"]
    except (OSError, KeyError, ValueError):
        return "float32"
