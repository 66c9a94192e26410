"""FEVER-style fact verification, answered directly (closed) or through a ReAct tool loop (react).

Sources: claims ``{id, claim, label}`` with optional ``evidence`` text, or trajectory rows
``{claim, trajectories, label}`` as in ReAct fact-check fine-tuning. Labels are SUPPORTS, REFUTES and
NOT ENOUGH INFO in the usual spellings. Training targets: in react mode the trajectory when the row has one,
else a single ``Finish[LABEL]`` step; in closed mode the label.
"""

from __future__ import annotations

from functools import lru_cache

from harness.core.errors import ConfigError, DataError
from harness.spec.metrics import register_metric
from harness.spec.prompts import Passage, Query, completion_text, n_tokens, passage_block
from harness.spec.splits import uses_embedded
from harness.spec.task import ROLES, Context, GenerationStats, Task, register_task
from tasks import react
from tasks.docstore import Browser, DocStore
from tasks.embedded import fever_gen

register_metric("label_accuracy", True, "mean", "share of claims given the gold label (no answer counts wrong)")
register_metric("macro_f1", True, "macro_f1", "F1 per gold label, averaged over labels")
register_metric("finish_rate", True, "mean", "share of ReAct episodes that end with a valid Finish[label]")
register_metric("invalid_action_rate", False, "ratio", "share of ReAct actions that do not parse or are unknown")
register_metric("mean_steps", False, "mean", "Thought/Action steps per ReAct episode (fewer is cheaper)")

REACT_SYSTEM = ("Verify the claim with Thought, Action and Observation steps. Actions: Search[entity], "
                "Lookup[keyword], Finish[SUPPORTS|REFUTES|NOT ENOUGH INFO].")
CLOSED_SYSTEM = ("Decide whether the evidence supports or refutes the claim. Answer with one of SUPPORTS, "
                 "REFUTES or NOT ENOUGH INFO, and nothing else.")
EMBEDDED = "embedded"  # --docstore embedded: the store the embedded claims were written against
STEP_TOKENS = 56  # one Thought + Action: the longest embedded gold step is 42 tokens
# A step ends at its observation marker, after an action's closing bracket, or where the model starts the next
# thought on its own; without these a model that never writes "Observation" holds its whole batch to the cap.
STEP_STOPS = ["Observation", "]\n", "\nThought"]


@lru_cache(maxsize=2)
def load_docstore(path: str | None, retriever: str = "bm25") -> DocStore:
    """The store the ReAct loop searches (a --docstore file, or the embedded encyclopedia for None or "embedded"),
    indexed by ``retriever`` (--retriever) once and shared by every method's cell."""
    if path in (None, EMBEDDED):
        return DocStore(list(fever_gen.encyclopedia()[0]), retriever)
    return DocStore.from_jsonl(path, retriever)


def store_path(cfg) -> str | None:
    """The document store the run names: --docstore, or --corpus fever= (the same flag under the name every task
    shares)."""
    return cfg.docstore or cfg.corpus.get("fever")


def uses_embedded_store(cfg) -> bool:
    """The ReAct loop searches the embedded encyclopedia: no --docstore, or --docstore embedded."""
    return store_path(cfg) in (None, EMBEDDED)


def check_docstore(cfg) -> None:
    """Refuse real claims against the fictional embedded encyclopedia unless the user asks for it by name.

    Without --docstore, claims from the user's own file would be searched in pages written for the embedded
    claims: every Search misses and the scores measure nothing, with no sign of why.
    """
    key = "fever.eval" if cfg.data.get("fever.eval") else "fever"
    eval_source = cfg.data.get(key, EMBEDDED)
    if store_path(cfg) is None and eval_source.strip() != EMBEDDED:
        raise ConfigError(f"--data {key}={eval_source} in react mode would search the embedded fictional "
                          "encyclopedia; pass --docstore FILE.jsonl with {title, text} pages for your claims, or "
                          "--docstore embedded to use the embedded store on purpose")


