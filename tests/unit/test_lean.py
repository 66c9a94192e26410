"""The lean training path must compute exactly what trl's path computes: same attention per row, same
log-probabilities, loss and gradients, same token counts; only the work on padding and prompts goes."""

import sys
from types import SimpleNamespace

import pytest
import torch

from harness.cell import lm_head, lora_dropout, padding_free, trl_changes


def _rows(lengths, heads=4, kv_heads=2, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, heads, n, dim, generator=g), torch.randn(1, kv_heads, n, dim, generator=g),
             torch.randn(1, kv_heads, n, dim, generator=g)) for n in lengths]


class _Attn(torch.nn.Module):
    num_key_value_groups, is_causal = 2, True


def test_varlen_attention_equals_causal_sdpa_per_row():
    lengths = [5, 9, 1, 3]
    rows = _rows(lengths)
    q, k, v = (torch.cat([r[i] for r in rows], dim=2) for i in range(3))
    bounds = torch.tensor([0, 5, 14, 15, 18], dtype=torch.int32)
    packed, _ = padding_free.varlen_attention(_Attn().eval(), q, k, v, None, cu_seq_lens_q=bounds)
    expected = torch.cat([torch.nn.functional.scaled_dot_product_attention(
        rq, rk.repeat_interleave(2, 1), rv.repeat_interleave(2, 1), is_causal=True) for rq, rk, rv in rows], dim=2)
    assert packed.shape == (1, sum(lengths), 4, 8)
    torch.testing.assert_close(packed, expected.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_varlen_attention_without_row_bounds_is_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v = (torch.cat(t, dim=0) for t in zip(*_rows([6, 6])))
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool).tril()
    mask[1, :, :, :2] = False  # left padding in the second row
    ours, _ = padding_free.varlen_attention(_Attn().eval(), q, k, v, mask)
    theirs, _ = sdpa_attention_forward(_Attn().eval(), q, k, v, mask)
    torch.testing.assert_close(ours, theirs)


def _tiny_lm(seed=0, hidden=32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=300, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def test_compact_head_equals_trls_head_in_loss_metrics_and_gradients():
    from trl.trainer.utils import add_fused_lm_head

    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :7] = -100  # the prompt
    labels[1, 10:] = -100  # padding
    results = []
    for compact in (False, True):
        model = _tiny_lm()
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
        if compact:
            assert lm_head.compact_lm_head(model)
        out = model(input_ids=ids, labels=labels, fused_lm_head=True, num_items_in_batch=7)
        out.loss.backward()
        results.append((out, model.model.embed_tokens.weight.grad.clone()))
    (trl_out, trl_grad), (our_out, our_grad) = results
    for name in ("loss", "log_probs", "entropy"):
        torch.testing.assert_close(getattr(our_out, name), getattr(trl_out, name), rtol=1e-5, atol=1e-6)
    assert torch.equal(our_out.is_top1, trl_out.is_top1) and torch.equal(our_out.label_mask, trl_out.label_mask)
    torch.testing.assert_close(our_grad, trl_grad, rtol=1e-4, atol=1e-7)


def test_compact_head_leaves_plain_calls_alone():
    from trl.trainer.utils import add_fused_lm_head

    model = _tiny_lm().eval()
    ids = torch.randint(0, 300, (1, 6))
    before = model(input_ids=ids).logits
    add_fused_lm_head(model)
    lm_head.compact_lm_head(model)
    torch.testing.assert_close(model(input_ids=ids).logits, before)


def test_compact_head_declines_scaled_logits():
    model = _tiny_lm()
    model.config.final_logit_softcapping = 30.0
    assert not lm_head.compact_lm_head(model)


def _lora_model(dropout=0.05):
    from peft import LoraConfig, get_peft_model

    model = _tiny_lm(hidden=64)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, init_lora_weights=False,
                                            target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]))


