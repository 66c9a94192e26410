"""The run configuration: one frozen dataclass, resolved as code defaults < YAML file < CLI flags.

Each field carries its help text in ``metadata``; the CLI builds its flags from these fields, so the YAML keys
and the flags are the same names (``max_seq_len`` in YAML is ``--max-seq-len`` on the command line).
Cross-field rules are checked in ``__post_init__`` (the TRL ``ModelConfig`` / HELM ``RunSpec`` pattern).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import ConfigError
from harness.core.files import sha256_json
from harness.core.units import parse_budget, parse_bytes
from harness.spec.methods import resolve_method, split_search
from harness.spec.retrieval import RETRIEVERS
from harness.spec.search import KEYS, applies, parse_dim, resolve_search

# The sections of ``--help``, in the order they are shown; each field names its own.
RUN, TRAIN, TUNE, EVAL, EXECUTE, REPORT, REPRO = (
    "what to run", "training", "fair comparisons: splits, tuning, overlap", "evaluation", "execution",
    "reports and tracking", "reproducibility")
GROUPS = (RUN, TRAIN, TUNE, EVAL, EXECUTE, REPORT, REPRO)


def _f(default, help: str, cli: str = "value", **kw):
    """A config field with its help text, its section of ``--help`` (``group``) and how the CLI parses it
    (value, list, kv, columns, bool)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, "cli": cli, **kw})
    return field(default=default, metadata={"help": help, "cli": cli, **kw})


