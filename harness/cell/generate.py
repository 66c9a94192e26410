"""The transformers backend: batched greedy generation with left padding and a KV cache, and completion scoring.

Prompts are sorted by length so that each batch pads little, then results are put back in input order.
Generated-token counts stop at the first end-of-sequence token, so padding never inflates tokens/s.
``HFBackend`` serves these to a task through its Context (harness.spec.task.Backend); harness/cell/vllm.py is
the other backend.

**A shared prefix, computed once.** Every prompt of a few-shot cell starts with the same tokens: the system prompt
and the shots. With ``prefix_cache``, those tokens run through the model once, and each batch starts from a copy of
their KV cache; a batch is then laid out as [prefix][padding][the rest of each prompt] instead of
[padding][prompt], and the attention mask and the positions (transformers counts them from the mask) make the two
layouts the same computation. Outputs are token-identical to recomputing the prefix (tests/unit/test_generation.py;
docs/benchmarks.md measures it on SmolLM2). Reuse is recorded after generation, from the batches whose forward passes
read the copy they were given (it grew past the prefix). Where the model's cache cannot be reused this way, generation
steps aside to the plain path, and the record counts each call that did and why.
"""

from __future__ import annotations

import copy
import inspect
import time

from harness.core.console import progress_bar
from harness.spec.task import GenerationStats


def encode_prompts(tok, prompts: list[str]) -> list[list[int]]:
    # The chat template already holds the special tokens (BOS included where the model uses one).
    return [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]


def generate(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int, stats: GenerationStats,
             stop_strings: list[str] | None = None, label: str = "generate", prefix_for=None) -> list[str]:
    """Greedy answers to ``prompts``; ``prefix_for(token ids)`` may give the ``Prefix`` they all start with."""
    import torch
    from transformers import GenerationConfig

    if not prompts:
        return []
    device = next(model.parameters()).device
    ids = encode_prompts(tok, prompts)
    prefix = prefix_for(model, ids) if prefix_for is not None else None
    shared = prefix.length if prefix is not None else 0
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
            for row, i in enumerate(batch):  # left padding (after a shared prefix): each prompt ends where it generates
                rest = ids[i][shared:]
                input_ids[row, :shared] = torch.tensor(ids[i][:shared], dtype=torch.long)
                attention[row, :shared] = 1
                input_ids[row, width - len(rest):] = torch.tensor(rest)
                attention[row, width - len(rest):] = 1
            t0 = time.perf_counter()
            gen_kwargs = {"tokenizer": tok} if stop_strings else {}
            if prefix is not None:
                cache = gen_kwargs[prefix.keyword] = prefix.copy(len(batch))
            out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                 generation_config=config, **gen_kwargs)
            if prefix is not None:
                prefix.read_by(cache, len(batch))
            stats.seconds += time.perf_counter() - t0
            stats.calls += 1
            for row, i in enumerate(batch):
                new = out[row, width:].tolist()
                cut = next((k + 1 for k, t in enumerate(new) if t in stop_ids), len(new))
                stats.new_tokens += cut
                outputs[i] = tok.decode(new[:cut], skip_special_tokens=True)
            advance(len(batch), tok_s=f"{stats.tokens_per_s:.1f}")
    return [o.strip() for o in outputs]


MIN_PREFIX = 16  # shared tokens below which a prefix is not worth a separate forward pass (the harness's choice)


