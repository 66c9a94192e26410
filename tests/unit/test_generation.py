"""Batched greedy generation must equal one-at-a-time generation: left padding and masks are right."""

import pytest

from harness.cell.generate import MIN_PREFIX, HFBackend, generate
from harness.spec.config import RunConfig
from harness.spec.methods import resolve_method
from harness.spec.prompting import Prompting
from harness.spec.task import Context, GenerationStats, get_task
from tasks.embedded import cnn_gen


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


def test_a_shared_prefix_computed_once_gives_token_identical_outputs(tiny_model, tokenizer):
    """Few-shot prompts share their shots: reusing that prefix's KV cache changes no output token, and it did run."""
    task = get_task("cnn")
    ctx = Context(tok=tokenizer, max_seq_len=1024, max_new_tokens=24, cfg=RunConfig(methods=("fewshot",)))
    ctx.prompting = Prompting(task, resolve_method("fewshot"), ctx, cnn_gen.generate("train")[:8], 0)
    # The cell's own few-shot prompts, each ending in raw text of its own: the tiny random model answers a chat
    # prompt with its end token at once, and would compare nothing but that.
    prompts = [task.eval_prompt(r, ctx) + r["article"][:80] for r in cnn_gen.generate("validation")[:10]]
    plain, reused = HFBackend(), HFBackend(prefix_cache=True)
    a = plain.generate(tiny_model, tokenizer, prompts, 24, 4, GenerationStats())
    b = reused.generate(tiny_model, tokenizer, prompts, 24, 4, GenerationStats())
    assert a == b and sum(map(bool, a)) >= len(a) // 2
    assert reused.prefix_record["applied"] and reused.prefix_record["shared_tokens"] > 300  # the shots
    assert plain.prefix_record == {}


def test_a_prefix_too_short_to_share_steps_aside_and_says_why(tiny_model, tokenizer):
    backend = HFBackend(prefix_cache=True)
    out = backend.generate(tiny_model, tokenizer, ["Hello there", "Goodbye now"], 6, 2, GenerationStats())
    assert out == generate(tiny_model, tokenizer, ["Hello there", "Goodbye now"], 6, 2, GenerationStats())
    assert backend.prefix_record == {"applied": False, "why": f"the prompts share fewer than {MIN_PREFIX} leading "
                                                              "tokens"}
