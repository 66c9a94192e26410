"""Shots and passages in prompts: which examples a query is shown, what retrieval puts before it, and how a
prompt that does not fit gives way (harness/spec/prompting.py, harness/spec/prompts.py)."""

import dataclasses
import random

import pytest

from harness.spec.config import RunConfig
from harness.spec.methods import resolve_method
from harness.spec.prompting import Prompting, normalised
from harness.spec.prompts import Query, build, n_tokens
from harness.spec.resolve import resolve
from harness.spec.retrieval import knowledge_base
from harness.spec.task import Context, get_task
from tasks.embedded import cnn_gen, qa_gen


def _ctx(tokenizer, task="cnn", max_seq_len=4096, **cfg):
    t = get_task(task)
    return Context(tok=tokenizer, max_seq_len=max_seq_len, max_new_tokens=t.max_new_tokens,
                   cfg=RunConfig(tasks=(task,), methods=("base",), **cfg))


def _prompting(tokenizer, method, train, task="cnn", seed=0, ctx=None, **cfg):
    ctx = ctx or _ctx(tokenizer, task, **cfg)
    spec = resolve_method(method)
    corpus = knowledge_base(get_task(task), ctx.cfg) if spec.retrieve else None
    ctx.prompting = Prompting(get_task(task), spec, ctx, train, seed, corpus)
    return ctx


@pytest.mark.parametrize("select", ["random", "similar"])
def test_a_query_is_never_among_its_own_shots_even_when_planted_in_the_training_rows(tokenizer, select):
    test = cnn_gen.generate("validation")[:6]
    # The test rows planted in the training rows, once as they are and once as a duplicate in other case and spacing.
    planted = [dict(r, article=r["article"].upper().replace(" ", "  ")) for r in test]
    train = test + cnn_gen.generate("train")[:6] + planted
    ctx = _prompting(tokenizer, f"fewshot:shot_select={select}", train)
    task = get_task("cnn")
    for row in test:
        shots = ctx.prompting.shots(row)
        assert len(shots) == 3
        own = normalised(row["article"])
        assert all(normalised(s["article"]) != own for s in shots)
        prompt = task.eval_prompt(row, ctx)
        assert prompt.count(row["article"][:60]) == 1  # the query once, as the query


def test_the_same_seed_draws_the_same_shots_and_another_seed_others(tokenizer):
    train = cnn_gen.generate("train")[:40]
    row = cnn_gen.generate("validation")[0]
    draws = {seed: [s["id"] for s in _prompting(tokenizer, "fewshot", train, seed=seed).prompting.shots(row)]
             for seed in (0, 0, 1, 2)}
    again = [s["id"] for s in _prompting(tokenizer, "fewshot", train, seed=0).prompting.shots(row)]
    assert again == draws[0]
    assert draws[1] != draws[0] and draws[2] != draws[0]
    # one draw serves every query of the cell
    p = _prompting(tokenizer, "fewshot", train, seed=0).prompting
    rows = cnn_gen.generate("validation")[:5]
    assert len({tuple(s["id"] for s in p.shots(r)) for r in rows}) == 1


def test_a_draw_that_holds_the_query_and_a_duplicate_of_it_still_gives_k_shots(tokenizer):
    k, train = 3, cnn_gen.generate("train")[:12]
    query, other = cnn_gen.generate("validation")[:2]
    # The K + 1 rows the cell's seeded draw takes first (random.sample, as every earlier cell drew them): plant the
    # query at the first and a duplicate of it (other case and spacing) at the third.
    first = random.Random("shots-0").sample(range(len(train)), k + 1)
    train[first[0]] = query
    train[first[2]] = dict(query, id="duplicate", article=query["article"].upper().replace(" ", "  "))
    ctx = _prompting(tokenizer, "fewshot", train)
    p = ctx.prompting
    assert p.draw() == [train[i]["id"] for i in first] and {query["id"], "duplicate"} <= set(p.draw())
    shots = p.shots(query)
    assert len(shots) == k and all(normalised(s["article"]) != normalised(query["article"]) for s in shots)
    assert [s["id"] for s in shots[:2]] == [train[first[1]]["id"], train[first[3]]["id"]]  # the draw's others first
    # a query the draw does not hold takes the draw's first K, as before
    assert [s["id"] for s in p.shots(other)] == [train[i]["id"] for i in first[:k]]
    # nothing was dropped to fit: every prompt kept the K shots it was offered
    task = get_task("cnn")
    preds = [{"prompt": task.eval_prompt(r, ctx)} for r in (query, other)]
    preds = [dict(x, **p.info(x["prompt"])) for x in preds]
    assert [x["shots"] for x in preds] == [k, k]
    record = p.record(preds)["shots"]
    assert (record["rows_with_shots_dropped"], record["shots_dropped"], record["mean_kept"]) == (0, 0, k)