def test_fused_dropout_equals_dropout_then_linear_with_the_same_mask():
    head = torch.nn.Linear(64, 4, bias=False)
    x = torch.randn(2, 7, 64, requires_grad=True)
    torch.manual_seed(3)
    out = lora_dropout._dropout_linear_function().apply(x, head.weight, 0.9)
    out.pow(2).sum().backward()
    torch.manual_seed(3)
    mask = lora_dropout._keep_mask(x.shape, 0.9)  # the same draw from torch's generator gives the same mask
    x2 = x.detach().clone().requires_grad_()
    ref = torch.nn.functional.linear(x2 * mask / 0.9, head.weight)
    ref.pow(2).sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, x2.grad)
    assert 0.85 < mask.float().mean() < 0.95


def test_fused_dropout_keeps_with_probability_one_minus_p():
    torch.manual_seed(0)
    mask = lora_dropout._keep_mask((1000, 1000), 0.95)
    assert mask.dtype == torch.bool and abs(mask.float().mean().item() - 0.95) < 1e-3


def test_fused_dropout_trains_the_same_adapter_and_undoes_cleanly():
    model = _lora_model()
    names = {n for n, _ in model.named_parameters()}
    ids = torch.randint(0, 300, (2, 9))
    model.eval()
    before = model(input_ids=ids).logits
    undo = lora_dropout.fuse_lora_dropout(model)
    assert undo is not None
    assert all(type(d) is torch.nn.Identity for m in model.modules() if hasattr(m, "lora_dropout")
               for d in m.lora_dropout.values())
    torch.testing.assert_close(model(input_ids=ids).logits, before)  # eval: no dropout, same model
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    undo()
    assert all(type(d) is torch.nn.Dropout for m in model.modules() if hasattr(m, "lora_dropout")
               for d in m.lora_dropout.values())
    assert {n for n, _ in model.named_parameters()} == names
    assert lora_dropout.fuse_lora_dropout(_lora_model(dropout=0.0)) is None  # nothing to fuse


def test_fused_dropout_applies_where_its_conditions_hold_and_says_why_elsewhere():
    """The one decision a cell's training and the conformance check both take (trl_changes.fuse_dropout)."""
    from peft import LoraConfig, get_peft_model

    assert trl_changes.fuse_dropout(_lora_model(), "cuda")[0] == "not_applicable"
    assert trl_changes.fuse_dropout(_tiny_lm(), "cpu") == ("not_applicable", "the method trains no LoRA adapter")
    assert trl_changes.fuse_dropout(_lora_model(dropout=0.0), "cpu") == ("not_applicable", "no adapter has dropout")
    kind, undo = trl_changes.fuse_dropout(_lora_model(), "cpu")
    assert kind == "applied" and callable(undo)
    dora = get_peft_model(_tiny_lm(hidden=64), LoraConfig(r=4, lora_dropout=0.05, use_dora=True,
                                                          target_modules=["q_proj", "v_proj"]))
    kind, why = trl_changes.fuse_dropout(dora, "cpu")
    assert kind == "left_out" and "DoraLinearVariant" in why and trl_changes.any_dropout(dora)  # peft's stays


def test_allocator_tuning_reports_success_on_glibc():
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert trl_changes.tune_allocator() is True


def _config_model(config):
    """A stand-in with the config alone: varlen_blockers reads nothing else."""
    class Stub:
        pass

    stub = Stub()
    stub.config = config
    return stub


def test_per_row_attention_steps_aside_for_what_it_cannot_compute():
    from transformers import Gemma2Config, LlamaConfig, MistralConfig, Qwen2Config

    assert padding_free.varlen_blockers(_config_model(LlamaConfig()), 512) == []
    assert padding_free.varlen_blockers(_config_model(Qwen2Config(use_sliding_window=True, sliding_window=64)),
                                        512) == []  # a window is applied per row
    assert padding_free.varlen_blockers(_config_model(MistralConfig(sliding_window=8)), 512) == []
    reasons = padding_free.varlen_blockers(_config_model(Gemma2Config(sliding_window=64)), 512)
    assert len(reasons) == 1 and "soft-capping" in reasons[0]


