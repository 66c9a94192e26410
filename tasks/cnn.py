"""CNN/DailyMail summarisation (abisee/cnn_dailymail: ``article``, ``highlights``, ``id``).

A chat model summarises zero-shot, but not in the dataset's format of short highlight lines; fine-tuning
teaches the format, and ROUGE against the reference highlights measures the gain.
"""

from __future__ import annotations

from harness.spec.metrics import ROUGE_TYPES, rouge
from harness.spec.prompts import Query
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

    def query(self, row: dict, ctx: Context) -> Query:
        return Query(text=row["article"], system=SYSTEM)

    def answer(self, row: dict, ctx: Context) -> str:
        return row["highlights"]

    def reference(self, row: dict) -> str:
        return row["highlights"]

    def score(self, predictions: list[dict]) -> dict[str, list]:
        return rouge([p["output"] for p in predictions], [p["reference"] for p in predictions])
