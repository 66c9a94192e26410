"""The run configuration: one frozen dataclass, resolved as code defaults < YAML file < CLI flags.

Each field carries its help text in ``metadata``; the CLI builds its flags from these fields, so the YAML keys
and the flags are the same names (``max_seq_len`` in YAML is ``--max-seq-len`` on the command line).
Cross-field rules are checked in ``__post_init__`` (the TRL ``ModelConfig`` / HELM ``RunSpec`` pattern).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.core.errors import ConfigError
from harness.core.files import sha256_json


def _f(default, help: str, cli: str = "value", **kw):
    """A config field with its help text and how the CLI parses it (value, list, kv, columns, bool)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, "cli": cli, **kw})
    return field(default=default, metadata={"help": help, "cli": cli, **kw})


@dataclass(frozen=True)
class RunConfig:
    tasks: tuple = _f(("cnn",), "tasks to run, comma-separated (see `run_matrix.py list`)", cli="list")
    methods: tuple = _f(
        ("base", "lora", "qlora"),
        "methods to compare, comma-separated; NAME:key=value overrides a method field, e.g. lora:lr=1e-3",
        cli="list",
    )
    model: str = _f("smollm2-135m", "catalogue name, Hugging Face Hub id, or local model folder")
    data: dict = _f(
        {},
        "TASK=SOURCE (repeatable): 'embedded', a hub id[:config[:split]], or a .jsonl/.json/.csv/.parquet "
        "file; TASK.train=SOURCE and TASK.eval=SOURCE set one split",
        cli="kv",
    )
    columns: dict = _f(
        {},
        "TASK:canonical=yours,... (repeatable): map your column names onto the task's schema, "
        "e.g. cnn:article=story,highlights=summary",
        cli="columns",
    )
    train_limit: int | None = _f(None, "training rows per task (default: the task's own default)", type=int)
    eval_limit: int | None = _f(None, "evaluation rows per task (default: the task's own default)", type=int)
    epochs: float = _f(1.0, "training epochs", type=float)
    lr: float | None = _f(None, "learning rate for every trained method (default: each method's own)", type=float)
    batch_size: int = _f(4, "training batch size per step", type=int)
    grad_accum: int = _f(1, "gradient accumulation steps", type=int)
    eval_batch_size: int = _f(16, "generation batch size", type=int)
    lora_r: int = _f(16, "LoRA rank", type=int)
    lora_alpha: int = _f(32, "LoRA alpha (scale = alpha / r)", type=int)
    lora_dropout: float = _f(0.05, "LoRA dropout", type=float)
    max_seq_len: int = _f(512, "maximum tokens per training sequence and prompt (512 as in QLoRA on a T4)", type=int)
    max_new_tokens: int | None = _f(None, "generation length cap (default: the task's own)", type=int)
    gradient_checkpointing: bool = _f(False, "recompute activations to save memory (slower)", cli="bool")
    seed: int = _f(0, "seed for Python, NumPy, torch and data order", type=int)
    device: str = _f("auto", "auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
    bootstrap: int = _f(1000, "bootstrap resamples for confidence intervals", type=int)
    template: str = _f("model", "chat format: the model's own template, or llama2 for raw Llama-2 [INST] text",
                       choices=("model", "llama2"))
    fever_mode: str = _f("react", "fever evaluation: react (tool-using loop) or closed (label only)",
                         choices=("react", "closed"))
    react_max_steps: int = _f(5, "maximum Thought/Action steps in the ReAct loop (the gold ones take 2-3)",
                              type=int)
    docstore: str | None = _f(None, "fever document store: a JSONL of {title, text} pages, or 'embedded' (the "
                                    "default for the embedded claims; needed by name with your own claims)")
    seeds: tuple | None = _f(None, "run every cell once per seed, comma-separated, e.g. 0,1,2 (default: --seed "
                                   "alone)", cli="list")
    # --- how cells are launched (issue 8); none of these change results, so none is in the run name ---
    executor: str = _f("process", "how each cell runs: process (a fresh child process per cell), inline (in this "
                                  "process, for debugging) or ray (a Ray task per cell)",
                       choices=("process", "inline", "ray"))
    parallel: int = _f(1, "cells run at once (process executor); with several GPUs each cell gets its own",
                       type=int)
    cell_memory_limit: str | None = _f(None, "cap each cell's memory, e.g. 8GiB; a cell over it fails as oom "
                                             "(process and ray executors)")
    ray_address: str | None = _f(None, "Ray cluster to submit cells to, e.g. ray://head:10001 (default: a local "
                                       "Ray instance)")
    num_processes: int = _f(1, "train each cell with N processes under accelerate launch (data-parallel)",
                            type=int)
    fsdp: bool = _f(False, "shard the model with FSDP across --num-processes (full fine-tuning of large models)",
                    cli="bool")
    deepspeed: str | None = _f(None, "DeepSpeed config JSON for training across --num-processes (ZeRO)")
    # --- plan and decide (issue 9) ---
    gpu: str | None = _f(None, "plan for this GPU's memory instead of the device found",
                         choices=("T4", "L4", "A10G", "A100-40GB", "A100-80GB", "H100", "H200"))
    memory_budget: str | None = _f(None, "skip a cell whose estimated peak memory exceeds this, e.g. 16GiB "
                                         "(default: the device's memory on CUDA)")
    force: bool = _f(False, "run cells even when the memory estimate says they do not fit", cli="bool")
    budget: str | None = _f(None, "rule cells out of the recommendation, e.g. memory=16GiB,time=2h")
    # --- what fine-tuning costs and leaves (issue 10) ---
    cross_eval: bool = _f(False, "evaluate every trained model on every task of the run, not only its own",
                          cli="bool")
    lm_eval: tuple | None = _f(None, "lm-evaluation-harness tasks to run on each cell's final model, "
                                     "comma-separated, e.g. hellaswag,arc_easy (needs the lm-eval extra)",
                               cli="list")
    lm_eval_limit: int | None = _f(None, "examples per lm-eval task (default: all)", type=int)
    save: str = _f("auto", "keep trained weights in the cell folder: adapter, model, none, or auto (adapters "
                           "for LoRA methods, nothing for full)", choices=("auto", "adapter", "model", "none"))
    report_to: tuple | None = _f(None, "trackers to log each cell to: mlflow, wandb, tensorboard, "
                                       "comma-separated", cli="list")
    lm_eval_include: str | None = _f(None, "folder of custom lm-eval task YAMLs, searched before lm-eval's own "
                                           "tasks (for --lm-eval)")
    # --- speed (issue 11) ---
    generate_backend: str = _f("hf", "generation backend for evaluation: hf (transformers) or vllm (GPU, "
                                     "needs the vllm extra)", choices=("hf", "vllm"))
    out: str = _f("results", "folder that holds the run folders")
    run_name: str | None = _f(None, "run folder name; rerunning with the same name resumes (default: derived "
                                    "from the model and a hash of the config)")

    def __post_init__(self):
        for name in ("train_limit", "eval_limit", "max_new_tokens"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"--{_flag(name)} must be a positive integer, got {value}")
        for name in ("batch_size", "grad_accum", "eval_batch_size", "lora_r", "lora_alpha", "max_seq_len",
                     "bootstrap", "react_max_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{_flag(name)} must be a positive integer, got {getattr(self, name)}")
        if self.epochs <= 0:
            raise ConfigError(f"--epochs must be positive, got {self.epochs}")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if self.max_seq_len < 64:
            # The prompt template and a minimal answer need room; below this every article truncates to nothing.
            raise ConfigError(f"--max-seq-len must be at least 64, got {self.max_seq_len}")
        if not self.tasks:
            raise ConfigError("--tasks is empty; name at least one task")
        if not self.methods:
            raise ConfigError("--methods is empty; name at least one method")
        for f in dataclasses.fields(self):
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
        if self.budget is not None:
            from harness.report.recommend import parse_budget  # imported here: recommend imports this module

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
        if self.run_name is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", self.run_name):
            raise ConfigError(f"--run-name {self.run_name!r} may hold only letters, digits, '.', '_' and '-'")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["tasks"], d["methods"] = list(self.tasks), list(self.methods)
        return d

    def default_run_name(self) -> str:
        """A name that is the same for the same settings, so that rerunning a command resumes it.

        The task and method lists are left out of the hash: adding a method to a matrix extends the same run.
        """
        keep = {k: v for k, v in self.to_dict().items()
                if k not in ("tasks", "methods", "out", "run_name", *EXECUTION_ONLY)}
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(self.model).name if "/" in self.model else self.model)
        return f"{slug}-{sha256_json(keep)[:8]}"

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / (self.run_name or self.default_run_name())

    @property
    def seed_list(self) -> tuple:
        """The seeds every cell runs with: --seeds when given, else --seed alone."""
        return self.seeds or (self.seed,)


