"""plan's prompt lengths: estimated from the embedded rows without a tokenizer, counted in its memory estimate."""

import pytest

from harness.cli import main
from harness.plan import prompts
from harness.spec.config import RunConfig
from harness.spec.prompting import Prompting
from harness.spec.prompts import n_tokens
from harness.spec.retrieval import knowledge_base
from harness.spec.task import Context, get_task


@pytest.mark.parametrize("task", ["cnn", "guanaco", "fever", "qa"])
def test_the_characters_per_token_rate_holds_for_the_tasks_rows(tokenizer, task):
    t = get_task(task)
    rows = t.normalize(t.embedded("eval"), {}, "x")[0]
    ctx = Context(tok=tokenizer, max_seq_len=4096, max_new_tokens=16,
                  cfg=RunConfig(tasks=(task,), methods=("base",), fever_mode="closed"))
    texts = [t.query(r, ctx).user() + t.answer(r, ctx) for r in rows]
    measured = sum(map(len, texts)) / sum(n_tokens(tokenizer, x) for x in texts)
    assert abs(measured / prompts.CHARS_PER_TOKEN - 1) <= 0.15, measured


def test_shots_and_passages_lengthen_the_estimated_prompt_against_the_real_one(tokenizer):
    cfg = RunConfig(tasks=("qa",), methods=("base", "fewshot", "rag"))
    base, few, rag = (prompts.estimate("qa", m, cfg) for m in cfg.specs)
    assert base.eval_tokens < few.eval_tokens < rag.eval_tokens and not rag.capped
    assert rag.eval_tokens / base.eval_tokens > 3
    # within a fifth of the prompts a cell builds on the same rows, with the tokenizer
    task, data = get_task("qa"), get_task("qa").load(cfg)
    for spec, est in zip(cfg.specs, (base, few, rag)):
        ctx = Context(tok=tokenizer, max_seq_len=cfg.max_seq_len, max_new_tokens=task.max_new_tokens, cfg=cfg)
        corpus = knowledge_base(task, cfg) if spec.retrieve else None
        ctx.prompting = Prompting(task, spec, ctx, data["train"], 0, corpus) if spec.prompting else None
        real = sum(n_tokens(tokenizer, task.eval_prompt(r, ctx)) for r in data["test"]) / len(data["test"])
        assert abs(est.eval_tokens / real - 1) <= 0.2, (spec.name, est.eval_tokens, real)
    wide = prompts.estimate("cnn", RunConfig(methods=("fewshot",)).specs[0], RunConfig(methods=("fewshot",)))
    assert wide.capped  # three cnn shots do not fit the default 512 tokens


def test_plan_with_tasks_counts_the_longer_prompts_in_its_memory(capsys):
    assert main(["plan", "--methods", "base,fewshot"]) == 0
    flat = capsys.readouterr().out
    assert main(["plan", "--tasks", "qa,cnn", "--methods", "base,fewshot,rag"]) == 0
    out = capsys.readouterr().out
    assert "qa x rag: ~" in out and "cnn x rag: left out (cnn has no knowledge base" in out
    assert kv_cache(out)["base"] < kv_cache(out)["fewshot"]  # the KV cache of the longer prompts
    assert kv_cache(flat)["base"] == kv_cache(flat)["fewshot"]  # without --tasks both are at --max-seq-len


def kv_cache(out: str) -> dict:
    """{method: the KV cache column of plan's table}, read from the table's rows (above its "memory:" line)."""
    table = out.split("\nmemory:")[0].splitlines()
    return {line.split()[0]: float(line.split()[8]) for line in table if line.split()[:1] in (["base"], ["fewshot"])}
