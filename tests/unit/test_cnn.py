"""The cnn task: embedded data, chat templating and token-budget truncation."""

from harness.spec.config import RunConfig
from harness.spec.prompts import n_tokens
from harness.spec.task import Context, get_task
from tasks.embedded.cnn_gen import generate

CNN = get_task("cnn")


def test_embedded_data_follows_the_schema_and_style():
    train, ev = generate("train"), generate("validation")
    assert len(train) >= 128 and len(ev) >= 32
    assert generate("train") == train  # deterministic
    assert not {r["id"] for r in train} & {r["id"] for r in ev}
    for row in train + ev:
        assert set(row) == {"id", "article", "highlights"} and len(row["id"]) == 40
        assert "(CNN) --" in row["article"]
        lines = row["highlights"].split("\n")
        assert len(lines) == 3 and all(line.endswith(" .") and len(line.split()) <= 16 for line in lines)


def test_default_sizes():
    data = CNN.load(RunConfig())
    assert len(data["train"]) == CNN.train_limit and len(data["test"]) == CNN.eval_limit
    assert data["fingerprint"]["train"]["source"] == "embedded train"
    assert len(data["fingerprint"]["test"]["sha256"]) == 64


def test_prompt_uses_the_chat_template_and_system_prompt(ctx):
    row = generate("validation", 1)[0]
    prompt = CNN.eval_prompt(row, ctx)
    assert prompt.startswith("<|im_start|>system\nWrite the highlights")
    assert row["article"] in prompt and prompt.endswith("<|im_start|>assistant\n")
    pair = CNN.train_pair(row, ctx)
    assert pair["prompt"] == prompt and pair["completion"] == row["highlights"]


def test_llama2_template(tokenizer):
    ctx = Context(tok=tokenizer, max_seq_len=512, max_new_tokens=64, template="llama2")
    row = generate("validation", 1)[0]
    prompt = CNN.eval_prompt(row, ctx)
    assert prompt.startswith("<s>[INST] <<SYS>>\nWrite the highlights") and prompt.endswith(" [/INST]")
    assert "\n<</SYS>>\n\n" + row["article"][:20] in prompt
    assert CNN.train_pair(row, ctx)["completion"] == " " + row["highlights"]


def test_long_articles_are_truncated_by_tokens_to_fit(tokenizer):
    row = {"id": "x", "article": "word " * 2000, "highlights": "Short line .\nAnother line ."}
    for max_len in (128, 512):
        ctx = Context(tok=tokenizer, max_seq_len=max_len, max_new_tokens=64)
        prompt = CNN.eval_prompt(row, ctx)
        assert n_tokens(tokenizer, prompt) + 64 <= max_len
        assert n_tokens(tokenizer, prompt) + 64 >= max_len - 4  # filled, not over-trimmed
        pair = CNN.train_pair(row, ctx)
        total = n_tokens(tokenizer, pair["prompt"] + pair["completion"]) + 1
        assert total <= max_len
    short = generate("validation", 1)[0]
    assert short["article"] in CNN.eval_prompt(short, Context(tok=tokenizer, max_seq_len=512, max_new_tokens=64))


def test_score_reads_only_predictions():
    preds = [{"output": "the cat sat on the mat", "reference": "the cat sat on the mat"},
             {"output": "nothing alike", "reference": "the cat sat on the mat"}]
    scores = CNN.score(preds)
    assert scores["rougeL"] == [1.0, 0.0] and set(scores) == set(CNN.metrics)