@dataclass(frozen=True)
class RunConfig:
    # --- what to run -------------------------------------------------------------------------------------
    tasks: tuple = _f(("cnn",), "tasks to run, comma-separated (see `run_matrix.py list`)", cli="list", group=RUN)
    methods: tuple = _f(
        ("base", "lora", "qlora"),
        "methods to compare, comma-separated: base (zero-shot), fewshot (3 shots), rag (3 retrieved passages), full, "
        "lora, qlora4, qlora8, and the adapter variants dora, qdora, rslora, pissa, olora, loftq, lora+ (see "
        "`run_matrix.py list`); NAME:key=value overrides a method field, e.g. lora:lr=1e-3, lora:retrieve=3, "
        "base:shots=5:shot_select=similar; NAME:lr=1e-4..1e-2 searches a range and NAME:lr=a|b|c a grid (also "
        "lora_r, lora_alpha, epochs, shots, retrieve; see --tune)",
        cli="list", group=RUN,
    )
    model: str = _f("smollm2-135m", "catalogue name, Hugging Face Hub id, or local model folder", group=RUN)
    data: dict = _f(
        {},
        "TASK=SOURCE (repeatable): 'embedded', a hub id[:config[:split]], or a .jsonl/.json/.csv/.parquet "
        "file; TASK=TRAIN,VALIDATION,TEST (or TRAIN,TEST) gives each split its own source; TASK.train=, "
        "TASK.validation= and TASK.test= (or TASK.eval=) set one split",
        cli="kv", group=RUN,
    )
    columns: dict = _f(
        {},
        "TASK:canonical=yours,... (repeatable): map your column names onto the task's schema, "
        "e.g. cnn:article=story,highlights=summary",
        cli="columns", group=RUN,
    )
    corpus: dict = _f(
        {},
        "TASK=FILE (repeatable): the task's knowledge base for retrieve=K methods, a JSONL of {title, text} or "
        "{id, text} documents, split into passages of --passage-words; qa and fever bring their own for their "
        "embedded data (for fever, --docstore FILE says the same)",
        cli="kv", group=RUN,
    )
    train_limit: int | None = _f(None, "training rows per task (default: the task's own default)", type=int,
                                 group=RUN)
    eval_limit: int | None = _f(None, "evaluation rows per task (default: the task's own default)", type=int,
                                group=RUN)
    out: str = _f("results", "folder that holds the run folders", group=RUN)
    run_name: str | None = _f(None, "run folder name; rerunning with the same name resumes (default: derived "
                                    "from the model and a hash of the config)", group=RUN)
    # --- training ----------------------------------------------------------------------------------------
    epochs: float = _f(1.0, "training epochs", type=float, group=TRAIN)
    lr: float | None = _f(None, "learning rate for every trained method (default: each method's own)", type=float,
                          group=TRAIN)
    batch_size: int = _f(4, "training batch size per step", type=int, group=TRAIN)
    grad_accum: int = _f(1, "gradient accumulation steps", type=int, group=TRAIN)
    max_seq_len: int = _f(512, "maximum tokens per training sequence and prompt (512 as in QLoRA on a T4)",
                          type=int, group=TRAIN)
    lora_r: int = _f(16, "LoRA rank", type=int, group=TRAIN)
    lora_alpha: int = _f(32, "LoRA alpha (scale = alpha / r)", type=int, group=TRAIN)
    lora_dropout: float = _f(0.05, "LoRA dropout of every LoRA method; pissa and olora train at 0 unless it is given "
                                   "(as a flag or in --config); NAME:lora_dropout=P sets one method's", type=float,
                             group=TRAIN)
    gradient_checkpointing: bool = _f(False, "recompute activations to save memory (slower)", cli="bool",
                                      group=TRAIN)
    trl_changes: bool = _f(True, "apply the harness's changes to trl's training path where their conditions hold "
                                 "(padding-free batches, a compact LM head, fused LoRA dropout); --no-trl-changes "
                                 "trains on trl's own path, for comparison", cli="bool", group=TRAIN)
    liger_kernel: bool = _f(False, "Liger's Triton kernels for the model's norms, RoPE, SwiGLU and loss, through "
                                   "trl (CUDA; needs the liger extra)", cli="bool", group=TRAIN)
    save: str = _f("auto", "keep trained weights in the cell folder: adapter, model, none, or auto (adapters "
                           "for LoRA methods, nothing for full)", choices=("auto", "adapter", "model", "none"),
                   group=TRAIN)
    # --- fair comparisons: splits, tuning, overlap --------------------------------------------------------
    tune: str | None = _f(None, "search each method's settings on the validation split, then evaluate only the chosen "
                                "point on test: lr, lora_r, lora_alpha, epochs, shots, retrieve, comma-separated, each "
                                "over its default range where the method has it (lr: a tenth to ten times the "
                                "method's own; lora_r 4..64; lora_alpha 1 or 2 x lora_r; epochs 1..3; shots and "
                                "retrieve 1..twice the method's); or lr=1e-5,5e-5,2e-4, one grid for every trained "
                                "method. NAME:key=a..b (a range) or NAME:key=a|b|c (a grid) in --methods gives one "
                                "method its own", group=TUNE)
    tune_trials: int = _f(6, "trials per tuned method and task (a grid runs its points; a range or the default "
                             "ranges are searched with Optuna's seeded TPE sampler)", type=int, group=TUNE)
    tune_by: str = _f("metric", "what chooses a grid point: metric (the task's main metric on validation, which "
                                "generates) or loss (the validation loss, cheaper: no generation)",
                      choices=("metric", "loss"), group=TUNE)
    validation_limit: int | None = _f(None, "validation rows per task, when tuning or early stopping uses them "
                                            "(default: the task's eval limit)", type=int, group=TUNE)
    validation_fraction: float = _f(0.1, "share of a training source held out as validation when no validation "
                                         "split is given (rows chosen by a hash of their content: the same on "
                                         "every machine and for every seed)", type=float, group=TUNE)
    drop_overlap: bool = _f(False, "remove training rows that duplicate or nearly duplicate a test row (shared "
                                   "word 13-grams), refilling from the rest of the training source", cli="bool",
                            group=TUNE)
    resample_train: bool = _f(False, "each seed draws its own training rows (a seeded sample of --train-limit rows of "
                                     "the training source), so the spread between --seeds includes the data's share, "
                                     "not only order and initialisation; needs a source larger than --train-limit "
                                     "(from one no larger, every seed gets the same rows, and the run warns so)",
                              cli="bool", group=TUNE)
    early_stop: int | None = _f(None, "stop training when the validation loss has not improved for this many "
                                      "evaluations (4 per epoch), and keep the best weights", type=int, group=TUNE)
    # --- evaluation --------------------------------------------------------------------------------------
    eval_batch_size: int = _f(16, "generation batch size", type=int, group=EVAL)
    max_new_tokens: int | None = _f(None, "generation length cap (default: the task's own)", type=int, group=EVAL)
    template: str = _f("model", "chat format: the model's own template, or llama2 for raw Llama-2 [INST] text",
                       choices=("model", "llama2"), group=EVAL)
    generate_backend: str = _f("hf", "generation backend for evaluation: hf (transformers) or vllm (GPU, "
                                     "needs the vllm extra)", choices=("hf", "vllm"), group=EVAL)
    bootstrap: int = _f(1000, "bootstrap resamples for confidence intervals", type=int, group=EVAL)
    fever_mode: str = _f("react", "fever evaluation: react (tool-using loop) or closed (label only)",
                         choices=("react", "closed"), group=EVAL)
    react_max_steps: int = _f(5, "maximum Thought/Action steps in the ReAct loop (the gold ones take 2-3)",
                              type=int, group=EVAL)
    docstore: str | None = _f(None, "fever document store: a JSONL of {title, text} pages, or 'embedded' (the "
                                    "default for the embedded claims; needed by name with your own claims); the "
                                    "same as --corpus fever=FILE", group=EVAL)
    passage_words: int = _f(100, "words per passage when --corpus documents are split for retrieval (100 as in "
                                 "DPR, Karpukhin et al. 2020; Ovadia et al. 2024 used 256 tokens)", type=int,
                            group=EVAL)
    retriever: str = _f("bm25", "how retrieve=K ranks passages: bm25 (the bm25s library)", choices=tuple(RETRIEVERS),
                        group=EVAL)
    cross_eval: bool = _f(False, "evaluate every trained model on every task of the run, not only its own",
                          cli="bool", group=EVAL)
    lm_eval: tuple | None = _f(None, "lm-evaluation-harness tasks to run on each cell's final model, "
                                     "comma-separated, e.g. hellaswag,arc_easy (needs the lm-eval extra)",
                               cli="list", group=EVAL)
    lm_eval_limit: int | None = _f(None, "examples per lm-eval task (default: all)", type=int, group=EVAL)
    lm_eval_include: str | None = _f(None, "folder of custom lm-eval task YAMLs, searched before lm-eval's own "
                                           "tasks (for --lm-eval)", group=EVAL)
    # --- execution: how and where cells run; none of these changes a result, so none is in the run name ----
    device: str = _f("auto", "auto, cpu or cuda", choices=("auto", "cpu", "cuda"), group=EXECUTE)
    executor: str = _f("process", "how each cell runs: process (a fresh child process per cell), inline (in this "
                                  "process, for debugging) or ray (a Ray task per cell)",
                       choices=("process", "inline", "ray"), group=EXECUTE)
    parallel: int = _f(1, "cells run at once (process executor); with several GPUs each cell gets its own",
                       type=int, group=EXECUTE)
    cell_memory_limit: str | None = _f(None, "cap each cell's memory, e.g. 8GiB; a cell over it fails as oom "
                                             "(process and ray executors)", group=EXECUTE)
    memory_budget: str | None = _f(None, "skip a cell whose estimated peak memory exceeds this, e.g. 16GiB "
                                         "(default: the device's memory on CUDA)", group=EXECUTE)
    gpu: str | None = _f(None, "plan for this GPU's memory instead of the device found",
                         choices=("T4", "L4", "A10G", "A100-40GB", "A100-80GB", "H100", "H200"), group=EXECUTE)
    force: bool = _f(False, "run cells even when the memory estimate says they do not fit", cli="bool",
                     group=EXECUTE)
    prefix_cache: bool = _f(True, "compute the prompt prefix that every query of a few-shot cell shares (its shots) "
                                  "once and reuse its KV cache; outputs are token-identical to recomputing it "
                                  "(docs/benchmarks.md); --no-prefix-cache recomputes it for every query",
                            cli="bool", group=EXECUTE)
    ray_address: str | None = _f(None, "Ray cluster to submit cells to, e.g. ray://head:10001 (default: a local "
                                       "Ray instance)", group=EXECUTE)
    num_processes: int = _f(1, "train each cell with N processes under accelerate launch (data-parallel)",
                            type=int, group=EXECUTE)
    fsdp: bool = _f(False, "shard the model with FSDP across --num-processes (full fine-tuning of large models)",
                    cli="bool", group=EXECUTE)
    deepspeed: str | None = _f(None, "DeepSpeed config JSON for training across --num-processes (ZeRO)",
                               group=EXECUTE)
    # --- reports and tracking ----------------------------------------------------------------------------
    budget: str | None = _f(None, "rule cells out of the recommendation, e.g. memory=16GiB,time=2h",
                            group=REPORT)
    report_to: tuple | None = _f(None, "trackers to log each cell to: mlflow, wandb, tensorboard, "
                                       "comma-separated", cli="list", group=REPORT)
    # --- reproducibility ---------------------------------------------------------------------------------
    seed: int = _f(0, "seed for Python, NumPy, torch and data order", type=int, group=REPRO)
    seeds: tuple | None = _f(None, "run every cell once per seed, comma-separated, e.g. 0,1,2 (default: --seed "
                                   "alone)", cli="list", group=REPRO)
    # The methods, resolved once from ``methods`` (harness.spec.methods); not a flag, not in to_dict().
    specs: tuple = field(default=(), init=False, repr=False, compare=False, metadata={"cli": None})
    # Each tuned method's search space, {method name: harness.spec.search.Search}, from --tune and the ranges and
    # grids written in --methods; not a flag.
    searches: dict = field(default_factory=dict, init=False, repr=False, compare=False, metadata={"cli": None})
    # The settings given in the YAML file or as flags (harness/spec/resolve.py), since a default cannot be told from
    # the same value given: a dropout a method is registered with (PiSSA's 0) stands only while --lora-dropout is not
    # given. Not a flag, not in to_dict(); dataclasses.replace (harness/spec/cell.py cell_config) keeps it.
    given: frozenset = field(default=frozenset(), repr=False, compare=False, metadata={"cli": None})

    def __post_init__(self):
        for name in ("train_limit", "eval_limit", "max_new_tokens"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"--{_flag(name)} must be a positive integer, got {value}")
        for name in ("batch_size", "grad_accum", "eval_batch_size", "lora_r", "lora_alpha", "max_seq_len",
                     "bootstrap", "react_max_steps", "passage_words"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{_flag(name)} must be a positive integer, got {getattr(self, name)}")
        if self.epochs <= 0:
            raise ConfigError(f"--epochs must be positive, got {self.epochs}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"--lr must be a positive finite number, got {self.lr}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if self.max_seq_len < 64:
            # The prompt template and a minimal answer need room; below this every article truncates to nothing.
            raise ConfigError(f"--max-seq-len must be at least 64, got {self.max_seq_len}")
        if not self.tasks:
            raise ConfigError("--tasks is empty; name at least one task")
        if not self.methods:
            raise ConfigError("--methods is empty; name at least one method")
        split = [split_search(text) for text in self.methods]
        given_dropout = self.lora_dropout if "lora_dropout" in self.given else None
        specs = tuple(resolve_method(text, given_dropout) for text, _ in split)
        for items, what in ((self.tasks, "task"), ([s.name for s in specs], "method")):
            dup = sorted({x for x in items if list(items).count(x) > 1})
            if dup:
                raise ConfigError(f"{what} {dup[0]!r} is listed twice; name each {what} once")
        object.__setattr__(self, "specs", specs)
        object.__setattr__(self, "searches", self._searches(specs, [dims for _, dims in split]))
        for f in FLAGS:
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) is not None and getattr(self, f.name) not in choices:
                raise ConfigError(f"--{_flag(f.name)} must be one of {', '.join(choices)}, "
                                  f"got {getattr(self, f.name)!r}")
        if self.parallel <= 0 or self.num_processes <= 0:
            raise ConfigError("--parallel and --num-processes must be positive integers")
        if self.parallel > 1 and self.executor == "inline":
            raise ConfigError("--parallel needs separate processes; use --executor process (the default) or ray")
        if self.cell_memory_limit is not None and self.executor == "inline":
            raise ConfigError("--cell-memory-limit caps a child process; use --executor process (the default)")
        if self.cell_memory_limit is not None:
            parse_bytes(self.cell_memory_limit, "--cell-memory-limit")
        if self.memory_budget is not None:
            parse_bytes(self.memory_budget, "--memory-budget")
        parse_budget(self.budget)  # a malformed budget fails before any cell runs, not after the matrix
        if self.fsdp and self.deepspeed:
            raise ConfigError("--fsdp and --deepspeed are two ways to shard; choose one")
        if (self.fsdp or self.deepspeed) and self.num_processes < 2:
            raise ConfigError("--fsdp/--deepspeed shard across processes; add --num-processes N with N >= 2")
        if self.deepspeed is not None and not Path(self.deepspeed).is_file():
            raise ConfigError(f"--deepspeed {self.deepspeed} does not exist; pass a DeepSpeed config JSON file")
        if self.seeds is not None:
            try:
                seeds = tuple(int(s) for s in self.seeds)
            except (TypeError, ValueError):
                raise ConfigError(f"--seeds must be integers, e.g. 0,1,2, got {','.join(map(str, self.seeds))}"
                                  ) from None
            if not seeds or len(set(seeds)) != len(seeds):
                raise ConfigError("--seeds must name each seed once, e.g. 0,1,2")
            object.__setattr__(self, "seeds", seeds)
        if self.lm_eval_limit is not None and self.lm_eval_limit <= 0:
            raise ConfigError(f"--lm-eval-limit must be a positive integer, got {self.lm_eval_limit}")
        if self.report_to:
            bad = [t for t in self.report_to if t not in TRACKERS]
            if bad:
                raise ConfigError(f"--report-to {bad[0]!r} is not a tracker; choose from {', '.join(TRACKERS)}")
        for name in ("validation_limit", "early_stop"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"--{_flag(name)} must be a positive integer, got {getattr(self, name)}")
        if self.early_stop is not None and self.num_processes > 1:
            raise ConfigError("--early-stop evaluates inside one training process; drop --num-processes or it")
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(f"--validation-fraction must be between 0 and 1, got {self.validation_fraction}")
        if self.docstore is not None and self.corpus.get("fever") not in (None, self.docstore):
            raise ConfigError(f"--docstore {self.docstore} and --corpus fever={self.corpus['fever']} name two stores "
                              "for fever; give one of them")
        if self.run_name is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", self.run_name):
            raise ConfigError(f"--run-name {self.run_name!r} may hold only letters, digits, '.', '_' and '-'")

    def _searches(self, specs: tuple, written: list) -> dict:
        """{method: Search}: the ranges and grids a method's own text writes, then the settings --tune names."""
        if self.tune_trials < 1:
            raise ConfigError(f"--tune-trials must be a positive integer, got {self.tune_trials}")
        tuned, shared = (), None
        if self.tune is not None:
            key, sep, values = self.tune.partition("=")
            if sep:  # lr=a,b,c: one grid for every trained method (the form before ranges)
                if key.strip() != "lr":
                    raise ConfigError(f"--tune {self.tune!r}: a shared grid is for the learning rate, e.g. "
                                      "--tune lr=1e-5,5e-5,2e-4; name other settings alone, e.g. --tune lr,lora_r")
                shared = parse_dim("lr", values.replace(",", "|"), f"--tune {self.tune}")
                tuned = ("lr",)
            else:
                tuned = tuple(k.strip() for k in self.tune.split(",") if k.strip())
                bad = [k for k in tuned if k not in KEYS]
                if bad or not tuned:
                    raise ConfigError(f"--tune {self.tune!r}: {bad[0] if bad else 'nothing'} cannot be searched; name "
                                      f"settings from {', '.join(KEYS)}, e.g. --tune lr,lora_r")
            if "lr" in tuned and self.lr is not None:
                raise ConfigError("--lr fixes the learning rate that --tune searches; drop one of them")
        out = {}
        for spec, dims in zip(specs, written):
            if "lr" in dims and self.lr is not None:
                raise ConfigError(f"--lr fixes the learning rate that {spec.name}'s search covers; drop one of them")
            own = {**({"lr": shared} if shared is not None and spec.trains else {}), **dims}
            search = resolve_search(spec, own, tuned, self)
            if search is not None:
                out[spec.name] = search
        for key in tuned:
            if not any(key in s.dims for s in out.values()):
                why = "; ".join(applies(key, spec) for spec in specs)
                raise ConfigError(f"--tune {key}: no method of the run has {key} ({why}); add a method that does, "
                                  "or drop it from --tune")
        return out

    @property
    def needs_validation(self) -> bool:
        """Whether the run reads a validation split: to tune, or to stop early."""
        return bool(self.searches) or self.early_stop is not None

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in FLAGS}
        return {k: list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, dict) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """The config ``to_dict`` wrote (a cell's config.json keeps it under "run")."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def default_run_name(self) -> str:
        """A name that is the same for the same settings, so that rerunning a command resumes it.

        The task and method lists are left out of the hash: adding a method to a matrix extends the same run.
        """
        keep = {k: v for k, v in self.to_dict().items()
                if k not in ("tasks", "methods", "out", "run_name", *EXECUTION_ONLY)
                and not (k in HASHED_WHEN_SET and v == _default(FIELDS[k]))}
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(self.model).name if "/" in self.model else self.model)
        return f"{slug}-{sha256_json(keep)[:8]}"

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / (self.run_name or self.default_run_name())

    @property
    def seed_list(self) -> tuple:
        """The seeds every cell runs with: --seeds when given, else --seed alone."""
        return self.seeds or (self.seed,)


def _flag(name: str) -> str:
    return name.replace("_", "-")


FLAGS = tuple(f for f in dataclasses.fields(RunConfig) if f.metadata["cli"])  # the settings: flags and YAML keys
FIELDS = {f.name: f for f in FLAGS}

# Settings that change how or where cells run, or what is logged or decided afterwards, but not a cell's
# results: they stay out of the run name, so switching executor or budget resumes the same run.
EXECUTION_ONLY = ("executor", "parallel", "cell_memory_limit", "ray_address", "gpu", "memory_budget", "force",
                  "budget", "report_to", "prefix_cache")
TRACKERS = ("mlflow", "wandb", "tensorboard")
# Settings added after run names were first derived: hashed only when set away from their default, so a command
# that does not use them keeps the run name (and so resumes the run folder) it had before they existed.
HASHED_WHEN_SET = ("trl_changes", "liger_kernel", "tune", "tune_by", "validation_limit", "validation_fraction",
                   "drop_overlap", "early_stop", "corpus", "passage_words", "retriever", "tune_trials",
                   "resample_train")


def _default(f):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
