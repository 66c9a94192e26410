"""Prompts as a task renders them: the model's chat template (or the raw Llama-2 format), cut by tokens to fit
``--max-seq-len`` with room left for the answer."""

from __future__ import annotations

from harness.core.errors import ConfigError

LLAMA2_SYS = "<<SYS>>\n{system}\n<</SYS>>\n\n"


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


def fit_prompt(ctx, make_prompt, text: str, reserve: int) -> str:
    """Render ``make_prompt(text)``, truncating ``text`` by tokens so prompt + ``reserve`` fits max_seq_len."""
    overhead = n_tokens(ctx.tok, make_prompt(""))
    budget = ctx.max_seq_len - overhead - reserve
    if budget < 8:
        raise ConfigError(f"--max-seq-len {ctx.max_seq_len} leaves no room for the input after the prompt "
                          f"template ({overhead} tokens) and the answer ({reserve}); raise --max-seq-len")
    return make_prompt(truncate_tokens(ctx.tok, text, budget))