# Settings that change how or where cells run, or what is logged or decided afterwards, but not a cell's
# results: they stay out of the run name, so switching executor or budget resumes the same run.
EXECUTION_ONLY = ("executor", "parallel", "cell_memory_limit", "ray_address", "gpu", "memory_budget", "force",
                  "budget", "report_to")
TRACKERS = ("mlflow", "wandb", "tensorboard")
UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
         "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def parse_bytes(text: str, what: str = "size") -> int:
    """'8GiB' -> 8589934592, '16GB' -> 16e9, '512M' -> 512 MiB; one-line error otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in UNITS or float(m.group(1)) <= 0:
        raise ConfigError(f"{what} {text!r} is not a size; write e.g. 8GiB, 16GB or 512MiB")
    return int(float(m.group(1)) * UNITS[unit])


def _flag(name: str) -> str:
    return name.replace("_", "-")


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def _as_tuple(key: str, value) -> tuple:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = [v.strip() if isinstance(v, str) else v for v in value]
    else:
        raise ConfigError(f"{key} must be a list or a comma-separated string, got {value!r}")
    return tuple(v for v in items if v != "")


def coerce(key: str, value, origin: str):
    """Bring a YAML or CLI value to the field's type, with a one-line error naming the key and origin."""
    f = FIELDS[key]
    kind = f.metadata["cli"]
    if value is None:
        return None
    if kind == "list":
        return _as_tuple(key, value)
    if kind in ("kv", "columns"):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} in {origin} must be a mapping, got {value!r}")
        return dict(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} in {origin} must be true or false, got {value!r}")
    typ = f.metadata.get("type")
    if typ is not None:
        if isinstance(value, bool) or (typ is int and isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{key} in {origin} must be {typ.__name__}, got {value!r}")
        try:
            return typ(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} in {origin} must be {typ.__name__}, got {value!r}") from None
    return str(value)


def parse_data_flags(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--data {item!r} must be TASK=SOURCE, e.g. cnn=embedded or cnn=data/cnn.jsonl")
        task, source = item.split("=", 1)
        if not task.strip() or not source.strip():
            raise ConfigError(f"--data {item!r} must be TASK=SOURCE with both parts non-empty")
        out[task.strip()] = source.strip()
    return out


def parse_columns_flags(items: list[str]) -> dict:
    out: dict[str, dict[str, str]] = {}
    for item in items:
        task, sep, rest = item.partition(":")
        pairs = [p for p in rest.split(",") if p.strip()]
        if not sep or not pairs or any("=" not in p for p in pairs):
            raise ConfigError(f"--columns {item!r} must be TASK:canonical=yours[,...], "
                              "e.g. cnn:article=story,highlights=summary")
        out.setdefault(task.strip(), {}).update(
            {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)})
    return out


def load_yaml(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}; fix its syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {path}; valid keys: {', '.join(FIELDS)}")
    return raw


def resolve(cli: dict, config_file: str | None = None) -> RunConfig:
    """Code defaults, then the YAML file, then the CLI flags that were actually given."""
    values: dict = {}
    if config_file:
        for key, value in load_yaml(config_file).items():
            # Methods in YAML may be mappings ({name: lora, lr: 1e-3}); keep them as written for the method parser.
            if key == "methods" and isinstance(value, list):
                values[key] = tuple(_method_entry(v, config_file) for v in value)
            else:
                values[key] = coerce(key, value, config_file)
    for key, value in cli.items():
        if key in ("data", "columns") and key in values:
            values[key] = {**values[key], **value}  # a flag for one task keeps the file's other tasks
        else:
            values[key] = coerce(key, value, "the command line")
    return RunConfig(**values)


def _method_entry(entry, origin: str) -> str:
    """A YAML method entry, as the same NAME:key=value string the CLI takes."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and "name" in entry:
        rest = {k: v for k, v in entry.items() if k != "name"}
        return ":".join([str(entry["name"])] + [f"{k}={_yaml_scalar(v)}" for k, v in rest.items()])
    raise ConfigError(f"methods in {origin}: each entry must be a name or a mapping with 'name', got {entry!r}")


def _yaml_scalar(v) -> str:
    return "true" if v is True else "false" if v is False else str(v)
