"""The conformance checks of one forward pass, on one tiny model of a family (harness/conformance/families.py).

* ``dropout``: one LoRA forward and backward with dropout on, through peft's dropout and through the fused one
  (harness/cell/lora_dropout.py), both drawing the same masks, on the adapter of each method the fused dropout
  applies to (``DROPOUT_METHODS``), the fused one put in by the decision a cell's training takes
  (harness/cell/trl_changes.py ``fuse_dropout``); compared: the gradient of every trainable parameter, held to
  ``compare.RTOL``. The fused masks differ from peft's own draws, so a training run with dropout cannot be compared
  step for step with plain trl; this check compares the computation under the same masks instead.
* ``generation``: batched greedy generation (left padding) against one ``generate`` per prompt.

Asserted by tests/integration/test_conformance.py and printed by benchmarks/conformance.py.
"""

from __future__ import annotations

from harness.cell import adapters, lora_dropout, trl_changes
from harness.cell.generate import generate
from harness.cell.load import load_model
from harness.conformance.checks import config, seed_lora_b
from harness.conformance.compare import deviation, require
from harness.spec.cell import cell_config
from harness.spec.methods import resolve_method
from harness.spec.task import Context, GenerationStats, get_task

# The methods whose adapters the fused dropout computes (harness/cell/trl_changes.py ``fuse_dropout``): each keeps
# LoRA's own forward, lora_B(lora_A(dropout(x))), whatever its scale (rsLoRA), optimizer (LoRA+), start (PiSSA,
# OLoRA, LoftQ) or base weights (4/8-bit); the dropout check holds each against peft's dropout. PiSSA and OLoRA train
# without dropout unless asked (harness/spec/methods.py), so they are checked with it asked for.
DROPOUT_METHODS = ("lora", "rslora", "lora+", "qlora4", "qlora8", "loftq", "pissa:lora_dropout=0.1",
                   "olora:lora_dropout=0.1")
# The trained methods the fused dropout leaves to peft, and why (trl_changes records the same in train.json).
NO_FUSED_DROPOUT = {"full": "no LoRA adapter",
                    "dora": "DoRA's magnitude and weight-norm path, which the fused dropout does not compute",
                    "qdora": "as dora"}


def dropout(folder, tok, method: str = "lora", p: float = 0.1) -> float:
    """The largest gradient deviation between peft's LoRA dropout and the fused one under the same masks, on
    ``method``'s adapter as a cell makes it: its LoraConfig fields and start, its base weights (float32 adapters over
    4/8-bit ones, as on a CPU cell), dropout ``p`` unless the method sets its own. The fused dropout is put in by
    trl_changes.fuse_dropout, the decision a cell's training takes: where it steps aside (DoRA), leaves an adapter
    unfused, or a trainable tensor gets no gradient, ``compare.ConformanceError`` says so."""
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training

    spec = resolve_method(method)
    cfg = cell_config(config(lora_dropout=p), spec)
    require(cfg.lora_dropout > 0, f"{method} trains without LoRA dropout; check {method}:lora_dropout={p} instead")
    keep = 1 - cfg.lora_dropout

    class SameMask(torch.nn.Module):
        """peft's dropout, drawing its mask as the fused function does (one draw from torch's generator each)."""

        def forward(self, x):
            return x * lora_dropout._keep_mask(x.shape, keep) / keep if self.training else x

    ids = torch.tensor([tok("Summarise the news: the council met on Monday and voted on the budget.")["input_ids"]])
    grads = []
    for fused in (True, False):
        torch.manual_seed(0)  # the same adapter start (LoRA's A, PiSSA's randomized SVD) for both
        model = load_model(str(folder), spec, "cpu")
        if spec.quantized:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model = get_peft_model(model, adapters.lora_config(spec, cfg, cfg.lora_dropout))
        if spec.init_lora_weights == "loftq":
            adapters.loftq_start(model, str(folder))
        if spec.init_lora_weights == "default":
            seed_lora_b(model)
        for q in model.parameters():
            if q.requires_grad:
                q.data = q.data.float()
        model.train()
        if fused:
            kind, why = trl_changes.fuse_dropout(model, "cpu")
            require(kind == "applied", f"{method}: the fused dropout was not applied ({kind}: {why})")
            require(not trl_changes.any_dropout(model), f"{method}: the fused dropout left adapters with peft's")
        else:
            swapped = 0
            for m in model.modules():
                if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict):
                    for name in list(m.lora_dropout):
                        m.lora_dropout[name] = SameMask()
                        swapped += 1
            require(swapped, f"{method}: the adapter has no dropout to compare with")
        torch.manual_seed(5)
        model(input_ids=ids, labels=ids).loss.backward()
        trainable = {n: q for n, q in model.named_parameters() if q.requires_grad}
        missing = [n for n, q in trainable.items() if q.grad is None]
        require(trainable and not missing, f"{method}: trainable tensors without a gradient: {missing or 'none'}")
        grads.append({n: q.grad.detach().float().clone() for n, q in trainable.items()})
    return deviation(grads[0], grads[1])


def generation(folder, tok, prompts: list[str], new_tokens: int = 8, device: str = "cpu") -> tuple[int, int]:
    """(prompts whose batched output, text and token count, equals their own generate's, prompts)."""
    model = load_model(str(folder), resolve_method("base"), device)
    stats = GenerationStats()
    batched = generate(model, tok, prompts, new_tokens, 3, stats)
    single, counts = [], 0
    for prompt in prompts:
        one = GenerationStats()
        single.append(generate(model, tok, [prompt], new_tokens, 1, one)[0])
        counts += one.new_tokens
    same = sum(a == b for a, b in zip(batched, single))
    return (same if stats.new_tokens == counts else 0), len(prompts)


def eval_prompts(tok, n: int = 6) -> list[str]:
    """Chat-rendered cnn prompts cut to different lengths, so a batch pads each differently."""
    task = get_task("cnn")
    ctx = Context(tok=tok, max_seq_len=256, max_new_tokens=8)
    prompts = [task.eval_prompt(r, ctx) for r in task.embedded("validation")[:n]]
    return [p[: len(p) * (i + 2) // (n + 2)] for i, p in enumerate(prompts)]
