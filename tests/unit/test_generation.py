"""Batched greedy generation must equal one-at-a-time generation: left padding and masks are right."""

import pytest

from harness.cell.generate import generate
from harness.spec.task import GenerationStats


def test_batched_equals_single(tiny_model, tokenizer):
    prompts = ["Hello there, how are", "A much longer prompt that needs a lot of left padding to line up",
               "Short", "Another prompt of middling length here"]
    batched = generate(tiny_model, tokenizer, prompts, 12, batch_size=4, stats=GenerationStats())
    single = [generate(tiny_model, tokenizer, [p], 12, batch_size=1, stats=GenerationStats())[0] for p in prompts]
    assert batched == single


def test_token_counting_stops_at_eos(tiny_model, tokenizer):
    stats = GenerationStats()
    generate(tiny_model, tokenizer, ["one", "two"], 7, batch_size=2, stats=stats)
    assert 2 <= stats.new_tokens <= 14 and stats.calls == 1 and stats.seconds > 0
    assert stats.tokens_per_s == pytest.approx(stats.new_tokens / stats.seconds)
    assert generate(tiny_model, tokenizer, [], 7, batch_size=2, stats=stats) == []
