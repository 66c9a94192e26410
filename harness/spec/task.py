"""What a task plugin builds on: the Task base class, the Context it renders and evaluates with, and the registry.

A task knows its schema, its embedded default data, what a row asks and answers (``query``, ``answer``; every prompt,
shots and retrieved passages included, is then built in one place: ``Task.prompt`` with harness.spec.prompts and
harness.spec.prompting), how to run its evaluation (plain batched generation through the Context's backend by
default), and how to score predictions. Scoring reads only the stored predictions, so scores can be recomputed
without generating again.
Task packages (the built-in ``tasks``, or a user's own) import this layer and harness.spec.metrics, nothing else
of the harness, and are found through an entry point (``load_tasks``).
"""

from __future__ import annotations

import importlib.metadata
import sys
from dataclasses import dataclass
from typing import Protocol

from harness.core.errors import DataError
from harness.core.registry import Registry
from harness.spec import prompts, splits
from harness.spec.prompts import Passage, Query

TASKS = Registry("task")
ROLES = splits.ROLES  # train, validation, test


@dataclass
class GenerationStats:
    """What a cell's generation did: tokens generated (up to each end-of-sequence), seconds, calls."""

    new_tokens: int = 0
    seconds: float = 0.0
    calls: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else float("nan")

    def to_dict(self) -> dict:
        return {"generated_tokens": self.new_tokens, "generation_s": self.seconds,
                "generation_tokens_per_s": self.tokens_per_s}


class Backend(Protocol):
    """How a task's prompts are answered and scored: batched greedy generation, and the log-likelihood of given
    completions. The cell chooses one (``--generate-backend``) and hands it to the task on the Context."""

    def generate(self, model, tok, prompts: list[str], max_new_tokens: int, batch_size: int, stats: GenerationStats,
                 stop_strings: list[str] | None = None, label: str = "generate") -> list[str]: ...

    def completion_nll(self, model, tok, prompts: list[str], completions: list[str], batch_size: int,
                       label: str = "score") -> list[tuple[float, int]]: ...

    def close(self) -> None: ...


@dataclass
class Context:
    """What prompt rendering and evaluation need beyond the row."""

    tok: object
    max_seq_len: int
    max_new_tokens: int
    template: str = "model"  # the model's chat template, or "llama2" for the raw [INST] format
    batch_size: int = 16
    cfg: object = None
    backend: Backend | None = None  # set by the cell for evaluation; rendering prompts needs none
    prompting: object = None  # the method's shots and passages (harness.spec.prompting.Prompting); None: zero-shot

    def generate(self, model, prompts: list[str], stats: GenerationStats, max_new_tokens: int | None = None,
                 stop_strings: list[str] | None = None, label: str = "generate") -> list[str]:
        """Greedy answers to ``prompts`` through the cell's backend."""
        return self._backend().generate(model, self.tok, prompts, max_new_tokens or self.max_new_tokens,
                                        self.batch_size, stats, stop_strings, label)

    def completion_nll(self, model, prompts: list[str], completions: list[str], batch_size: int,
                       label: str = "score") -> list[tuple[float, int]]:
        """(summed negative log-likelihood, token count) of each completion after its prompt."""
        return self._backend().completion_nll(model, self.tok, prompts, completions, batch_size, label)

    def _backend(self) -> Backend:
        if self.backend is None:
            raise RuntimeError("this Context has no generation backend; a cell sets one before evaluating")
        return self.backend


