"""The method matrix: prompting (zero-shot, few-shot, with retrieval), full fine-tuning, LoRA, and QLoRA in 4 and 8
bits, and any trained method with shots or retrieval in its prompts.

A method is a frozen ``MethodSpec``. Variants are partials of one factory, not subclasses (the torchtune
pattern): ``qlora4 = partial(lora, bits=4)``, ``fewshot = partial(base, shots=3)``. ``resolve_method("lora:lr=1e-3")``
applies field overrides written on the command line or in YAML (``lora:retrieve=3`` trains and evaluates LoRA on
prompts that hold retrieved passages), and the spec's ``__post_init__`` rejects impossible combinations.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from functools import partial

from harness.core.errors import ConfigError
from harness.core.registry import Registry
from harness.spec.search import parse_dim

METHODS = Registry("method")


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class MethodSpec:
    name: str = _f("base", "the name shown in reports and used as the cell folder")
    finetune: str = _f("none", "none (prompting only), full (all weights) or lora (adapter only)")
    load_in_4bit: bool = _f(False, "load frozen base weights in 4 bits with bitsandbytes")
    load_in_8bit: bool = _f(False, "load frozen base weights in 8 bits with bitsandbytes (LLM.int8)")
    bnb_4bit_quant_type: str = _f("nf4", "4-bit data type: nf4 (QLoRA's NormalFloat) or fp4")
    bnb_4bit_use_double_quant: bool = _f(True, "quantize the quantization constants too (QLoRA)")
    lr: float | None = _f(None, "this method's learning rate; --lr overrides it for every method")
    lora_r: int | None = _f(None, "this method's LoRA rank (unset: --lora-r)")
    lora_alpha: int | None = _f(None, "this method's LoRA alpha (unset: --lora-alpha)")
    epochs: float | None = _f(None, "this method's training epochs (unset: --epochs)")
    lora_dropout: float | None = _f(None, "this method's LoRA dropout (unset: --lora-dropout)")
    lora_target_modules: str = _f("all-linear", "peft target modules: all attention and MLP projections")
    # --- which LoRA: peft's LoraConfig fields, and LoRA+'s optimizer --------------------------------------------
    use_dora: bool = _f(False, "DoRA (Liu et al. 2024): a magnitude vector per adapted weight and LoRA on its "
                               "direction (peft LoraConfig use_dora)")
    use_rslora: bool = _f(False, "rsLoRA (Kalajdzievski 2023): scale the adapter by alpha / sqrt(r) instead of "
                                 "alpha / r (peft LoraConfig use_rslora)")
    init_lora_weights: str = _f("default", "the adapter's start (peft LoraConfig init_lora_weights): default (B at "
                                           "zero), gaussian, pissa or pissa_niter_N (the weights' principal "
                                           "directions, Meng et al. 2024), olora (orthonormal, Buyukakyuz 2024), "
                                           "loftq (offsets 4-bit quantization error, Li et al. 2023)")
    loraplus_ratio: float | None = _f(None, "LoRA+ (Hayou et al. 2024): B's learning rate over A's, through peft's "
                                            "create_loraplus_optimizer; unset: one rate for both")
    requires_cuda: bool = _f(False, "the method cannot run without a CUDA device")
    # --- what the prompt holds (harness/spec/prompting.py builds it; every task's prompt goes through it) ---------
    shots: int | None = _f(None, "worked examples from the task's training split in each prompt, as chat turns "
                                 "(user, then assistant), as lm-eval's --fewshot_as_multiturn does; unset: zero-shot")
    shot_select: str = _f("random", "how shots are chosen: random (one seeded draw serves every query of a cell) or "
                                    "similar (the training examples nearest each query by BM25)")
    retrieve: int | None = _f(None, "passages of the task's knowledge base (--corpus) ranked highest for the query, "
                                    "placed before it with their titles; unset: none")
    raft: float | None = _f(None, "RAFT's recipe (Zhang et al. 2024) for training with retrieval: the share of "
                                  "training prompts that keep the row's gold passage among the retrieved ones; the "
                                  "rest hold distractors only (needs retrieve, a trained method and gold ids)")

    def __post_init__(self):
        if self.finetune not in ("none", "full", "lora"):
            raise ConfigError(f"method {self.name}: finetune must be none, full or lora, got {self.finetune!r}")
        if self.load_in_4bit and self.load_in_8bit:
            raise ConfigError(f"method {self.name}: 4-bit and 8-bit at once; choose one (qlora4 or qlora8)")
        if self.quantized and self.finetune != "lora":
            raise ConfigError(
                f"method {self.name}: quantization without an adapter; bitsandbytes weights are frozen, so "
                "quantized training needs LoRA (use qlora4 or qlora8)")
        if self.bnb_4bit_quant_type not in ("nf4", "fp4"):
            raise ConfigError(f"method {self.name}: bnb_4bit_quant_type must be nf4 or fp4")
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))):
            raise ConfigError(f"method {self.name}: lr must be a number, got {self.lr!r}")
        if self.finetune != "none" and (self.lr is None or self.lr <= 0):
            raise ConfigError(f"method {self.name}: a trained method needs a positive lr, got {self.lr}")
        if self.lr is not None and not math.isfinite(self.lr):
            raise ConfigError(f"method {self.name}: lr must be a finite number, got {self.lr}")
        for key in ("lora_r", "lora_alpha"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"method {self.name}: {key} must be a whole number of at least 1, got {value!r}")
            if value is not None and self.finetune != "lora":
                raise ConfigError(f"method {self.name}: {key} is a LoRA setting, and the method trains no adapter")
        if self.lora_dropout is not None and (isinstance(self.lora_dropout, bool) or not isinstance(
                self.lora_dropout, (int, float)) or not 0 <= self.lora_dropout < 1 or self.finetune != "lora"):
            raise ConfigError(f"method {self.name}: lora_dropout is a LoRA setting from 0 to below 1, got "
                              f"{self.lora_dropout!r}" + ("" if self.finetune == "lora" else " on a method that "
                                                          "trains no adapter"))
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, (int, float))
                                        or not (math.isfinite(self.epochs) and self.epochs > 0)):
            raise ConfigError(f"method {self.name}: epochs must be a positive number, got {self.epochs!r}")
        for key in ("shots", "retrieve"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"method {self.name}: {key} must be a whole number of at least 1, got {value!r}; "
                                  f"leave {key} out for none")
        if self.shot_select not in SHOT_SELECT:
            raise ConfigError(f"method {self.name}: shot_select must be one of {', '.join(SHOT_SELECT)}, got "
                              f"{self.shot_select!r}")
        if self.shot_select != "random" and self.shots is None:
            raise ConfigError(f"method {self.name}: shot_select={self.shot_select} chooses shots, and the method has "
                              "none; add shots=K")
        self._check_adapter()
        if self.raft is not None:
            if isinstance(self.raft, bool) or not isinstance(self.raft, (int, float)) or not 0 <= self.raft <= 1:
                raise ConfigError(f"method {self.name}: raft is the share of training prompts that keep the gold "
                                  f"passage, a number from 0 to 1, got {self.raft!r}")
            if self.retrieve is None or not self.trains:
                raise ConfigError(f"method {self.name}: raft shapes the retrieved passages of training prompts; it "
                                  "needs a trained method with retrieve=K, e.g. lora:retrieve=3:raft=0.8")

    def _check_adapter(self) -> None:
        init = self.init_lora_weights
        lora_only = [k for k, off in (("use_dora", False), ("use_rslora", False), ("init_lora_weights", "default"),
                                      ("loraplus_ratio", None)) if getattr(self, k) != off]
        if lora_only and self.finetune != "lora":
            raise ConfigError(f"method {self.name}: {lora_only[0]} is a LoRA setting, and the method trains no "
                              "adapter; use it on lora, qlora4 or qlora8")
        if not (init in INITS or re.fullmatch(r"pissa_niter_[1-9][0-9]*", str(init))):
            raise ConfigError(f"method {self.name}: init_lora_weights must be one of {', '.join(INITS)} or "
                              f"pissa_niter_N, got {init!r}")
        if init == "loftq" and not self.load_in_4bit:
            raise ConfigError(f"method {self.name}: loftq offsets the error of 4-bit weights, and this method's are "
                              f"{'8-bit' if self.load_in_8bit else 'not quantized'}; use loftq (4-bit), or add "
                              "bits=4")
        if str(init).startswith(("pissa", "olora")) and self.quantized:
            raise ConfigError(f"method {self.name}: {init} rewrites the base weights as their residual, and "
                              f"{self.bits}-bit weights would be quantized again from it; use it without bits (peft "
                              "documents quantizing the residual as a separate step)")
        if self.loraplus_ratio is not None and (isinstance(self.loraplus_ratio, bool) or not isinstance(
                self.loraplus_ratio, (int, float)) or not self.loraplus_ratio >= 1):
            raise ConfigError(f"method {self.name}: loraplus_ratio is B's learning rate over A's, at least 1 "
                              f"(LoRA+ uses 16), got {self.loraplus_ratio!r}")

    @property
    def mutates_base(self) -> bool:
        """The adapter's start rewrites the base weights (PiSSA, OLoRA): a saved adapter is converted back to one
        that applies to the original base (peft's path_initial_model_for_weight_conversion)."""
        return str(self.init_lora_weights).startswith(("pissa", "olora"))

    @property
    def quantized(self) -> bool:
        return self.load_in_4bit or self.load_in_8bit

    @property
    def trains(self) -> bool:
        return self.finetune != "none"

    @property
    def bits(self) -> int | None:
        return 4 if self.load_in_4bit else 8 if self.load_in_8bit else None

    @property
    def prompting(self) -> bool:
        """The prompts hold more than the query: shots, retrieved passages, or both."""
        return self.shots is not None or self.retrieve is not None


SHOT_SELECT = ("random", "similar")
INITS = ("default", "gaussian", "pissa", "olora", "loftq")


@METHODS.register("base")
def base(name: str = "base", **overrides) -> MethodSpec:
    """Zero-shot prompting of the unmodified model: the baseline every fine-tune must beat."""
    return MethodSpec(name=name, finetune="none", **overrides)


# Three shots and three passages: lm-eval and HELM default to a handful of in-context examples (HELM's
# max_train_instances is 5, lm-eval's --num_fewshot is set per task), and three passages fit the default 512-token
# window with the question; the counts are the harness's defaults, tunable as fewshot:shots=1|3|5.
METHODS.add("fewshot", partial(base, name="fewshot", shots=3))
METHODS.add("rag", partial(base, name="rag", retrieve=3))


@METHODS.register("full")
def full(name: str = "full", lr: float = 5e-5, **overrides) -> MethodSpec:
    """All weights trained. 5e-5 is a common full fine-tuning rate for models of this size (Alpaca used 2e-5
    on 7B; small models tolerate more)."""
    return MethodSpec(name=name, finetune="full", lr=lr, **overrides)


@METHODS.register("lora")
def lora(name: str = "lora", bits: int | None = None, lr: float = 1e-3, **overrides) -> MethodSpec:
    """LoRA (Hu et al. 2021) on every attention and MLP projection; ``bits`` puts it over quantized weights.

    1e-3 rather than QLoRA's 2e-4 (Dettmers et al. 2023, for 7B+ models): with a 135M model and a few dozen
    steps, 2e-4 barely moves the loss (docs/benchmarks.md has the measurement).
    """
    if bits not in (None, 4, 8):
        raise ConfigError(f"method {name}: bits must be 4 or 8, got {bits}")
    quant = {"load_in_4bit": bits == 4, "load_in_8bit": bits == 8}
    return MethodSpec(name=name, finetune="lora", lr=lr, **{**quant, **overrides})


METHODS.add("qlora4", partial(lora, name="qlora4", bits=4))
METHODS.add("qlora", partial(lora, name="qlora", bits=4))  # QLoRA as published is NF4 + double quantization
METHODS.add("qlora8", partial(lora, name="qlora8", bits=8))
# The adapters users compare, each LoRA with one field of peft's LoraConfig set (or LoRA+'s optimizer).
METHODS.add("dora", partial(lora, name="dora", use_dora=True))
METHODS.add("qdora", partial(lora, name="qdora", bits=4, use_dora=True))  # DoRA over NF4 weights (Answer.AI's QDoRA)
METHODS.add("rslora", partial(lora, name="rslora", use_rslora=True))
# PiSSA by a randomized SVD of 4 iterations: peft's guide recommends pissa_niter_N over the full SVD for speed, at
# a start that is near the same (Meng et al. 2024, fast SVD).
# Both starts put the weight's principal (PiSSA) or orthonormal (OLoRA) part in the adapter, so dropout on the
# adapter's input perturbs the model's own function from the first step (SmolLM2 on 8 cnn rows: the first step's
# loss 1.746 for LoRA and for PiSSA without dropout, 2.29 for PiSSA at 0.05, 2.39 on peft's own dropout): no
# dropout, as peft's PiSSA example and LoraConfig's default use, unless --lora-dropout is given (resolve_method).
METHODS.add("pissa", partial(lora, name="pissa", init_lora_weights="pissa_niter_4", lora_dropout=0.0))
METHODS.add("olora", partial(lora, name="olora", init_lora_weights="olora", lora_dropout=0.0))
METHODS.add("loftq", partial(lora, name="loftq", bits=4, init_lora_weights="loftq"))
# 16: LoRA+'s recommended ratio (Hayou et al. 2024, "lambda = 2^4 generally works well"), also peft's example.
METHODS.add("lora+", partial(lora, name="lora+", loraplus_ratio=16.0))

SPEC_FIELDS = {f.name for f in dataclasses.fields(MethodSpec)} - {"name"}


def written_pairs(text: str) -> list[tuple[str, str, str]]:
    """The (key, "=", value) pairs a method's text writes, unchecked: resolve_method checks them; cell.py reads them."""
    _, *pairs = text.split(":")
    return [(key.strip(), sep, raw.strip()) for key, sep, raw in (pair.partition("=") for pair in pairs)]


def resolve_method(text: str, lora_dropout: float | None = None) -> MethodSpec:
    """``NAME`` or ``NAME:key=value[:key=value]`` -> a checked MethodSpec; ``lora_dropout``: a given --lora-dropout."""
    base_name, *pairs = text.split(":")
    factory = METHODS.lookup(base_name.strip())
    overrides = {}
    for pair, (key, sep, raw) in zip(pairs, written_pairs(text), strict=True):
        if not sep or key not in SPEC_FIELDS | {"bits"}:
            raise ConfigError(f"method {text!r}: {pair!r} is not key=value with a known key; "
                              f"keys: {', '.join(sorted(SPEC_FIELDS | {'bits'}))}")
        overrides[key] = _scalar(raw)
    if "bits" in overrides:
        bits = overrides.pop("bits")
        if bits not in (4, 8):
            raise ConfigError(f"method {text!r}: bits must be 4 or 8, got {bits}")
        overrides["load_in_4bit"], overrides["load_in_8bit"] = bits == 4, bits == 8
    name = text if pairs else base_name.strip()
    try:
        spec = factory(name=name, **overrides)
    except TypeError as e:  # a wrongly typed override, e.g. lr=abc
        raise ConfigError(f"method {text!r}: {e}") from None
    # A given --lora-dropout beats one a method is registered with (PiSSA's 0), as --lr does; one the text writes wins.
    return spec if lora_dropout is None or "lora_dropout" in overrides else dataclasses.replace(spec, lora_dropout=None)


def split_search(text: str) -> tuple[str, dict]:
    """``lora:lr=1e-4..1e-2:lora_r=8|16`` -> (``lora``, {"lr": Dim, "lora_r": Dim}): the pairs that write a range
    (``a..b``) or a grid (``a|b|c``) come out as the method's own search (harness/spec/search.py)."""
    base_name, *pairs = text.split(":")
    kept, dims = [base_name], {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        key = key.strip()
        if "|" not in raw and ".." not in raw:
            kept.append(pair)
            continue
        if key in dims:
            raise ConfigError(f"method {text!r}: {key} is searched twice; write one range or grid for it")
        dims[key] = parse_dim(key, raw.strip(), f"method {text!r}")
    return ":".join(kept), dims


def _scalar(raw: str):
    """'true' -> True, '1e-3' -> 0.001, '8' -> 8, anything else stays a string."""
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def folder_name(spec: MethodSpec | str) -> str:
    """A method's name (or the method's) as a folder name."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", spec if isinstance(spec, str) else spec.name)


ADAPTER, MODEL = "adapter", "model"  # the folders a cell keeps trained weights in


def save_kind(cfg, spec: MethodSpec) -> tuple[str | None, str | None]:
    """What a cell of ``spec`` keeps under ``--save`` (``ADAPTER``, ``MODEL`` or None), and a note when --save could
    not be followed as asked."""
    lora = spec.finetune == "lora"
    if cfg.save == "none":
        return None, None
    if cfg.save == "auto":
        return (ADAPTER if lora else None), None
    if cfg.save == ADAPTER:
        return (ADAPTER, None) if lora else (None, "full fine-tuning has no adapter; --save model keeps the model")
    if spec.quantized:
        # Merging into 4/8-bit weights re-quantizes them and changes the model (harness/cell/training.py), so the
        # deployable form of a QLoRA model is its adapter plus the base model id.
        return ADAPTER, "a quantized model is kept as its adapter (merging would re-quantize the base weights)"
    return MODEL, None
