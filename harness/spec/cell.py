"""A cell of the matrix, typed: one task x one method x one seed, with every setting that decides its results.

The runner writes it into the cell folder as ``config.json`` and the cell's own process reads it back
(``CellSpec.read``), so both sides hold the same frozen object. ``hyperparameters`` are the resolved settings that
decide the cell's results; together with the task, the method, the model and the data they are hashed
(``config_hash``), and a rerun resumes a cell only when the hash matches. The whole run config rides along
under ``run`` for everything that does not change results (the executor, the trackers, the budget).

A tuning cell is one trial of a method's search (harness/execute/search.py): it trains like any cell with the trial's
settings, is scored on the validation split (``hyperparameters["eval_split"]``) and keeps no weights. ``tuning``
says which search and trial a cell belongs to, or which trial chose its settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from harness.core.files import atomic_write_json, read_json, sha256_json
from harness.spec.config import FIELDS, RunConfig
from harness.spec.methods import METHODS, MethodSpec, folder_name, save_kind, written_pairs

CONFIG = "config.json"
# Method fields added after cell hashes were first made: hashed only when set, so that a cell of a method that does
# not use them keeps its hash, and a rerun resumes it.
HASHED_WHEN_SET = {"shots": None, "shot_select": "random", "retrieve": None, "raft": None, "lora_r": None,
                   "lora_alpha": None, "epochs": None, "lora_dropout": None, "use_dora": False, "use_rslora": False,
                   "init_lora_weights": "default", "loraplus_ratio": None}
# method fields that stand in for the run's own setting
METHOD_OVERRIDES = ("lora_r", "lora_alpha", "epochs", "lora_dropout")


def cell_config(cfg: RunConfig, method: MethodSpec) -> RunConfig:
    """The run's settings as a cell of ``method`` trains with them: the method's own rank, alpha, epochs or dropout
    (written, or a trial's) in place of the run's, and LoftQ's alpha."""
    own = {k: getattr(method, k) for k in METHOD_OVERRIDES if getattr(method, k) is not None}
    cfg = dataclasses.replace(cfg, **own)
    if method.init_lora_weights == "loftq" and method.lora_alpha is None:
        # LoftQ's start is B A = the quantization error, at a scale of 1 (alpha = r), as peft sets it and as
        # LLaMA-Factory's loftq_init defaults alpha to the rank; another alpha would scale the start with it.
        cfg = dataclasses.replace(cfg, lora_alpha=cfg.lora_r)
    return cfg


def dropout_note(method: MethodSpec) -> str | None:
    """Why a cell of ``method`` trains with the dropout its method is registered with (PiSSA's and OLoRA's 0) rather
    than the run's: resolve_method left it in place, so --lora-dropout was not given, and the method's text does not
    write one. For the cell's config.json and train.json and its first training line; None for any other cell."""
    base = method.name.split(":")[0]
    registered = METHODS[base]().lora_dropout if base in METHODS else None
    if method.lora_dropout is None or method.lora_dropout != registered or any(
            key == "lora_dropout" for key, _, _ in written_pairs(method.name)):
        return None
    # The measurement behind PiSSA's and OLoRA's 0 is in harness/spec/methods.py, above their registration.
    why = ("its start puts part of the weights in the adapter, and dropout on it perturbs the model from the first "
           "step" if method.mutates_base else "harness/spec/methods.py says why")
    return (f"{method.lora_dropout:g}: {base}'s default, as --lora-dropout was not given ({why}), where the other LoRA "
            f"methods use --lora-dropout's {FIELDS['lora_dropout'].default:g}; --lora-dropout P or "
            f"{base}:lora_dropout=P sets it")


def method_dict(method: MethodSpec) -> dict:
    """The method's fields as a cell hashes and stores them."""
    return {k: v for k, v in dataclasses.asdict(method).items() if k not in HASHED_WHEN_SET or v != HASHED_WHEN_SET[k]}


@dataclass(frozen=True)
class CellSpec:
    task: str
    method: MethodSpec
    model: str
    data: dict  # this task's --data sources
    columns: dict  # this task's --columns mapping
    hyperparameters: dict
    run: RunConfig  # the run's config, with this cell's seed
    # How the settings were found: {"role": "trial" (a tuning cell) or "chosen" (the test cell of a tuned method),
    # "study": "cnn/lora", "number": the trial, "params": {setting: value}, "by": the measure, and for a trial "prune":
    # the earlier trials' validation losses its pruner compares with, and whether it is a design trial, which is never
    # pruned}. What changes results is in ``hyperparameters`` (and the method); the rest is provenance.
    tuning: dict | None = None

    @classmethod
    def create(cls, cfg: RunConfig, task, method: MethodSpec, tuning: dict | None = None) -> CellSpec:
        """The cell of ``task`` (a registered Task) x ``method`` under ``cfg`` (whose ``seed`` is the cell's).

        ``tuning`` with role "trial" makes a tuning cell with ``tuning["params"]``; with role "chosen", the test cell of
        the settings chosen on validation."""
        if tuning is not None:
            method = dataclasses.replace(method, **tuning["params"])
        if tuning is not None and tuning["role"] == "trial":  # scored on validation; nothing kept, nothing more
            cfg = dataclasses.replace(cfg, save="none", cross_eval=False, lm_eval=None)
        cfg = cell_config(cfg, method)
        hp = {
            "lr": (cfg.lr if cfg.lr is not None else method.lr) if method.trains else None,
            "epochs": cfg.epochs, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
            "train_limit": cfg.train_limit or task.train_limit, "eval_limit": cfg.eval_limit or task.eval_limit,
            "max_seq_len": cfg.max_seq_len, "max_new_tokens": cfg.max_new_tokens or task.max_new_tokens,
            "eval_batch_size": cfg.eval_batch_size, "gradient_checkpointing": cfg.gradient_checkpointing,
            "seed": cfg.seed, "bootstrap": cfg.bootstrap, "template": cfg.template,
        }
        if method.finetune == "lora":
            hp.update(lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout)
        if method.trains and not cfg.trl_changes:  # trl's own path: the same results up to float rounding
            hp["trl_changes"] = False
        if method.trains and cfg.liger_kernel:
            hp["liger_kernel"] = True
        if method.trains and cfg.num_processes > 1:
            # Data-parallel training changes the global batch and the data order, so it changes results.
            hp.update(num_processes=cfg.num_processes, fsdp=cfg.fsdp, deepspeed=cfg.deepspeed)
        hp.update(task.options(cfg))
        if cfg.cross_eval and method.trains:  # the cell's records then hold more: a new hash
            hp["cross_eval"] = True
        if method.trains:  # the weights a cell keeps are part of its record
            hp["save"] = save_kind(cfg, method)[0]
        if cfg.lm_eval:
            hp.update(lm_eval=list(cfg.lm_eval), lm_eval_limit=cfg.lm_eval_limit,
                      lm_eval_include=cfg.lm_eval_include)
        if cfg.early_stop is not None and method.trains:
            hp["early_stop"] = cfg.early_stop
        if cfg.needs_validation:  # the validation rows (and so the training rows they are carved from)
            hp.update(validation_limit=cfg.validation_limit or task.eval_limit,
                      validation_fraction=cfg.validation_fraction)
        if cfg.drop_overlap and method.trains:
            hp["drop_overlap"] = True
        if cfg.resample_train and (method.trains or method.shots is not None):
            hp["resample_train"] = True  # the seed draws the training rows (the shots' pool too)
        if method.retrieve is not None:  # where the passages come from, and how they are cut and ranked
            hp.update(corpus=task.knowledge_base(cfg), passage_words=cfg.passage_words, retriever=cfg.retriever)
        if tuning is not None and tuning["role"] == "trial":
            hp.update(eval_split="validation", tune_by=cfg.tune_by)
        data = {k: v for k, v in cfg.data.items() if k.split(".")[0] == task.name}
        return cls(task.name, method, cfg.model, data, cfg.columns.get(task.name, {}), hp, cfg, tuning)

    @property
    def is_tuning(self) -> bool:
        return self.hyperparameters.get("eval_split") == "validation"

    def _hashed(self) -> dict:
        return {"task": self.task, "method": method_dict(self.method), "model": self.model,
                "data": self.data, "columns": self.columns, "hyperparameters": self.hyperparameters}

    @property
    def config_hash(self) -> str:
        return sha256_json(self._hashed())

    @property
    def seed(self) -> int:
        return self.run.seed

    @property
    def point(self) -> str:
        """A tuning cell's trial and settings, ``trial 3: lr=0.001, lora_r=8``; empty for any other cell."""
        if not self.is_tuning:
            return ""
        params = ", ".join(f"{k}={v:g}" for k, v in self.tuning["params"].items())
        return f"trial {self.tuning['number']}: {params}"

    @property
    def folder(self) -> str:
        """The cell's folder under its task: the method's name (and a tuning cell's trial), with the seed when the
        run has several."""
        point = f".trial{self.tuning['number']}" if self.is_tuning else ""
        return folder_name(self.method) + point + (f"-seed{self.seed}" if len(self.run.seed_list) > 1 else "")

    @property
    def label(self) -> str:
        seeds = self.run.seeds or ()
        point = f" {self.point} (tuning)" if self.is_tuning else ""
        return f"{self.task} x {self.method.name}{point}" + (f" seed {self.seed}" if len(seeds) > 1 else "")

    def to_json(self) -> dict:
        """The hashed settings and the provenance: the run's config, the tuning, and ``notes`` on a setting the cell
        takes from its method rather than the run (not hashed: the hyperparameters hold the value itself)."""
        note = dropout_note(self.method)
        return {**self._hashed(), "config_hash": self.config_hash, "run": self.run.to_dict(),
                **({"tuning": self.tuning} if self.tuning else {}),
                **({"notes": {"lora_dropout": note}} if note else {})}

    @classmethod
    def from_json(cls, d: dict) -> CellSpec:
        return cls(d["task"], MethodSpec(**d["method"]), d["model"], d["data"], d["columns"], d["hyperparameters"],
                   RunConfig.from_dict(d["run"]), d.get("tuning"))

    def write(self, cell_dir: Path) -> None:
        atomic_write_json(Path(cell_dir) / CONFIG, self.to_json())

    @classmethod
    def read(cls, cell_dir: Path) -> CellSpec:
        return cls.from_json(read_json(Path(cell_dir) / CONFIG))