class Task:
    name = ""
    description = ""
    columns: tuple = ()  # canonical columns every row must have
    text_columns: tuple = ()  # columns that must be non-empty text
    metrics: tuple = ()
    main_metric = ""
    train_limit = 48
    eval_limit = 32
    max_new_tokens = 64
    hub_eval_splits = ("validation", "test")

    def options(self, cfg) -> dict:
        """Task-specific settings that change results (hashed into the cell's config)."""
        return {}

    # --- data --------------------------------------------------------------------------------------------
    def embedded(self, split: str) -> list[dict]:
        raise NotImplementedError

    def normalize(self, rows: list[dict], columns: dict, where: str) -> tuple[list[dict], list[dict]]:
        """Apply the user's column mapping and check the schema; one clear error per problem.

        Returns (rows, dropped): tasks whose rows may fail to parse list them in ``dropped`` as
        {"row": index, "reason": ...}, so they are counted and reported rather than silently lost.
        """
        rows = self.rename(rows, columns, where)
        for canonical in self.columns:
            if canonical not in rows[0]:
                raise DataError(f"{where} has no column {canonical!r} (found: {', '.join(sorted(rows[0]))}); "
                                f"map yours with --columns {self.name}:{canonical}=YOUR_COLUMN")
        self.check_text(rows, where)
        return rows, []

    def rename(self, rows: list[dict], columns: dict, where: str) -> list[dict]:
        """Rows with the user's columns renamed to canonical names (``columns`` maps canonical -> yours)."""
        if not rows:
            raise DataError(f"{where} is empty; point --data {self.name}=... at a source with rows")
        missing = [yours for yours in columns.values() if yours not in rows[0]]
        if missing:
            raise DataError(f"{where} has no column {missing[0]!r} named in --columns "
                            f"(found: {', '.join(sorted(rows[0]))})")
        back = {yours: canonical for canonical, yours in columns.items()}
        return [{back.get(k, k): v for k, v in row.items()} for row in rows]

    def check_text(self, rows: list[dict], where: str) -> None:
        for col in self.text_columns:
            # A number or a list where text belongs is a schema mistake, not an empty value: say which.
            typed = [i for i, r in enumerate(rows) if r.get(col) is not None and not isinstance(r[col], str)]
            if typed:
                value = rows[typed[0]][col]
                raise DataError(f"{where}: column {col!r} is not text: {len(typed)} row(s) hold "
                                f"{type(value).__name__} values (first: row {typed[0]}: {str(value)[:40]!r}); "
                                "give it strings, or map a text column with "
                                f"--columns {self.name}:{col}=YOUR_COLUMN")
            bad = [i for i, r in enumerate(rows) if not isinstance(r.get(col), str) or not r[col].strip()]
            if bad:
                raise DataError(f"{where}: {len(bad)} row(s) have empty {col!r} (first: row {bad[0]}); "
                                "remove or fill them")

    def load(self, cfg, roles: tuple = ROLES) -> dict:
        """{"train": rows, "validation": rows (when the run reads it), "test": rows, "fingerprint": {...}} under
        ``cfg`` (harness/spec/splits.py); ``roles`` asks for fewer."""
        return splits.load(self, cfg, roles)

    # --- prompts -----------------------------------------------------------------------------------------
    def query(self, row: dict, ctx: Context) -> Query:
        """What ``row`` asks, as the user turn of a prompt (harness.spec.prompts.Query)."""
        raise NotImplementedError

    def answer(self, row: dict, ctx: Context) -> str:
        """What ``row`` answers: the training target, and a shot's assistant turn."""
        raise NotImplementedError

    def search_text(self, row: dict) -> str:
        """The text retrieval ranks passages for, and similar shots are found by (the query's own text)."""
        return self.query(row, Context(tok=None, max_seq_len=0, max_new_tokens=0)).user()

    def with_passages(self, row: dict, query: Query, passages: list[Passage], ctx: Context) -> Query:
        """``query`` with retrieved passages; by default before its own text (harness.spec.prompts.with_passages)."""
        return prompts.with_passages(query, passages)

    def knowledge_base(self, cfg) -> str | None:
        """Where retrieve=K finds passages: --corpus TASK=FILE, else None (a task with its own overrides this)."""
        return cfg.corpus.get(self.name)

    def embedded_corpus(self) -> list[dict]:
        """The task's own knowledge base for its embedded data, as {id, title, text} documents."""
        raise NotImplementedError(f"{self.name} has no embedded knowledge base")

    def method_issue(self, method, cfg) -> str | None:
        """Why ``method`` cannot apply to this task under ``cfg`` (the cell is left out, with this line), or None.
        A method the task refuses outright raises ConfigError instead."""
        if method.retrieve is not None and self.knowledge_base(cfg) is None:
            return f"{self.name} has no knowledge base; pass --corpus {self.name}=FILE.jsonl"
        return None

    def train_reserve(self, ctx: Context, completion: str) -> int:
        """Tokens a training prompt leaves for its completion: all of it, and the EOS trl appends."""
        return prompts.n_tokens(ctx.tok, completion) + 1

    def prompt(self, row: dict, ctx: Context, reserve: int, training: bool = False) -> str:
        """The prompt of ``row`` with the method's shots and passages, fitted with ``reserve`` tokens to spare; the
        one place every prompt of every task is built. ``training``: a training row (RAFT's passages apply)."""
        p = ctx.prompting
        query, shots, passages = self.query(row, ctx), [], []
        if p is not None:
            passages = p.passages(row, training)
            query = self.with_passages(row, query, passages, ctx)
            shots = [(self.with_passages(s, self.query(s, ctx), p.passages(s), ctx).user(),
                      prompts.completion_text(ctx, self.answer(s, ctx))) for s in p.shots(row)]
        built = prompts.build(ctx, query, reserve, shots)
        if p is not None:
            p.note(built.prompt, built.shots, passages, offered=len(shots))
        return built.prompt

    def train_pair(self, row: dict, ctx: Context, training: bool = True) -> dict:
        """A prompt/completion pair; ``training=False`` renders it as an evaluation would see it (validation loss)."""
        completion = prompts.completion_text(ctx, self.answer(row, ctx))
        return {"prompt": self.prompt(row, ctx, self.train_reserve(ctx, completion), training),
                "completion": completion}

    def eval_prompt(self, row: dict, ctx: Context) -> str:
        return self.prompt(row, ctx, ctx.max_new_tokens)

    def reference(self, row: dict) -> str:
        raise NotImplementedError

    # --- evaluation --------------------------------------------------------------------------------------
    def evaluate(self, model, rows: list[dict], ctx: Context, stats: GenerationStats) -> list[dict]:
        """Generate for every eval row; one prediction record per row."""
        prompts = [self.eval_prompt(r, ctx) for r in rows]
        outputs = ctx.generate(model, prompts, stats, label=f"eval {self.name}")
        return [{"id": r.get("id", i), "prompt": p, "reference": self.reference(r), "output": o}
                for i, (r, p, o) in enumerate(zip(rows, prompts, outputs))]

    def score(self, predictions: list[dict]) -> dict[str, list]:
        """Per-example values for each of ``self.metrics``, from stored predictions alone."""
        raise NotImplementedError

    def extra_report(self, predictions: list[dict]) -> dict:
        """Task-specific tables for the report (e.g. a confusion table); empty by default."""
        return {}


def register_task(cls):
    """Class decorator: register one instance of the task under ``cls.name``."""
    TASKS.add(cls.name, cls())
    return cls


def get_task(name: str) -> Task:
    return TASKS.lookup(name)


PLUGINS = "llm_finetune_harness.tasks"  # the entry-point group through which task packages register


def load_tasks() -> None:
    """Import every task package that declares itself under the ``PLUGINS`` entry-point group (the built-in
    ``tasks`` package does, in pyproject.toml); each registers its tasks and metrics as it is imported. The
    programs call this once at their start: the CLI, a cell's process, a training job's process."""
    for entry in importlib.metadata.entry_points(group=PLUGINS):
        if entry.value not in sys.modules:
            entry.load()