def closed(ctx: Context) -> bool:
    """The claim is answered with a label alone (--fever-mode closed), not through the ReAct loop."""
    return ctx.cfg is not None and ctx.cfg.fever_mode == "closed"


@register_task
class Fever(Task):
    name = "fever"
    description = "FEVER-style claim verification, closed or with a ReAct Search/Lookup loop"
    columns = ("claim", "label")
    text_columns = ("claim",)
    metrics = ("label_accuracy", "macro_f1", "finish_rate", "invalid_action_rate", "mean_steps")
    main_metric = "label_accuracy"
    # 64 ReAct trajectories (about 200 tokens each) train LoRA in about 3 minutes on 2 CPU cores. An earlier
    # version, 48 trajectories that quoted the evidence without comparing values, reached only 0.27 label
    # accuracy: the 135M model learned the format but not the verdict (docs/benchmarks.md).
    train_limit = 64
    eval_limit = 30  # 10 per label
    max_new_tokens = 8  # closed mode answers with a label; react mode uses STEP_TOKENS per step

    def options(self, cfg) -> dict:
        opts = {"fever_mode": cfg.fever_mode}
        if cfg.fever_mode == "react":
            opts.update(react_max_steps=cfg.react_max_steps, docstore=store_path(cfg) or "embedded")
        return opts

    def knowledge_base(self, cfg) -> str | None:
        """The document store: --docstore / --corpus fever=FILE, else the embedded encyclopedia for the embedded
        claims (your own claims need your own pages)."""
        path = store_path(cfg)
        if path is not None:
            return path
        return EMBEDDED if uses_embedded(self.name, cfg.data) else None

    def embedded_corpus(self) -> list[dict]:
        return [{"id": p["title"], "title": p["title"], "text": p["text"]} for p in fever_gen.encyclopedia()[0]]

    def method_issue(self, method, cfg) -> str | None:
        if method.retrieve is not None and cfg.fever_mode == "react":
            raise ConfigError(f"method {method.name}: in --fever-mode react the ReAct loop retrieves by itself "
                              "(Search and Lookup), so retrieve=K has nothing to add; use --fever-mode closed, or "
                              "leave retrieve out")
        if method.retrieve is not None and self.knowledge_base(cfg) is None:
            return ("fever's claims are your own and the embedded store holds only the embedded world; pass "
                    "--corpus fever=FILE.jsonl (or --docstore FILE.jsonl) with pages for them")
        return super().method_issue(method, cfg)

    def embedded(self, split: str) -> list[dict]:
        return fever_gen.generate("train" if split == "train" else "validation")

    def load(self, cfg, roles: tuple = ROLES) -> dict:
        if cfg.fever_mode == "react":
            check_docstore(cfg)
            if not uses_embedded_store(cfg):
                load_docstore(store_path(cfg), cfg.retriever)  # a bad --docstore fails before any cell runs
        return super().load(cfg, roles)

    def normalize(self, rows, columns, where):
        rows, _ = super().normalize(rows, columns, where)
        out, dropped = [], []
        for i, row in enumerate(rows):
            label = react.normalize_label(row["label"])
            if label is None:
                dropped.append({"row": i, "reason": f"unknown label {row['label']!r}"})
                continue
            traj = row.get("trajectories")
            if isinstance(traj, list):
                traj = next((t for t in traj if isinstance(t, str) and t.strip()), None)
            evidence = row.get("evidence")
            if isinstance(evidence, list):  # FEVER's own evidence is sentence ids, usable only as text
                evidence = " ".join(e for e in evidence if isinstance(e, str)) or None
            out.append({"id": str(row.get("id", i)), "claim": row["claim"].strip(), "label": label,
                        "evidence": evidence if isinstance(evidence, str) and evidence.strip() else None,
                        "trajectories": traj if isinstance(traj, str) and traj.strip() else None})
        if not out:
            raise DataError(f"{where}: no row has a known label; labels must be SUPPORTS, REFUTES or "
                            "NOT ENOUGH INFO (or SUPPORTED, REFUTED, NEI)")
        return out, dropped

    # --- prompts -----------------------------------------------------------------------------------------
    def query(self, row: dict, ctx: Context) -> Query:
        claim = f"Claim: {row['claim']}"
        if not closed(ctx):
            return Query(head=claim, system=REACT_SYSTEM)
        if not row.get("evidence"):
            return Query(head=claim, system=CLOSED_SYSTEM)
        return Query(head=f"{claim}\nEvidence: ", text=row["evidence"], system=CLOSED_SYSTEM)

    def answer(self, row: dict, ctx: Context) -> str:
        if closed(ctx):
            return row["label"]
        return row["trajectories"] or f"Thought 1: I can answer directly.\nAction 1: Finish[{row['label']}]"

    def search_text(self, row: dict) -> str:
        return row["claim"]

    def with_passages(self, row: dict, query: Query, passages: list[Passage], ctx: Context) -> Query:
        """In closed mode the retrieved pages are the evidence, in place of the row's own."""
        if not passages:
            return query
        return Query(head=f"Claim: {row['claim']}\nEvidence: ", text=passage_block(passages), system=CLOSED_SYSTEM)

    def reference(self, row: dict) -> str:
        return row["label"]

    # --- evaluation --------------------------------------------------------------------------------------
    def evaluate(self, model, rows, ctx, stats: GenerationStats) -> list[dict]:
        if closed(ctx):
            preds = super().evaluate(model, rows, ctx, stats)
            for p in preds:
                p["label"] = react.normalize_label(p["output"].splitlines()[0] if p["output"] else "")
            return preds
        store = load_docstore(store_path(ctx.cfg), ctx.cfg.retriever)
        prompts = [self.eval_prompt(r, ctx) for r in rows]
        episodes = [react.Episode(Browser(store)) for _ in rows]
        # The llama2 template puts a space after [/INST]; the trajectory starts where training completions start.
        lead = completion_text(ctx, "x")[:-1]

        def step(contexts: list[str], n: int) -> list[str]:
            return ctx.generate(model, contexts, stats, max_new_tokens=STEP_TOKENS, stop_strings=STEP_STOPS,
                                label=f"react step {n}")

        def fits(context: str) -> bool:
            return n_tokens(ctx.tok, context) + STEP_TOKENS <= ctx.max_seq_len

        react.run_loop([p + lead for p in prompts], episodes, step, ctx.cfg.react_max_steps, fits)
        return [{"id": r["id"], "prompt": p, "reference": r["label"], "output": e.text, "label": e.label,
                 "finished": e.label is not None, "steps": e.steps, "invalid_actions": e.invalid,
                 "stop_reason": e.stop_reason}
                for r, p, e in zip(rows, prompts, episodes)]

    def score(self, predictions: list[dict]) -> dict[str, list]:
        values = {"label_accuracy": [float(p["label"] == p["reference"]) for p in predictions],
                  "macro_f1": [(p["label"] or "NONE", p["reference"]) for p in predictions]}
        if predictions and "steps" in predictions[0]:
            values.update(finish_rate=[float(p["finished"]) for p in predictions],
                          invalid_action_rate=[(p["invalid_actions"], p["steps"]) if p["steps"] else None
                                               for p in predictions],
                          mean_steps=[float(p["steps"]) for p in predictions])
        return values

    def extra_report(self, predictions: list[dict]) -> dict:
        """A confusion table: gold labels down, predicted labels across (NONE = no answer)."""
        cols = [*react.LABELS, "NONE"]
        rows = [[gold] + [str(sum(1 for p in predictions if p["reference"] == gold and (p["label"] or "NONE") == c))
                          for c in cols] for gold in react.LABELS]
        return {"confusion": {"header": ["gold \\ predicted", *cols], "rows": rows}}
