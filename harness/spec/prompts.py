"""Every prompt a task sends, built in one place: the model's chat template (or the raw Llama-2 format), the
method's shots as earlier chat turns, its retrieved passages before the query, all cut by tokens to fit
``--max-seq-len`` with room left for the answer.

A task says what a row asks (``Query``: a system prompt, the user text, and the part of it that may be cut) and
what it answers; ``build`` does the rest, in HELM's order (its in-context adapter): shots are dropped from the end
until the prompt fits with the query whole, then the row's own earlier turns from the start, then the query's
cuttable text is truncated. The count of shots each prompt kept is returned, so a cell can say how many it dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness.core.errors import ConfigError

LLAMA2_SYS = "<<SYS>>\n{system}\n<</SYS>>\n\n"
MIN_TEXT = 8  # tokens of cuttable text a prompt must keep; below this a summary has nothing left to summarise
HISTORY_ROOM = 32  # tokens a conversation's earlier turns must leave the last instruction before they are dropped


@dataclass(frozen=True)
class Query:
    """A row as the user turn of a prompt: ``head`` + ``text`` + ``tail``, where only ``text`` (an article, the
    evidence, the passages) is cut to fit; ``history`` holds the row's own earlier (user, assistant) turns."""

    text: str = ""
    head: str = ""
    tail: str = ""
    system: str | None = None
    history: tuple = ()

    def user(self, text: str | None = None) -> str:
        return f"{self.head}{self.text if text is None else text}{self.tail}"


@dataclass(frozen=True)
class Passage:
    """One retrieved passage: the document it comes from (its id), its title and its text."""

    doc: str
    title: str
    text: str


def passage_block(passages: list[Passage]) -> str:
    """The passages as the prompt shows them: numbered, each under its title."""
    return "\n\n".join(f"[{i}] {p.title}\n{p.text}" for i, p in enumerate(passages, 1))


@dataclass(frozen=True)
class Built:
    prompt: str
    shots: int  # shots the prompt kept
    history: int  # the row's earlier turns it kept


def render_prompt(ctx, user: str, system: str | None = None, history: list | None = None) -> str:
    """A chat prompt that ends where the assistant's answer begins.

    ``history`` holds earlier (user, assistant) turns. With template "llama2" the text follows the Llama-2
    chat format exactly: ``<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST]``.
    """
    turns = list(history or []) + [(user, None)]
    if ctx.template == "llama2":
        out = []
        for i, (u, a) in enumerate(turns):
            sys_block = LLAMA2_SYS.format(system=system) if (i == 0 and system) else ""
            out.append(f"<s>[INST] {sys_block}{u.strip()} [/INST]" + (f" {a.strip()} </s>" if a is not None else ""))
        return "".join(out)
    messages = [{"role": "system", "content": system}] if system else []
    for u, a in turns:
        messages.append({"role": "user", "content": u})
        if a is not None:
            messages.append({"role": "assistant", "content": a})
    if not getattr(ctx.tok, "chat_template", None):
        raise ConfigError("the model's tokenizer has no chat template; pass --template llama2")
    return ctx.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def build(ctx, query: Query, reserve: int, shots: list | tuple = ()) -> Built:
    """The prompt of ``query`` with ``shots`` ((user, assistant) turns) before it, fitted to ``ctx.max_seq_len`` with
    ``reserve`` tokens left for the answer (see the module docstring for the order things give way)."""
    shots, history = list(shots), list(query.history)

    def make(text: str, k: int) -> str:
        return render_prompt(ctx, query.user(text), query.system, shots[:k] + history)

    k = len(shots)
    while k and n_tokens(ctx.tok, make(query.text, k)) + reserve > ctx.max_seq_len:
        k -= 1
    while history and n_tokens(ctx.tok, make("", k)) + reserve + HISTORY_ROOM > ctx.max_seq_len:
        history.pop(0)
    whole = make(query.text, k)
    if not query.text or n_tokens(ctx.tok, whole) + reserve <= ctx.max_seq_len:
        return Built(whole, k, len(history))
    overhead = n_tokens(ctx.tok, make("", k))
    budget = ctx.max_seq_len - overhead - reserve
    if budget < MIN_TEXT:
        raise ConfigError(f"--max-seq-len {ctx.max_seq_len} leaves no room for the input after the prompt "
                          f"template ({overhead} tokens) and the answer ({reserve}); raise --max-seq-len")
    return Built(make(truncate_tokens(ctx.tok, query.text, budget), k), k, len(history))


def with_passages(query: Query, passages: list[Passage]) -> Query:
    """``query`` with the passages before its own text, both cut from the end when they do not fit."""
    if not passages:
        return query
    block = passage_block(passages)
    return replace(query, text=f"{block}\n\n{query.text}" if query.text else block)


def completion_text(ctx, answer: str) -> str:
    """The training target after the prompt. trl appends the tokenizer's EOS when it is missing; with the
    llama2 template a space separates [/INST] from the answer, as in the format."""
    return f" {answer.strip()}" if ctx.template == "llama2" else answer.strip()


def n_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def truncate_tokens(tok, text: str, budget: int) -> str:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= budget:
        return text
    return tok.decode(ids[:max(budget, 0)], skip_special_tokens=True)