def test_a_window_is_applied_within_each_row():
    """Rows of 12 and 3 tokens under a window of 4: the long row attends to its last 4 positions (transformers'
    convention, key j seen from query i when i - 4 < j <= i), the short one is plain causal."""
    rows = _rows([12, 3])
    q, k, v = (torch.cat([r[i] for r in rows], dim=2) for i in range(3))
    bounds = torch.tensor([0, 12, 15], dtype=torch.int32)
    windowed, _ = padding_free.varlen_attention(_Attn().eval(), q, k, v, None, cu_seq_lens_q=bounds, sliding_window=4)
    i = torch.arange(12)
    band = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < 4)
    expected = [torch.nn.functional.scaled_dot_product_attention(
        rows[0][0], rows[0][1].repeat_interleave(2, 1), rows[0][2].repeat_interleave(2, 1), attn_mask=band),
        torch.nn.functional.scaled_dot_product_attention(
        rows[1][0], rows[1][1].repeat_interleave(2, 1), rows[1][2].repeat_interleave(2, 1), is_causal=True)]
    torch.testing.assert_close(windowed, torch.cat(expected, dim=2).transpose(1, 2), rtol=1e-5, atol=1e-6)
    plain, _ = padding_free.varlen_attention(_Attn().eval(), q, k, v, None, cu_seq_lens_q=bounds)
    wide, _ = padding_free.varlen_attention(_Attn().eval(), q, k, v, None, cu_seq_lens_q=bounds, sliding_window=12)
    torch.testing.assert_close(wide, plain)  # a window as long as the longest row masks nothing
    assert not torch.allclose(windowed, plain)


def test_per_row_attention_refuses_what_it_cannot_apply():
    rows = _rows([12, 5])
    q, k, v = (torch.cat([r[i] for r in rows], dim=2) for i in range(3))
    bounds = torch.tensor([0, 12, 17], dtype=torch.int32)
    with pytest.raises(padding_free.PerRowAttentionError, match="soft-capping"):
        padding_free.varlen_attention(_Attn().eval(), q, k, v, None, cu_seq_lens_q=bounds, softcap=50.0)


def test_the_record_says_which_kernel_ran_and_why_not_the_one_asked_for(monkeypatch):
    """HARNESS_VARLEN_KERNEL=1 asks for torch's varlen kernel: on CPU tensors per-row SDPA runs, and the record, read
    after attention ran, says so and why; where torch cannot import the kernel, it says that."""
    rows = _rows([5, 3])
    q, k, v = (torch.cat([r[i] for r in rows], dim=2) for i in range(3))
    bounds = torch.tensor([0, 5, 8], dtype=torch.int32)
    done = trl_changes.Applied(applied=["padding_free"])
    monkeypatch.delenv(padding_free.KERNEL_ENV, raising=False)
    padding_free.KERNELS_RAN.clear()
    assert done.record()["attention_kernel"] == "none: no packed batch ran"
    padding_free.varlen_attention(_Attn().eval(), q, k, v, None, cu_seq_lens_q=bounds)
    assert done.record()["attention_kernel"] == "per-row SDPA"  # not asked for the kernel
    monkeypatch.setenv(padding_free.KERNEL_ENV, "1")
    padding_free.KERNELS_RAN.clear()
    padding_free.varlen_attention(_Attn().eval(), q, k, v, None, cu_seq_lens_q=bounds)
    assert done.record()["attention_kernel"] == "per-row SDPA (HARNESS_VARLEN_KERNEL=1, but the tensors are on cpu, " \
                                                "not CUDA)"
    monkeypatch.setitem(sys.modules, "torch.nn.attention.varlen", None)  # a torch without the kernel
    kernel, ran = padding_free.varlen_kernel(SimpleNamespace(is_cuda=True))
    assert kernel is None and ran.startswith("per-row SDPA (HARNESS_VARLEN_KERNEL=1, but this torch cannot import")
