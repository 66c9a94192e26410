"""Batched greedy generation must equal one-at-a-time generation: left padding and masks are right."""

import pytest

from harness.cell.generate import MIN_PREFIX, HFBackend, encode_prompts, generate, shared_length
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


def _count_positions(model) -> list[int]:
    """[input positions fed to ``model``'s forward passes so far]: the prompt's at prefill, one per decoding step."""
    seen = [0]

    def count(module, args, kwargs):
        seen[0] += (kwargs["input_ids"] if kwargs.get("input_ids") is not None else args[0]).numel()
    model.register_forward_pre_hook(count, with_kwargs=True)
    return seen


def test_a_shared_prefix_computed_once_gives_token_identical_outputs(tiny_model, tokenizer, monkeypatch):
    """Few-shot prompts share their shots: reusing that prefix's KV cache changes no output token, and the forward
    passes were fed the prefix once instead of once per prompt; with the cache built but never given to generation,
    outputs are the same too, so only the count (and the record) tells the two apart."""
    task = get_task("cnn")
    ctx = Context(tok=tokenizer, max_seq_len=1024, max_new_tokens=24, cfg=RunConfig(methods=("fewshot",)))
    ctx.prompting = Prompting(task, resolve_method("fewshot"), ctx, cnn_gen.generate("train")[:8], 0)
    # The cell's own few-shot prompts, each ending in raw text of its own: the tiny random model answers a chat
    # prompt with its end token at once, and would compare nothing but that.
    prompts = [task.eval_prompt(r, ctx) + r["article"][:80] for r in cnn_gen.generate("validation")[:10]]
    shared = shared_length(encode_prompts(tokenizer, prompts))
    seen = _count_positions(tiny_model)

    def run(backend):
        before = seen[0]
        return backend.generate(tiny_model, tokenizer, prompts, 24, 4, GenerationStats()), seen[0] - before

    plain, reused, unread = HFBackend(), HFBackend(prefix_cache=True), HFBackend(prefix_cache=True)
    (a, plain_fed), (b, reused_fed) = run(plain), run(reused)
    assert a == b and sum(map(bool, a)) >= len(a) // 2
    assert shared > 300  # the shots
    # The prefix ran through the model once (its own pass) where recomputing it ran it once per prompt.
    assert plain_fed - reused_fed == shared * (len(prompts) - 1)
    assert reused.prefix_record["applied"] and reused.prefix_record["shared_tokens"] == shared
    assert reused.prefix_record["reused_tokens"] == shared * len(prompts) and reused.prefix_record["why"] is None
    assert plain.prefix_record == {}
    # The path switched off: the prefix is built and copied, and generation never gets the copy.
    generate_with = tiny_model.generate
    monkeypatch.setattr(tiny_model, "generate", lambda **kw: generate_with(
        **{k: v for k, v in kw.items() if k not in ("past_key_values", "cache")}))
    c, unread_fed = run(unread)
    assert c == a  # identical outputs alone cannot tell
    assert plain_fed - unread_fed != shared * (len(prompts) - 1)  # the count check fails
    assert plain_fed - unread_fed == -shared  # the prefix's own pass, in vain
    assert unread.prefix_record["applied"] is False and "reused_tokens" not in unread.prefix_record
    assert unread.prefix_record["stepped_aside"] == {
        "generation did not read the prefix's KV cache, and recomputed the prefix": 1}


def test_a_prefix_too_short_to_share_steps_aside_and_the_record_counts_every_call(tiny_model, tokenizer):
    backend = HFBackend(prefix_cache=True)
    out = backend.generate(tiny_model, tokenizer, ["Hello there", "Goodbye now"], 6, 2, GenerationStats())
    assert out == generate(tiny_model, tokenizer, ["Hello there", "Goodbye now"], 6, 2, GenerationStats())
    why = f"the prompts share fewer than {MIN_PREFIX} leading tokens"
    assert backend.prefix_record == {"applied": False, "why": why, "stepped_aside": {why: 1}}
    # A later call that reuses its prefix: the record holds both calls, not the latest one's outcome alone.
    preamble = "You are a careful assistant. Answer each question in one short sentence, and nothing else. "
    backend.generate(tiny_model, tokenizer, [preamble + "What is two plus two?", preamble + "Name a colour."], 6, 2,
                     GenerationStats())
    record = backend.prefix_record
    assert record["applied"] and record["calls"] == 1 and record["shared_tokens"] >= MIN_PREFIX
    assert record["stepped_aside"] == {why: 1} and record["why"] == why
