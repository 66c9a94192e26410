"""The lean training path must compute exactly what trl's path computes: same attention per row, same
log-probabilities, loss and gradients, same token counts; only the work on padding and prompts goes."""

import pytest
import torch

from harness import lean


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
    packed, _ = lean.varlen_attention(_Attn().eval(), q, k, v, None, cu_seq_lens_q=bounds)
    expected = torch.cat([torch.nn.functional.scaled_dot_product_attention(
        rq, rk.repeat_interleave(2, 1), rv.repeat_interleave(2, 1), is_causal=True) for rq, rk, rv in rows], dim=2)
    assert packed.shape == (1, sum(lengths), 4, 8)
    torch.testing.assert_close(packed, expected.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_varlen_attention_without_row_bounds_is_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v = (torch.cat(t, dim=0) for t in zip(*_rows([6, 6])))
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool).tril()
    mask[1, :, :, :2] = False  # left padding in the second row
    ours, _ = lean.varlen_attention(_Attn().eval(), q, k, v, mask)
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
            assert lean.compact_lm_head(model)
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
    lean.compact_lm_head(model)
    torch.testing.assert_close(model(input_ids=ids).logits, before)


def test_compact_head_declines_scaled_logits():
    model = _tiny_lm()
    model.config.final_logit_softcapping = 30.0
    assert not lean.compact_lm_head(model)


@pytest.mark.parametrize(("inner", "outer", "kept"), [(576, 1536, True), (576, 16, False), (16, 576, False)])
def test_selective_policy_keeps_large_matmuls_only(inner, outer, kept):
    from torch.utils.checkpoint import CheckpointPolicy

    a, b = torch.empty(4, inner), torch.empty(inner, outer)
    policy = lean._policy(None, torch.ops.aten.mm.default, a, b)
    assert (policy == CheckpointPolicy.MUST_SAVE) is kept


def test_selective_checkpointing_keeps_loss_and_gradients():
    ids = torch.randint(0, 300, (2, 10), generator=torch.Generator().manual_seed(2))
    grads = []
    for selective in (False, True):
        model = _tiny_lm(hidden=96)  # large enough that the policy keeps some matmuls
        if selective:
            lean.selective_checkpointing(model)
        model.train()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads.append((loss.detach(), model.model.layers[0].mlp.up_proj.weight.grad.clone()))
    torch.testing.assert_close(grads[1][0], grads[0][0])
    torch.testing.assert_close(grads[1][1], grads[0][1])


def test_allocator_tuning_reports_success_on_glibc():
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert lean.tune_allocator() is True
