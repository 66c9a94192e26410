"""Greedy batched generation with vLLM, for ``--generate-backend vllm`` (the ``vllm`` extra; CUDA only).

``VLLMBackend`` serves a task's prompts as ``harness.cell.generate.HFBackend`` does: the same arguments and the
same token ids in, the same stripped strings out, the same GenerationStats counts. vLLM schedules its own batches
(continuous batching), so ``batch_size`` is not used; scoring completions (guanaco's perplexity) stays on the
cell's model in transformers.

vLLM builds its engine from a model folder, never from a model object in memory, so the cell's model is
written to a temporary folder first:

* a model without an adapter (base, full, a merged LoRA) is saved whole, with its tokenizer;
* a 4-bit QLoRA model keeps its adapter separate (merging would re-quantize), so the adapter is saved and
  vLLM loads the base from where the harness loaded it, quantizes it in flight with bitsandbytes and applies
  the adapter through a LoRARequest;
* an 8-bit QLoRA model is refused: vLLM's bitsandbytes path quantizes in flight to 4 bits only.

The backend builds its engine for the model it is first given and reuses it for every later call on that same
model object (the ReAct loop calls generate once per step, --cross-eval once per other task); the cell calls
``close()`` after its evaluation, which shuts the engine down and removes its folder.
"""

from __future__ import annotations

import gc
import importlib.util
import shutil
import tempfile
import time
from pathlib import Path

from harness.cell.generate import completion_nll, encode_prompts, eos_ids
from harness.core.console import progress_bar
from harness.core.errors import ConfigError
from harness.spec.precision import compute_dtype, dtype_name

INSTALL_HINT = 'pip install -e ".[vllm]"'
# vLLM accepts these LoRA ranks for max_lora_rank (vllm/config/lora.py); the adapter's rank is rounded up.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
# vLLM claims this share of the GPU memory that is free when its engine starts: the cell's own model and
# the trainer's leftovers stay resident beside it (vLLM's default, 0.9 of the whole card, would not fit).
FREE_MEMORY_SHARE = 0.8


def check_available(device: str) -> None:
    """One line, before any cell runs, when the vLLM backend cannot run here."""
    if device != "cuda":
        raise ConfigError(f"--generate-backend vllm needs a CUDA GPU and this run is on {device}; "
                          "use --generate-backend hf (the default)")
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"--generate-backend vllm needs vLLM, which is not installed: {INSTALL_HINT}")


def export_plan(model) -> dict:
    """How ``model`` reaches vLLM: {"kind": "folder"} (save it whole) or {"kind": "adapter", "base": location,
    "quantization": "bitsandbytes" or None, "rank": r}. Refuses an 8-bit base with one line."""
    peft_config = getattr(model, "peft_config", None)
    if not peft_config or not hasattr(model, "save_pretrained") or not hasattr(model, "get_base_model"):
        return {"kind": "folder"}
    config = peft_config.get("default") or next(iter(peft_config.values()))
    base = model.get_base_model()
    if getattr(base, "is_loaded_in_8bit", False):
        raise ConfigError("--generate-backend vllm cannot serve an 8-bit (LLM.int8) base: vLLM quantizes with "
                          "bitsandbytes to 4 bits only; evaluate qlora8 with --generate-backend hf")
    quantization = "bitsandbytes" if getattr(base, "is_loaded_in_4bit", False) else None
    return {"kind": "adapter", "base": config.base_model_name_or_path, "quantization": quantization,
            "rank": config.r}


def _start(model, tok) -> dict:
    import torch
    from vllm import LLM

    plan = export_plan(model)
    folder = Path(tempfile.mkdtemp(prefix="harness-vllm-"))
    tok.save_pretrained(folder)
    free, total = torch.cuda.mem_get_info()
    kwargs = {"tokenizer": str(folder), "dtype": dtype_name(compute_dtype("cuda")), "seed": 0,
              "gpu_memory_utilization": FREE_MEMORY_SHARE * free / total}
    lora = None
    if plan["kind"] == "adapter":
        from vllm.lora.request import LoRARequest

        model.save_pretrained(folder / "adapter")
        rank = next((r for r in LORA_RANKS if r >= plan["rank"]), plan["rank"])
        kwargs.update(model=plan["base"], enable_lora=True, max_lora_rank=rank)
        if plan["quantization"]:
            kwargs["quantization"] = plan["quantization"]
        lora = LoRARequest("cell", 1, str(folder / "adapter"))
    else:
        model.save_pretrained(folder)
        kwargs["model"] = str(folder)
    return {"llm": LLM(**kwargs), "lora": lora, "folder": folder}


class VLLMBackend:
    """``--generate-backend vllm``: greedy generation of a task's prompts (already rendered with the chat template)
    by a vLLM engine built from the cell's model."""

    name = "vllm"

    def __init__(self, prefix_cache: bool = False):
        # vLLM caches shared prompt prefixes by itself (automatic prefix caching); the flag is the HF backend's.
        self._model = None  # the model object the engine was built from: the engine serves it alone
        self._engine: dict = {}

    def generate(self, model, tok, prompts: list[str], max_new_tokens: int, batch_size: int, stats,
                 stop_strings: list[str] | None = None, label: str = "generate") -> list[str]:
        check_available(next(model.parameters()).device.type)
        if not prompts:
            return []
        from vllm import SamplingParams

        if self._model is not model:
            self.close()
            self._engine, self._model = _start(model, tok), model
        # temperature 0 is greedy decoding. HF's stop_strings keep the stop string in the output; so does this.
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop=stop_strings or None,
                                include_stop_str_in_output=True, stop_token_ids=eos_ids(tok, model),
                                skip_special_tokens=True)
        requests = [{"prompt_token_ids": ids} for ids in encode_prompts(tok, prompts)]
        with progress_bar(label, len(prompts)) as advance:
            t0 = time.perf_counter()
            outputs = self._engine["llm"].generate(requests, params, lora_request=self._engine["lora"],
                                                   use_tqdm=False)
            stats.seconds += time.perf_counter() - t0
            stats.calls += 1
            advance(len(prompts))
        # vLLM keeps the end-of-sequence token in token_ids, as the HF path counts it
        stats.new_tokens += sum(len(o.outputs[0].token_ids) for o in outputs)
        return [o.outputs[0].text.strip() for o in outputs]

    def completion_nll(self, model, tok, prompts: list[str], completions: list[str], batch_size: int,
                       label: str = "score") -> list[tuple[float, int]]:
        return completion_nll(model, tok, prompts, completions, batch_size, label)

    def close(self) -> None:
        """Shut the engine down and remove its folder (after a cell's evaluation)."""
        engine, self._engine, self._model = self._engine, {}, None
        if not engine:
            return
        import torch

        try:
            shutdown = getattr(getattr(engine["llm"], "llm_engine", None), "shutdown", None)
            if callable(shutdown):  # the V1 engine runs in its own process; stop it rather than wait for exit
                shutdown()
        finally:
            del engine["llm"]
            shutil.rmtree(engine["folder"], ignore_errors=True)
            gc.collect()
            torch.cuda.empty_cache()
