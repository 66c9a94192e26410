"""Parse Llama-2 chat text back into a system prompt and turns.

The format (Touvron et al. 2023; as in mlabonne/guanaco-llama2-1k's single ``text`` column):

    <s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s><s>[INST] {user2} [/INST] {answer2} </s>

The system block is optional; a conversation may have several turns. The last answer may lack its ``</s>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TURN = re.compile(r"\[INST\](.*?)\[/INST\](.*?)(?=(?:<s>)?\s*\[INST\]|\Z)", re.DOTALL)
SYS = re.compile(r"^\s*<<SYS>>\s*(.*?)\s*<</SYS>>\s*", re.DOTALL)


class ParseError(ValueError):
    pass


@dataclass(frozen=True)
class Conversation:
    system: str | None
    turns: tuple  # ((user, assistant), ...); the last assistant text is the training target


def parse_llama2(text: str) -> Conversation:
    if not isinstance(text, str) or "[INST]" not in text:
        raise ParseError("no [INST] block")
    if "[/INST]" not in text:
        raise ParseError("[INST] is never closed by [/INST]")
    head = text[:text.index("[INST]")].replace("<s>", "").strip()
    if head:
        raise ParseError(f"text before the first [INST]: {head[:30]!r}")
    turns, system = [], None
    for i, m in enumerate(TURN.finditer(text)):
        user, answer = m.group(1), m.group(2)
        if i == 0:
            sm = SYS.match(user)
            if sm:
                system, user = sm.group(1).strip() or None, user[sm.end():]
        answer = answer.replace("</s>", "").replace("<s>", "").strip()
        user = user.strip()
        if not user:
            raise ParseError(f"turn {i + 1} has an empty instruction")
        turns.append((user, answer))
    if not turns:
        raise ParseError("no [INST] ... [/INST] turn")
    if not turns[-1][1]:
        raise ParseError("the last turn has no answer after [/INST]")
    if any(not a for _, a in turns[:-1]):
        raise ParseError("an earlier turn has no answer")
    return Conversation(system, tuple(turns))


def format_llama2(conv: Conversation) -> str:
    """The inverse of parse_llama2 (used to write the embedded data in the guanaco schema)."""
    out = []
    for i, (user, answer) in enumerate(conv.turns):
        sys_block = f"<<SYS>>\n{conv.system}\n<</SYS>>\n\n" if i == 0 and conv.system else ""
        out.append(f"<s>[INST] {sys_block}{user} [/INST] {answer} </s>")
    return "".join(out)
