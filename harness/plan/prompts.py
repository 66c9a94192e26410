"""How long each method's prompts will be, before any tokenizer or model is loaded: for ``plan``.

A prompting method pays at every query in prompt tokens: shots add their worked examples, retrieval its passages.
The estimate reads the task's embedded rows (or the --corpus documents) as text and converts characters to
tokens at a measured rate, so ``plan`` stays free of torch and transformers. Rows from --data files are not read
before the run; their tasks are estimated from --max-seq-len alone, and ``plan`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.spec.retrieval import EMBEDDED, read_documents, split_passages
from harness.spec.splits import uses_embedded
from harness.spec.task import Context, get_task

# SmolLM2's tokenizer on the embedded rows of cnn, guanaco, fever and qa gave 3.4 to 3.9 characters per token
# (tests/unit/test_plan_prompts.py measures it again and holds this within 15%); English BPE tokenizers of the Llama
# family sit near 4 (OpenAI's rule of thumb for English is about 4 characters per token).
CHARS_PER_TOKEN = 3.8
# A ChatML message's own tokens: <|im_start|>, the role, a newline, <|im_end|>, a newline (measured: 11 tokens for a
# user turn "a" and an assistant turn "b", 2 of them the text); the assistant header that opens the answer is 3 more.
MESSAGE_TOKENS, ANSWER_HEADER = 5, 3


@dataclass(frozen=True)
class PromptSize:
    task: str
    method: str
    eval_tokens: int  # a test prompt, before the answer
    new_tokens: int  # the answer's cap (--max-new-tokens or the task's own)
    train_tokens: int  # a training row: prompt and completion
    zero_shot: int  # the same task's prompt without shots or passages
    capped: bool  # --max-seq-len cut it (shots would be dropped, text truncated)


def _tokens(text: str) -> float:
    return len(text) / CHARS_PER_TOKEN


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def estimate(task_name: str, method, cfg) -> PromptSize | None:
    """The prompt size of ``method`` on ``task_name`` under ``cfg``; None when the task's rows are the user's."""
    if not uses_embedded(task_name, cfg.data):
        return None
    task = get_task(task_name)
    ctx = Context(tok=None, max_seq_len=cfg.max_seq_len, max_new_tokens=cfg.max_new_tokens or task.max_new_tokens,
                  cfg=cfg)
    test = task.normalize(task.embedded("eval"), {}, "embedded")[0][:cfg.eval_limit or task.eval_limit]
    train = task.normalize(task.embedded("train"), {}, "embedded")[0][:cfg.train_limit or task.train_limit]

    def turn(text: str) -> float:
        return _tokens(text) + MESSAGE_TOKENS

    def query(row: dict) -> float:
        q = task.query(row, ctx)
        return (turn(q.system) if q.system else 0) + turn(q.user()) + ANSWER_HEADER

    zero = _mean(query(r) for r in test)
    shots = (method.shots or 0) * _mean(turn(task.query(r, ctx).user()) + turn(task.answer(r, ctx)) for r in train)
    passages = (method.retrieve or 0) * _passage_tokens(task, cfg) if method.retrieve else 0.0
    answer = _mean(_tokens(task.answer(r, ctx)) for r in train) + 1
    eval_tokens = zero + shots + passages
    train_tokens = _mean(query(r) for r in train) + shots + passages + answer
    limit = cfg.max_seq_len
    capped = eval_tokens + ctx.max_new_tokens > limit or train_tokens > limit
    return PromptSize(task_name, method.name, round(min(eval_tokens, limit - ctx.max_new_tokens)), ctx.max_new_tokens,
                      round(min(train_tokens, limit)), round(zero), capped)


def _passage_tokens(task, cfg) -> float:
    """The mean passage of the task's knowledge base, in tokens, and the separators the prompt puts around it."""
    source = task.knowledge_base(cfg)
    if source is None:
        return 0.0
    docs = task.embedded_corpus() if source == EMBEDDED else read_documents(source)[0]
    return _mean(_tokens(f"[1] {p.title}\n{p.text}\n\n") for p in split_passages(docs, cfg.passage_words))
