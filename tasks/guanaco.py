"""Instruction following on the guanaco schema, scored by ROUGE-L, reference perplexity and IFEval checks.

Sources: mlabonne/guanaco-llama2-1k (one ``text`` column in the Llama-2 chat format, parsed back into turns),
Alpaca-style ``{instruction, input, output}``, or plain ``{prompt, response}``. Any of them may carry
IFEval's ``instruction_id_list`` and ``kwargs`` columns; those rows count towards instruction following.
"""

from __future__ import annotations

import json

from harness.core.errors import DataError
from harness.spec.metrics import register_metric, rouge
from harness.spec.prompts import Query, completion_text, n_tokens
from harness.spec.task import Context, GenerationStats, Task, register_task
from tasks import ifeval
from tasks.chat_format import ParseError, parse_llama2
from tasks.embedded import guanaco_gen

register_metric("ifeval_prompt_strict", True, "mean",
                "share of constrained prompts whose response passes every instruction check (IFEval strict)")
register_metric("ifeval_instruction_strict", True, "ratio",
                "share of all instruction checks passed (IFEval instruction-level strict)")

SCHEMAS = {"text": ("text",), "alpaca": ("instruction", "output"), "plain": ("prompt", "response")}


def _schema(columns: set) -> str | None:
    for name, needed in SCHEMAS.items():
        if set(needed) <= columns:
            return name
    return None


def _constraints(row: dict) -> tuple[list, list]:
    ids, kwargs = row.get("instruction_id_list"), row.get("kwargs")
    if isinstance(ids, str):  # CSV stores lists as JSON text
        ids, kwargs = json.loads(ids), json.loads(kwargs or "[]")
    ids = list(ids or [])
    kwargs = list(kwargs or [{} for _ in ids])
    if len(ids) != len(kwargs):
        raise ValueError(f"{len(ids)} instruction ids but {len(kwargs)} kwargs")
    for iid in ids:
        ifeval.CHECKERS.lookup(iid)
    return ids, kwargs


@register_task
class Guanaco(Task):
    name = "guanaco"
    description = "instruction following (guanaco / Alpaca / prompt-response), ROUGE-L, perplexity, IFEval checks"
    metrics = ("rougeL", "ref_perplexity", "ifeval_prompt_strict", "ifeval_instruction_strict")
    main_metric = "ifeval_instruction_strict"
    train_limit = 48
    eval_limit = 32
    max_new_tokens = 96  # the embedded answers are at most ~70 tokens (four bullets, or JSON)

    def embedded(self, split: str) -> list[dict]:
        return guanaco_gen.generate("train" if split == "train" else "validation")

    def normalize(self, rows, columns, where):
        rows = self.rename(rows, columns, where)
        schema = _schema(set(rows[0]))
        if schema is None:
            raise DataError(f"{where} has columns {', '.join(sorted(rows[0]))}, which match no known schema: "
                            "text (Llama-2 chat), instruction+output (Alpaca) or prompt+response; map yours with "
                            f"--columns {self.name}:text=YOUR_COLUMN")
        out, dropped = [], []
        for i, row in enumerate(rows):
            try:
                out.append(self._parse(row, schema, i))
            except (ParseError, ValueError, TypeError, Exception) as e:  # noqa: BLE001 (any bad row is reported)
                dropped.append({"row": i, "reason": str(e) or type(e).__name__})
        if not out:
            raise DataError(f"{where}: none of its {len(rows)} rows parse as the {schema} schema "
                            f"(first: row {dropped[0]['row']}: {dropped[0]['reason']})")
        return out, dropped

    def _parse(self, row: dict, schema: str, i: int) -> dict:
        if schema == "text":
            conv = parse_llama2(row["text"])
            system, history, (prompt, response) = conv.system, [list(t) for t in conv.turns[:-1]], conv.turns[-1]
        elif schema == "alpaca":
            extra = (row.get("input") or "").strip()
            system, history = None, []
            prompt = f"{row['instruction'].strip()}\n\n{extra}" if extra else row["instruction"].strip()
            response = row["output"]
        else:
            system, history, prompt, response = None, [], row["prompt"], row["response"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ParseError("empty instruction")
        if not isinstance(response, str) or not response.strip():
            raise ParseError("empty response")
        ids, kwargs = _constraints(row)
        return {"id": str(row.get("id", i)), "system": system, "history": history, "prompt": prompt.strip(),
                "response": response.strip(), "instruction_id_list": ids, "kwargs": kwargs}

    def query(self, row: dict, ctx: Context) -> Query:
        return Query(text=row["prompt"], system=row["system"], history=tuple(tuple(t) for t in row["history"]))

    def answer(self, row: dict, ctx: Context) -> str:
        return row["response"]

    def train_reserve(self, ctx: Context, completion: str) -> int:
        # Long answers may take at most half the window; trl then cuts the end of the answer, not the prompt.
        return min(n_tokens(ctx.tok, completion) + 1, ctx.max_seq_len // 2)

    def reference(self, row: dict) -> str:
        return row["response"]

    def evaluate(self, model, rows, ctx, stats: GenerationStats) -> list[dict]:
        prompts = [self.eval_prompt(r, ctx) for r in rows]
        outputs = ctx.generate(model, prompts, stats, label="eval guanaco")
        nll = ctx.completion_nll(model, prompts, [completion_text(ctx, r["response"]) for r in rows],
                                 batch_size=max(1, ctx.batch_size // 4), label="perplexity guanaco")
        return [{"id": r["id"], "prompt": p, "reference": r["response"], "output": o, "ref_nll": n[0],
                 "ref_tokens": n[1], "instruction_id_list": r["instruction_id_list"], "kwargs": r["kwargs"]}
                for r, p, o, n in zip(rows, prompts, outputs, nll)]

    def score(self, predictions: list[dict]) -> dict[str, list]:
        outputs = [p["output"] for p in predictions]
        return {"rougeL": rouge(outputs, [p["reference"] for p in predictions], types=("rougeL",))["rougeL"],
                "ref_perplexity": [(p["ref_nll"], p["ref_tokens"]) for p in predictions],
                **ifeval.score(outputs, [p["instruction_id_list"] for p in predictions],
                               [p["kwargs"] for p in predictions])}