def test_a_query_offered_fewer_than_k_shots_dropped_none_to_fit(tokenizer):
    """A training split of K rows, one of them the query: K - 1 shots are all it has, not shots dropped to fit."""
    query = cnn_gen.generate("validation")[0]
    train = [query] + cnn_gen.generate("train")[:2]
    ctx = _prompting(tokenizer, "fewshot", train)
    prompt = get_task("cnn").eval_prompt(query, ctx)
    record = ctx.prompting.record([{"prompt": prompt, **ctx.prompting.info(prompt)}])["shots"]
    assert record["mean_kept"] == 2 and (record["rows_with_shots_dropped"], record["shots_dropped"]) == (0, 0)


def test_similar_shots_are_the_nearest_training_rows_first(tokenizer):
    rows = qa_gen.generate("train")
    query = qa_gen.generate("test")[0]  # a seen question: the training row on its fact asks it in other words
    p = _prompting(tokenizer, "fewshot:shot_select=similar", rows, task="qa").prompting
    shots = p.shots(query)
    assert shots[0]["fact"] == query["fact"] and shots[0]["question"] != query["question"]


def test_shots_that_do_not_fit_are_dropped_from_the_end_and_recorded(tokenizer):
    train = cnn_gen.generate("train")[:10]
    rows = cnn_gen.generate("validation")[:4]
    task = get_task("cnn")
    roomy = _prompting(tokenizer, "fewshot", train, max_seq_len=2048)
    tight = _prompting(tokenizer, "fewshot", train, max_seq_len=512)
    for row in rows:
        full, cut = task.eval_prompt(row, roomy), task.eval_prompt(row, tight)
        assert roomy.prompting.notes[full]["shots"] == 3
        kept = tight.prompting.notes[cut]["shots"]
        # 512 tokens hold these queries with 1 or 2 of their 3 shots (measured: 1, 1, 1, 2)
        assert 0 < kept < 3 and n_tokens(tokenizer, cut) + task.max_new_tokens <= 512
        shots = tight.prompting.shots(row)
        assert shots[kept - 1]["highlights"].split("\n")[0] in cut  # the first ones stay
        assert shots[kept]["highlights"].split("\n")[0] not in cut  # the next one went
        assert row["article"] in cut  # the query itself is whole
    preds = [{"prompt": task.eval_prompt(r, tight), **tight.prompting.info(task.eval_prompt(r, tight))} for r in rows]
    record = tight.prompting.record(preds)["shots"]
    assert record["asked"] == 3 and record["rows_with_shots_dropped"] == 4
    assert record["shots_dropped"] == sum(3 - p["shots"] for p in preds) > 0


def test_a_prompt_with_room_for_the_query_alone_holds_no_shot(tokenizer):
    """280 tokens hold each of these queries with its answer's room and not one shot besides (measured: 0 kept)."""
    train = cnn_gen.generate("train")[:10]
    rows = cnn_gen.generate("validation")[:4]
    task = get_task("cnn")
    bare = _prompting(tokenizer, "fewshot", train, max_seq_len=280)
    for row in rows:
        prompt = task.eval_prompt(row, bare)
        assert bare.prompting.notes[prompt]["shots"] == 0
        offered = bare.prompting.shots(row)
        assert len(offered) == 3 and not any(s["highlights"].split("\n")[0] in prompt for s in offered)
        assert row["article"] in prompt and n_tokens(tokenizer, prompt) + task.max_new_tokens <= 280


def test_build_drops_shots_first_then_truncates_the_text(tokenizer):
    ctx = Context(tok=tokenizer, max_seq_len=160, max_new_tokens=8)
    shots = [("an example question " * 12, "an example answer")] * 3  # about 45 tokens each with its turns
    query = Query(text="word " * 300, system="Summarise.")
    built = build(ctx, query, 8, shots)
    assert built.shots == 0 and n_tokens(tokenizer, built.prompt) + 8 <= 160  # the query did not fit: no shots
    short = Query(text="a short text", system="Summarise.")
    built = build(ctx, short, 8, shots)
    assert 0 < built.shots < 3 and "a short text" in built.prompt  # some fit, the last ones went
    assert n_tokens(tokenizer, built.prompt) + 8 <= 160


