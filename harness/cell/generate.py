"""The transformers backend: batched greedy generation with left padding and a KV cache, and completion scoring.

Prompts are sorted by length so that each batch pads little, then results are put back in input order.
Generated-token counts stop at the first end-of-sequence token, so padding never inflates tokens/s.
``HFBackend`` serves these to a task through its Context (harness.spec.task.Backend); harness/cell/vllm.py is
the other backend.
"""

from __future__ import annotations

import time

from harness.core.console import progress_bar
from harness.spec.task import GenerationStats


def encode_prompts(tok, prompts: list[str]) -> list[list[int]]:
    # The chat template already holds the special tokens (BOS included where the model uses one).
    return [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]


def generate(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int, stats: GenerationStats,
             stop_strings: list[str] | None = None, label: str = "generate") -> list[str]:
    import torch
    from transformers import GenerationConfig

    if not prompts:
        return []
    device = next(model.parameters()).device
    ids = encode_prompts(tok, prompts)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    stop_ids = eos_ids(tok, model)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
                              pad_token_id=tok.pad_token_id, eos_token_id=stop_ids,
                              stop_strings=stop_strings or None)
    outputs: list[str | None] = [None] * len(prompts)
    model.eval()
    with progress_bar(label, len(prompts)) as advance, torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(ids[i]) for i in batch)
            input_ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding: the prompt ends where generation starts
                input_ids[row, width - len(ids[i]):] = torch.tensor(ids[i])
                attention[row, width - len(ids[i]):] = 1
            t0 = time.perf_counter()
            gen_kwargs = {"tokenizer": tok} if stop_strings else {}
            out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                 generation_config=config, **gen_kwargs)
            stats.seconds += time.perf_counter() - t0
            stats.calls += 1
            for row, i in enumerate(batch):
                new = out[row, width:].tolist()
                cut = next((k + 1 for k, t in enumerate(new) if t in stop_ids), len(new))
                stats.new_tokens += cut
                outputs[i] = tok.decode(new[:cut], skip_special_tokens=True)
            advance(len(batch), tok_s=f"{stats.tokens_per_s:.1f}")
    return [o.strip() for o in outputs]


def eos_ids(tok, model) -> list[int]:
    ids = {tok.eos_token_id}
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    return sorted(i for i in ids if i is not None)


def completion_nll(model, tok, prompts: list[str], completions: list[str], batch_size: int,
                   label: str = "score") -> list[tuple[float, int]]:
    """(summed negative log-likelihood, token count) of each completion given its prompt, EOS included.

    The completion is scored exactly as it is trained: prompt tokens, then completion tokens and EOS, with
    the loss on the completion only. Right padding; padded positions are masked out.
    """
    import torch

    device = next(model.parameters()).device
    seqs = []
    for p, c in zip(prompts, completions, strict=True):
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        c_ids = tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append((p_ids, c_ids))
    out: list[tuple[float, int]] = []
    model.eval()
    with progress_bar(label, len(seqs)) as advance, torch.inference_mode():
        for start in range(0, len(seqs), batch_size):
            batch = seqs[start:start + batch_size]
            width = max(len(p) + len(c) for p, c in batch)
            ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (p, c) in enumerate(batch):
                n = len(p) + len(c)
                ids[row, :n] = torch.tensor(p + c)
                labels[row, len(p):n] = torch.tensor(c)
                attn[row, :n] = 1
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            target = labels[:, 1:].to(device)
            mask = target != -100
            picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            nll = -(picked * mask).sum(dim=1)
            for row in range(len(batch)):
                out.append((float(nll[row]), int(mask[row].sum())))
            advance(len(batch))
    return out


class HFBackend:
    """``--generate-backend hf`` (the default): transformers' own generate on the cell's model, in this process."""

    name = "hf"

    def generate(self, model, tok, prompts: list[str], max_new_tokens: int, batch_size: int, stats: GenerationStats,
                 stop_strings: list[str] | None = None, label: str = "generate") -> list[str]:
        return generate(model, tok, prompts, max_new_tokens, batch_size, stats, stop_strings, label)

    def completion_nll(self, model, tok, prompts: list[str], completions: list[str], batch_size: int,
                       label: str = "score") -> list[tuple[float, int]]:
        return completion_nll(model, tok, prompts, completions, batch_size, label)

    def close(self) -> None:
        pass
