"""CNN/DailyMail summarisation (abisee/cnn_dailymail: ``article``, ``highlights``, ``id``).

A chat model summarises zero-shot, but not in the dataset's format of short highlight lines; fine-tuning
teaches the format, and ROUGE against the reference highlights measures the gain.
"""

from __future__ import annotations

from harness.spec.metrics import ROUGE_TYPES, rouge
from harness.spec.prompts import completion_text, fit_prompt, n_tokens, render_prompt
from harness.spec.task import Context, Task, register_task
from tasks.embedded import cnn_gen

SYSTEM = ("Write the highlights of this news article in the style of CNN/DailyMail: three short lines, "
          "one fact per line.")


@register_task
class CNN(Task):
    name = "cnn"
    description = "CNN/DailyMail summarisation into highlight lines, scored with ROUGE"
    columns = ("article", "highlights")
    text_columns = ("article", "highlights")
    metrics = ROUGE_TYPES
    main_metric = "rougeL"
    # 48 x ~180 tokens trains LoRA in about 2 minutes and QLoRA in about 4 on 2 CPU cores, which keeps the
    # default base,lora,qlora matrix under 15 minutes (docs/benchmarks.md); the split itself holds 160 rows.
    train_limit = 48
    eval_limit = 32
    max_new_tokens = 64  # the embedded highlights are about 44 tokens; room for one more line

    def embedded(self, split: str) -> list[dict]:
        return cnn_gen.generate("train" if split == "train" else "validation")

    def _prompt(self, ctx: Context, row: dict, reserve: int) -> str:
        return fit_prompt(ctx, lambda article: render_prompt(ctx, article, SYSTEM), row["article"], reserve)

    def train_pair(self, row: dict, ctx: Context) -> dict:
        completion = completion_text(ctx, row["highlights"])
        reserve = n_tokens(ctx.tok, completion) + 1  # + the EOS trl appends
        return {"prompt": self._prompt(ctx, row, reserve), "completion": completion}

    def eval_prompt(self, row: dict, ctx: Context) -> str:
        return self._prompt(ctx, row, ctx.max_new_tokens)

    def reference(self, row: dict) -> str:
        return row["highlights"]

    def score(self, predictions: list[dict]) -> dict[str, list]:
        return rouge([p["output"] for p in predictions], [p["reference"] for p in predictions])