def test_bm25_puts_the_gold_page_in_the_top_3_for_most_embedded_qa_questions(tokenizer):
    # Measured on the 40 embedded test questions: 40 of 40 (the questions name their page's subject).
    ctx = _prompting(tokenizer, "rag", qa_gen.generate("train")[:96], task="qa")
    test = qa_gen.generate("test")
    hits = [row["gold"] in [p.doc for p in ctx.prompting.passages(row)] for row in test]
    assert sum(hits) / len(hits) >= 0.9


def test_a_training_row_of_lora_retrieve_holds_retrieved_passages(tokenizer):
    rows = qa_gen.generate("train")[:8]
    ctx = _prompting(tokenizer, "lora:retrieve=3", rows, task="qa")
    task = get_task("qa")
    for row in rows:
        pair = task.train_pair(row, ctx)
        passages = ctx.prompting.passages(row, training=True)
        assert len(passages) == 3
        for p in passages:
            assert f"{p.title}\n{p.text}" in pair["prompt"]
        assert pair["prompt"].index("[1] ") < pair["prompt"].index(f"Question: {row['question']}")
        assert pair["completion"] == row["answers"][0]
    zero = _ctx(tokenizer, "qa")
    assert "[1] " not in task.train_pair(rows[0], zero)["prompt"]


def test_raft_keeps_the_gold_passage_in_a_share_of_training_prompts_and_distractors_in_the_rest(tokenizer):
    rows = qa_gen.generate("train")[:96]
    ctx = _prompting(tokenizer, "lora:retrieve=3:raft=0.5", rows, task="qa")
    assert len(rows) == 96  # the embedded split holds 160 training rows
    with_gold = [r["gold"] in [p.doc for p in ctx.prompting.passages(r, training=True)] for r in rows]
    assert 0.3 < sum(with_gold) / len(with_gold) < 0.7
    assert all(len(ctx.prompting.passages(r, training=True)) == 3 for r in rows)
    # evaluation prompts are retrieved as they rank, RAFT or not
    assert all(r["gold"] in [p.doc for p in ctx.prompting.passages(r)] for r in rows[:20])
    every = _prompting(tokenizer, "lora:retrieve=3:raft=1", rows, task="qa")
    assert all(r["gold"] in [p.doc for p in every.prompting.passages(r, training=True)] for r in rows)


def test_fever_closed_mode_takes_the_retrieved_pages_as_its_evidence(tokenizer):
    task = get_task("fever")
    rows = task.normalize(task.embedded("eval")[:4], {}, "x")[0]
    ctx = _prompting(tokenizer, "rag", rows, task="fever", fever_mode="closed")
    for row in rows:
        prompt = task.eval_prompt(row, ctx)
        passages = ctx.prompting.passages(row)
        assert f"Claim: {row['claim']}\nEvidence: [1] {passages[0].title}" in prompt
        assert row["evidence"] not in prompt or row["evidence"] in passages[0].text


def test_the_embedded_qa_test_split_is_half_seen_half_unseen_against_its_training_rows():
    cfg = RunConfig(tasks=("qa",), methods=("base",))
    data = get_task("qa").load(cfg)
    parts = [r["part"] for r in data["test"]]
    assert parts.count("seen") == qa_gen.SEEN and parts.count("unseen") == qa_gen.UNSEEN
    trained = {r["fact"] for r in data["train"]}
    questions = {r["question"] for r in data["train"]}
    for row in data["test"]:
        assert (row["fact"] in trained) == (row["part"] == "seen")
        assert row["question"] not in questions  # a seen fact is asked in other words
    fewer = get_task("qa").load(dataclasses.replace(cfg, train_limit=10))
    assert [r["part"] for r in fewer["test"]].count("seen") < qa_gen.SEEN  # seen means: a training row asked it


def test_prompting_fields_read_the_same_from_yaml_as_from_the_command_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("tasks: [qa]\nmethods: [{name: rag, retrieve: 5}, 'fewshot:shots=2:shot_select=similar', "
                    "{name: lora, retrieve: 3, raft: 0.8}]\ncorpus: {qa: kb.jsonl}\n")
    cfg = resolve({}, str(path))
    rag, few, lora = cfg.specs
    assert (rag.name, rag.retrieve, rag.trains) == ("rag:retrieve=5", 5, False)
    assert (few.shots, few.shot_select) == (2, "similar")
    assert (lora.retrieve, lora.raft, lora.trains) == (3, 0.8, True)
    assert cfg.corpus == {"qa": "kb.jsonl"}
