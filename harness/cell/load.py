"""Loading a cell's model and tokenizer: weights in the method's format (float, or 4/8-bit with bitsandbytes) on
the cell's device, with a one-line error where a folder or the Hub cannot give them."""

from __future__ import annotations

import logging
from pathlib import Path

from harness.core.errors import ModelError
from harness.spec.models import HUB_ID, ResolvedModel
from harness.spec.precision import compute_dtype, weight_dtype


def hub_guard(fn, what: str, location: str):
    """Run a from_pretrained call; turn the hub's deep errors into one line that names the fix."""
    try:
        return fn()
    except (OSError, ValueError) as e:
        if HUB_ID.fullmatch(location) and not Path(location).exists():
            raise ModelError(
                f"cannot load {what} {location!r} from the Hugging Face Hub (offline, gated or misspelt?); "
                "download it on a connected machine and pass the local folder to --model") from None
        raise ModelError(f"cannot load {what} from {location}: {str(e).splitlines()[0]}") from None


def load_tokenizer(location: str):
    from transformers import AutoTokenizer

    tok = hub_guard(lambda: AutoTokenizer.from_pretrained(location), "tokenizer", location)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # Llama-2 has no pad token; eos is the usual stand-in
    return tok


# The files a saved tokenizer is read from: fast (tokenizer.json), SentencePiece (tokenizer.model, Llama-2),
# byte-level BPE (vocab.json + merges.txt) and WordPiece (vocab.txt) (transformers' tokenization_utils_base).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


def check_loadable(resolved: ResolvedModel) -> None:
    """Resolve the model's config and tokenizer (no weights) before the first cell, so that a misspelt hub id,
    an unreachable Hub (HF_HUB_OFFLINE=1 is honoured by transformers) or a broken folder is one ModelError
    line up front instead of the same failure in every cell."""
    from transformers import AutoConfig

    location = resolved.location
    folder = Path(location)
    for what, load in (("config", lambda: AutoConfig.from_pretrained(location)),
                       ("tokenizer", lambda: load_tokenizer(location))):
        if what == "tokenizer" and folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
            raise ModelError(f"model folder {location} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); "
                             "save the tokenizer there too, with tokenizer.save_pretrained(FOLDER)")
        try:
            hub_guard(load, what, location)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001  (a folder can break a loader in many ways; name the folder)
            raise ModelError(f"cannot load {what} from {location}: {type(e).__name__}: "
                             f"{(str(e).strip().splitlines() or [''])[0]}") from None


def quantization_config(spec, device: str):
    if not spec.quantized:
        return None
    from transformers import BitsAndBytesConfig

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # 8-bit logs a line per matmul on CPU
    if spec.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=spec.bnb_4bit_quant_type,
                              bnb_4bit_use_double_quant=spec.bnb_4bit_use_double_quant,
                              bnb_4bit_compute_dtype=compute_dtype(device))


def load_model(location: str, spec, device: str):
    from transformers import AutoModelForCausalLM

    quant = quantization_config(spec, device)
    kwargs = {"dtype": weight_dtype(spec, device)}
    if quant is not None:
        kwargs["quantization_config"] = quant
        if device == "cuda":
            import torch

            kwargs["device_map"] = {"": torch.cuda.current_device()}  # each training process its own GPU
    model = hub_guard(lambda: AutoModelForCausalLM.from_pretrained(location, **kwargs), "model", location)
    if quant is None:
        model.to(device)
    elif device == "cpu" and spec.load_in_4bit:
        keep_4bit_unpacked(model)
    return model


def keep_4bit_unpacked(model) -> None:
    """Keep bitsandbytes' 4-bit layers on their dequantize-and-matmul path on a CPU.

    On CPUs with AVX512-BF16, bitsandbytes 0.50's Linear4bit repacks its weight at its first forward in eval mode
    (``_convert_weight_packed_for_cpu``): the absmax is rounded to bfloat16 and later matmuls run in bfloat16
    through ``gemv_4bit``, which has no autograd kernel, so training after it (a cell takes base logits first)
    gets no gradient through the frozen base weights; and every ``state_dict()`` (peft's ``save_pretrained``)
    quantizes the weight again from the rounded absmax, changing the base model in memory. Measured on an AMD
    EPYC with avx512_bf16: LoRA gradients 23-61% off after one eval forward, and a saved adapter reloaded onto
    the changed base 0.0014 away from the trained logits."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
