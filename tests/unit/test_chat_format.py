import re

import pytest

from tasks.chat_format import Conversation, ParseError, format_llama2, parse_llama2


def test_single_turn_without_system():
    conv = parse_llama2("<s>[INST] What is 2+2? [/INST] Four. </s>")
    assert conv == Conversation(None, (("What is 2+2?", "Four."),))


def test_system_block_and_multi_turn():
    text = ("<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi [/INST] Hello. </s>"
            "<s>[INST] Name a river. [/INST] The Wend.</s>")
    conv = parse_llama2(text)
    assert conv.system == "You are terse."
    assert conv.turns == (("Hi", "Hello."), ("Name a river.", "The Wend."))
    assert parse_llama2(format_llama2(conv)) == conv


def test_missing_final_eos_and_whitespace():
    conv = parse_llama2("  <s>[INST]\n  Multi\nline  [/INST]\n answer without eos  ")
    assert conv.turns == (("Multi\nline", "answer without eos"),)


@pytest.mark.parametrize("text, reason", [
    ("### Human: hi ### Assistant: hello", "no [INST] block"),
    ("<s>[INST] never closed", "never closed"),
    ("<s>[INST] question [/INST] </s>", "no answer"),
    ("<s>[INST]  [/INST] answer </s>", "empty instruction"),
    ("junk <s>[INST] q [/INST] a </s>", "text before the first"),
    ("<s>[INST] q1 [/INST] </s><s>[INST] q2 [/INST] a2 </s>", "earlier turn has no answer"),
    (None, "no [INST] block"),
])
def test_bad_rows(text, reason):
    with pytest.raises(ParseError, match=re.escape(reason)):
        parse_llama2(text)
