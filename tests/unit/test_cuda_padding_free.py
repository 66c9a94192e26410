"""On CUDA the per-row attention is off until measured to help: trl's padded batches run there, and train.json
says why; HARNESS_PADDING_FREE_CUDA=1 turns it on (the GPU script does, to measure it)."""

import pytest

from harness.cell.padding_free import CUDA_ENV
from harness.cell.trl_changes import apply
from harness.spec.config import RunConfig


def _trainer(model, tok, folder):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = Dataset.from_list([{"prompt": "Say hi.", "completion": " hi"}] * 2)
    args = SFTConfig(output_dir=str(folder), use_cpu=True, report_to="none", save_strategy="no",
                     per_device_train_batch_size=2, max_length=64)
    return SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tok)


@pytest.mark.parametrize("switched_on", [False, True])
def test_padding_free_on_cuda_only_when_switched_on(tiny_model, tokenizer, monkeypatch, tmp_path, switched_on):
    monkeypatch.delenv(CUDA_ENV, raising=False)
    if switched_on:
        monkeypatch.setenv(CUDA_ENV, "1")
    trainer = _trainer(tiny_model, tokenizer, tmp_path)
    done = apply(trainer, RunConfig(), "cuda")  # what apply decides for a CUDA device; nothing runs there
    try:
        record = done.record()
        if switched_on:
            assert "padding_free" in record["applied"]
        else:
            assert "padding_free" not in record["applied"]
            assert record["not_applicable"]["padding_free"].startswith("on cuda, not yet measured to help")
            assert CUDA_ENV in record["not_applicable"]["padding_free"]
        # the CPU-only changes never apply to a CUDA device
        assert {"fused_lora_dropout", "float32_adapters", "malloc_mmap_threshold"} <= set(record["not_applicable"])
    finally:
        done.restore()