def shared_length(ids: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own to start generating from."""
    if not ids:
        return 0
    limit = min(len(x) for x in ids) - 1
    n = 0
    while n < limit and all(x[n] == ids[0][n] for x in ids):
        n += 1
    return n


class Prefix:
    """The KV cache of a prompt prefix, computed once; ``copy(n)`` gives a batch of ``n`` its own copy, and
    ``read_by`` counts, after the batch's generation, the prompt tokens that copy spared the model."""

    def __init__(self, cache, length: int, keyword: str):
        self.cache, self.length, self.keyword = cache, length, keyword
        self.reused_tokens = 0  # prompt tokens the forward passes did not recompute
        self.unread_rows = 0  # rows whose generation did not read the copy, and recomputed the prefix

    @classmethod
    def of(cls, model, tokens: list[int]) -> Prefix:
        import torch
        from transformers import DynamicCache

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        keyword = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        cache = DynamicCache(config=base.config)
        device = next(model.parameters()).device
        model.eval()
        with torch.inference_mode():
            model(input_ids=torch.tensor([tokens], device=device), use_cache=True, **{keyword: cache})
        return cls(cache, len(tokens), keyword)

    def copy(self, n: int):
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(n)
        return cache

    def read_by(self, cache, rows: int) -> None:
        """After generating ``rows`` rows from ``cache`` (a ``copy``): generation appends every position it computes
        to the cache it reads, so one that grew past the prefix was read, and its rows did not recompute the prefix."""
        if cache.get_seq_length() > self.length:
            self.reused_tokens += self.length * rows
        else:
            self.unread_rows += rows


def prefix_blockers(model) -> list[str]:
    """What keeps a model's prompt prefix from being cached once and reused (none for the families the harness
    covers with full attention or sliding windows; recurrent or encoder-decoder models do not fit the layout)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    out = []
    if getattr(config, "is_encoder_decoder", False):
        out.append("an encoder-decoder model")
    if "attention_mask" not in inspect.signature(base.forward).parameters:
        out.append("a forward pass that takes no attention mask")
    return out


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
    """``--generate-backend hf`` (the default): transformers' own generate on the cell's model, in this process.

    ``prefix_cache``: compute the prefix that all prompts of a call share once (see the module docstring);
    ``prefix_record`` then says what every call did: ``applied`` (some call's generation read a reused prefix),
    ``calls`` that did, the prompt tokens they spared (``reused_tokens``), the longest prefix (``shared_tokens``) and
    the seconds spent computing prefixes (``prefill_s``); and the calls that stepped aside by why (``stepped_aside``),
    with the latest why (``why``; None when none did)."""

    name = "hf"

    def __init__(self, prefix_cache: bool = False):
        self.prefix_cache = prefix_cache
        self.prefix_record: dict = {}

    def generate(self, model, tok, prompts: list[str], max_new_tokens: int, batch_size: int, stats: GenerationStats,
                 stop_strings: list[str] | None = None, label: str = "generate") -> list[str]:
        if not self.prefix_cache:
            return generate(model, tok, prompts, max_new_tokens, batch_size, stats, stop_strings, label)
        built: list[Prefix] = []
        outputs = generate(model, tok, prompts, max_new_tokens, batch_size, stats, stop_strings, label,
                           lambda m, ids: self._prefix(m, ids, built))
        for prefix in built:  # after generation: what its forward passes were spared, not what was offered
            self._record_use(prefix)
        return outputs

    def _prefix(self, model, ids: list[list[int]], built: list) -> Prefix | None:
        blockers = prefix_blockers(model)
        if blockers:
            self._step_aside("the model has " + " and ".join(blockers))
            return None
        n = shared_length(ids)
        if n < MIN_PREFIX:
            self._step_aside(f"the prompts share fewer than {MIN_PREFIX} leading tokens")
            return None
        t0 = time.perf_counter()
        prefix = Prefix.of(model, ids[0][:n])
        self.prefix_record["prefill_s"] = self.prefix_record.get("prefill_s", 0.0) + time.perf_counter() - t0
        built.append(prefix)
        return prefix

    def _record_use(self, prefix: Prefix) -> None:
        record = self.prefix_record
        if prefix.reused_tokens:
            record.update(applied=True, calls=record.get("calls", 0) + 1,
                          reused_tokens=record.get("reused_tokens", 0) + prefix.reused_tokens,
                          shared_tokens=max(prefix.length, record.get("shared_tokens", 0)))
            record.setdefault("why", None)
        if prefix.unread_rows:
            self._step_aside("generation did not read the prefix's KV cache, and recomputed the prefix")

    def _step_aside(self, why: str) -> None:
        record = self.prefix_record
        record.setdefault("applied", False)
        record["why"] = why
        aside = record.setdefault("stepped_aside", {})
        aside[why] = aside.get(why, 0) + 1

    def completion_nll(self, model, tok, prompts: list[str], completions: list[str], batch_size: int,
                       label: str = "score") -> list[tuple[float, int]]:
        return completion_nll(model, tok, prompts, completions, batch_size, label)

    def close(self) -> None:
        pass
