"""The guanaco task: three source schemas, unparsed rows, templates, and scores by hand."""

import json
import math

import pandas as pd
import pytest

from harness.core.errors import DataError
from harness.spec.config import RunConfig
from harness.spec.methods import resolve_method
from harness.spec.prompting import Prompting
from harness.spec.task import Context, get_task
from tasks.embedded.guanaco_gen import generate
from tasks.ifeval import check

G = get_task("guanaco")


def load(tmp_path, rows, name="g.jsonl", **cfg):
    path = tmp_path / name
    if name.endswith(".csv"):
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return G.load(RunConfig(tasks=("guanaco",), data={"guanaco": str(path)}, **cfg))


def test_embedded_rows_follow_the_schema_and_satisfy_their_constraints():
    rows = generate("train")
    assert len(rows) >= 128 and len(generate("validation")) >= 32
    kinds = set()
    for row in rows:
        assert row["text"].startswith("<s>[INST] ") and row["text"].endswith(" </s>")
        answer = row["text"].split("[/INST] ", 1)[1].removesuffix(" </s>")
        assert all(check(answer, row["instruction_id_list"], row["kwargs"]))
        kinds.update(row["instruction_id_list"])
    assert len(kinds) == 7  # every checker is exercised


def test_llama2_text_schema(tmp_path):
    rows = [{"text": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nQ1 [/INST] A1 </s><s>[INST] Q2 [/INST] A2 </s>"},
            {"text": "<s>[INST] Q3 [/INST] A3 </s>"}] * 3
    data = load(tmp_path, rows, eval_limit=2)
    row = data["test"][0]
    assert set(row) == {"id", "system", "history", "prompt", "response", "instruction_id_list", "kwargs"}
    assert row["instruction_id_list"] == []


def test_unparsed_rows_are_counted_and_reported_not_silently_dropped(tmp_path):
    good = {"text": "<s>[INST] Q [/INST] A </s>"}
    rows = [good, {"text": "### Human: hi"}, good, {"text": "<s>[INST] no answer [/INST]"}, good, good]
    data = G.load(RunConfig(tasks=("guanaco",), data={"guanaco.train": _write(tmp_path, rows),
                                                       "guanaco.eval": _write(tmp_path, [good], "e.jsonl")}))
    info = data["fingerprint"]["train"]["unparsed"]
    assert info["count"] == 2 and [e["row"] for e in info["examples"]] == [1, 3]
    assert "no [INST] block" in info["examples"][0]["reason"]
    assert len(data["train"]) == 4


def _write(tmp_path, rows, name="t.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


def test_nothing_parses_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"none of its 2 rows parse as the text schema \(first: row 0"):
        load(tmp_path, [{"text": "plain"}, {"text": "also plain"}])


def test_alpaca_and_plain_schemas(tmp_path):
    alpaca = [{"instruction": "Translate", "input": "bonjour", "output": "hello"},
              {"instruction": "Say hi", "input": "", "output": "hi"}] * 2
    data = load(tmp_path, alpaca, eval_limit=4, train_limit=1)
    prompts = sorted(r["prompt"] for r in data["test"] + data["train"])
    assert "Translate\n\nbonjour" in prompts and "Say hi" in prompts
    plain = [{"prompt": "p", "response": "r", "instruction_id_list": '["change_case:english_lowercase"]',
              "kwargs": "[{}]"}] * 4
    data = load(tmp_path, plain, name="p.csv")
    assert data["test"][0]["instruction_id_list"] == ["change_case:english_lowercase"]


def test_unknown_schema_and_column_mapping(tmp_path):
    with pytest.raises(DataError, match="match no known schema.*--columns guanaco:text=YOUR_COLUMN"):
        load(tmp_path, [{"question": "q", "answer": "a"}])
    data = load(tmp_path, [{"question": "q", "answer": "a"}] * 4,
                columns={"guanaco": {"prompt": "question", "response": "answer"}})
    assert data["test"][0]["prompt"] == "q"


def test_templates(tokenizer):
    row = {"system": "Be brief.", "history": [["Q1", "A1"]], "prompt": "Q2", "response": "A2",
           "instruction_id_list": [], "kwargs": []}
    model = Context(tok=tokenizer, max_seq_len=512, max_new_tokens=32)
    p = G.eval_prompt(row, model)
    assert p.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ1<|im_end|>")
    assert "<|im_start|>assistant\nA1<|im_end|>" in p and p.endswith("user\nQ2<|im_end|>\n<|im_start|>assistant\n")
    llama = Context(tok=tokenizer, max_seq_len=512, max_new_tokens=32, template="llama2")
    p = G.eval_prompt(row, llama)
    assert p == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nQ1 [/INST] A1 </s><s>[INST] Q2 [/INST]"
    assert G.train_pair(row, llama)["completion"] == " A2"


def test_shots_are_chat_turns_after_the_system_and_before_the_rows_own_turns(tokenizer):
    data = G.load(RunConfig(tasks=("guanaco",)))
    row = dict(data["test"][0], system="Be brief.", history=[["Q1", "A1"]])
    ctx = Context(tok=tokenizer, max_seq_len=4096, max_new_tokens=G.max_new_tokens,
                  cfg=RunConfig(tasks=("guanaco",), methods=("fewshot",)))
    ctx.prompting = Prompting(G, resolve_method("fewshot:shots=2"), ctx, data["train"], 0)
    prompt, shots = G.eval_prompt(row, ctx), ctx.prompting.shots(row)
    assert len(shots) == 2 and ctx.prompting.notes[prompt]["shots"] == 2
    turns = ["<|im_start|>system\nBe brief.<|im_end|>",
             *(f"<|im_start|>user\n{s['prompt']}<|im_end|>\n<|im_start|>assistant\n{s['response']}<|im_end|>"
               for s in shots),
             "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>",
             f"<|im_start|>user\n{row['prompt']}<|im_end|>\n<|im_start|>assistant\n"]
    assert prompt == "\n".join(turns)  # system, the shots as user and assistant turns, the history, the query


def test_long_history_is_dropped_before_the_question(tokenizer):
    row = {"system": None, "history": [["old " * 300, "reply"]], "prompt": "the question", "response": "ok",
           "instruction_id_list": [], "kwargs": []}
    ctx = Context(tok=tokenizer, max_seq_len=128, max_new_tokens=32)
    p = G.eval_prompt(row, ctx)
    assert "the question" in p and "old old" not in p


def test_scores_by_hand():
    preds = [
        {"output": "all lower. bye", "reference": "all lower. bye", "ref_nll": 2.0, "ref_tokens": 2,
         "instruction_id_list": ["change_case:english_lowercase", "startend:end_checker"],
         "kwargs": [{}, {"end_phrase": "bye"}]},
        {"output": "Upper then bye", "reference": "something else", "ref_nll": 4.0, "ref_tokens": 2,
         "instruction_id_list": ["change_case:english_lowercase", "startend:end_checker"],
         "kwargs": [{}, {"end_phrase": "bye"}]},
        {"output": "free text", "reference": "free text", "ref_nll": 0.0, "ref_tokens": 4,
         "instruction_id_list": [], "kwargs": []},
    ]
    s = G.score(preds)
    assert s["ifeval_prompt_strict"] == [1.0, 0.0, None]  # the unconstrained prompt does not count
    assert s["ifeval_instruction_strict"] == [(2, 2), (1, 2), None]
    assert s["rougeL"][0] == 1.0 and s["rougeL"][1] == 0.0
    from harness.spec.metrics import summarise

    out = summarise(s, n_boot=200, seed=0)
    assert out["ifeval_prompt_strict"]["value"] == 0.5 and out["ifeval_prompt_strict"]["n"] == 2
    assert out["ifeval_instruction_strict"]["value"] == pytest.approx(3 / 4)
    assert out["ref_perplexity"]["value"] == pytest.approx(math.exp(6 / 8))
    assert out["ref_perplexity"]["higher_is_better"] is False


def test_reference_nll_matches_the_model_loss(tiny_model, tokenizer):
    """completion_nll equals the mean loss transformers computes over the same completion tokens."""
    import torch

    from harness.cell.generate import completion_nll

    prompts, completions = ["Question: two plus two?", "Hi"], ["Four, of course.", "Hello there, friend"]
    got = completion_nll(tiny_model, tokenizer, prompts, completions, batch_size=2)
    for (nll, n), p, c in zip(got, prompts, completions):
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([p_ids + c_ids])
        labels = torch.tensor([[-100] * len(p_ids) + c_ids])
        with torch.no_grad():
            loss = tiny_model(input_ids=ids, labels=labels).loss.item()
        assert n == len(c_ids)
        assert nll / n == pytest.approx(loss, rel=1e-4)
