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
from harness.spec.prompts import completion_text, fit_prompt, n_tokens, render_prompt
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
def load_docstore(path: str) -> DocStore:
    """One BM25 index per document store file, shared by every method's cell."""
    return DocStore.from_jsonl(path)


def uses_embedded_store(cfg) -> bool:
    """The ReAct loop searches the embedded encyclopedia: no --docstore, or --docstore embedded."""
    return cfg.docstore in (None, EMBEDDED)


def check_docstore(cfg) -> None:
    """Refuse real claims against the fictional embedded encyclopedia unless the user asks for it by name.

    Without --docstore, claims from the user's own file would be searched in pages written for the embedded
    claims: every Search misses and the scores measure nothing, with no sign of why.
    """
    key = "fever.eval" if cfg.data.get("fever.eval") else "fever"
    eval_source = cfg.data.get(key, EMBEDDED)
    if cfg.docstore is None and eval_source.strip() != EMBEDDED:
        raise ConfigError(f"--data {key}={eval_source} in react mode would search the embedded fictional "
                          "encyclopedia; pass --docstore FILE.jsonl with {title, text} pages for your claims, or "
                          "--docstore embedded to use the embedded store on purpose")


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
            opts.update(react_max_steps=cfg.react_max_steps, docstore=cfg.docstore or "embedded")
        return opts

    def embedded(self, split: str) -> list[dict]:
        return fever_gen.generate("train" if split == "train" else "validation")

    def load(self, cfg, roles: tuple = ROLES) -> dict:
        if cfg.fever_mode == "react":
            check_docstore(cfg)
            if not uses_embedded_store(cfg):
                load_docstore(cfg.docstore)  # a bad --docstore fails before any cell spends compute
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
    def _react_prompt(self, row: dict, ctx: Context) -> str:
        return render_prompt(ctx, f"Claim: {row['claim']}", REACT_SYSTEM)

    def _closed_prompt(self, row: dict, ctx: Context, reserve: int) -> str:
        claim = f"Claim: {row['claim']}"
        if not row.get("evidence"):
            return render_prompt(ctx, claim, CLOSED_SYSTEM)
        return fit_prompt(ctx, lambda ev: render_prompt(ctx, f"{claim}\nEvidence: {ev}", CLOSED_SYSTEM),
                          row["evidence"], reserve)

    def train_pair(self, row: dict, ctx: Context) -> dict:
        if ctx.cfg is not None and ctx.cfg.fever_mode == "closed":
            completion = completion_text(ctx, row["label"])
            return {"prompt": self._closed_prompt(row, ctx, n_tokens(ctx.tok, completion) + 1),
                    "completion": completion}
        target = row["trajectories"] or f"Thought 1: I can answer directly.\nAction 1: Finish[{row['label']}]"
        return {"prompt": self._react_prompt(row, ctx), "completion": completion_text(ctx, target)}

    def eval_prompt(self, row: dict, ctx: Context) -> str:
        if ctx.cfg is not None and ctx.cfg.fever_mode == "closed":
            return self._closed_prompt(row, ctx, ctx.max_new_tokens)
        return self._react_prompt(row, ctx)

    def reference(self, row: dict) -> str:
        return row["label"]

    # --- evaluation --------------------------------------------------------------------------------------
    def evaluate(self, model, rows, ctx, stats: GenerationStats) -> list[dict]:
        if ctx.cfg is not None and ctx.cfg.fever_mode == "closed":
            preds = super().evaluate(model, rows, ctx, stats)
            for p in preds:
                p["label"] = react.normalize_label(p["output"].splitlines()[0] if p["output"] else "")
            return preds
        store = fever_gen.store() if uses_embedded_store(ctx.cfg) else load_docstore(ctx.cfg.docstore)
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
