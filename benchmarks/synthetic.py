"""Models and data with the right shapes and random values, for memory and speed measurements.

Memory and throughput depend on the architecture's shapes, not on the weights' values, so a public
configuration with random weights stands in for a gated checkpoint: nothing is downloaded, nothing is written
to disk. The quantized variants are made in memory with the same bitsandbytes modules and arguments as
transformers' ``from_pretrained(..., quantization_config=BitsAndBytesConfig(...))``
(tests/integration/test_gpu_bench.py checks that the two give the same layers, footprint and logits).
"""

from __future__ import annotations

import gc
import random

# meta-llama/Llama-2-7b-hf config.json (Touvron et al. 2023, Table 1 and the released config).
LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
                 tie_word_embeddings=False)
# The same architecture at test size: builds and trains in well under a second on a CPU.
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=512, max_position_embeddings=512, rms_norm_eps=1e-5,
            tie_word_embeddings=False)
SPECIAL = ("<unk>", "<s>", "</s>", "<pad>")  # token ids 0-3; words are w4 ... w{vocab-1}


def llama_config(shape: dict):
    from transformers import LlamaConfig

    return LlamaConfig(**shape)


def parameter_count(shape: dict) -> int:
    """Every parameter of the unquantized model (embeddings included), counted on the meta device."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in LlamaForCausalLM(llama_config(shape)).parameters())


def quantize_in_memory(model, spec, compute_dtype) -> None:
    """Swap every nn.Linear but lm_head for its bitsandbytes counterpart, quantizing the weights in place.

    Mirrors transformers' replace_with_bnb_linear and its Bnb4bitQuantize/Bnb8bitQuantize conversions:
    Params4bit quantizes when moved to a device, Int8Params when moved off the CPU (hence the CPU hop, as in
    transformers). One layer's float weight is alive at a time besides the quantized ones.
    """
    import bitsandbytes as bnb
    import torch

    for name, module in list(model.named_modules()):
        if type(module) is not torch.nn.Linear or name.rsplit(".", 1)[-1] == "lm_head":
            continue
        weight, device, bias = module.weight.data, module.weight.device, module.bias
        if spec.load_in_8bit:
            # threshold 6.0 and has_fp16_weights=False are BitsAndBytesConfig's defaults (LLM.int8()).
            new = bnb.nn.Linear8bitLt(module.in_features, module.out_features, bias is not None,
                                      has_fp16_weights=False, threshold=6.0, device="meta")
            new.weight = bnb.nn.Int8Params(weight.to("cpu"), requires_grad=False,
                                           has_fp16_weights=False).to(device)
        else:
            new = bnb.nn.Linear4bit(module.in_features, module.out_features, bias is not None, compute_dtype,
                                    compress_statistics=spec.bnb_4bit_use_double_quant,
                                    quant_type=spec.bnb_4bit_quant_type, quant_storage=torch.uint8,
                                    device="meta")
            new.weight = bnb.nn.Params4bit(weight, requires_grad=False,
                                           compress_statistics=spec.bnb_4bit_use_double_quant,
                                           quant_type=spec.bnb_4bit_quant_type, quant_storage=torch.uint8,
                                           module=new).to(device)
        if bias is not None:
            new.bias = torch.nn.Parameter(bias.data, requires_grad=False)
        new.requires_grad_(False)
        model.set_submodule(name, new)
        del weight, module
    # What from_pretrained sets on a bitsandbytes model (transformers/quantizers/base.py and the bnb quantizers,
    # all but is_quantized, which would make the Trainer look for the hf_quantizer object): peft and trl read
    # is_loaded_in_*bit to treat the model as k-bit, the Trainer quantization_method to leave it where it is.
    setattr(model, "is_loaded_in_8bit" if spec.load_in_8bit else "is_loaded_in_4bit", True)
    model.quantization_method = "bitsandbytes"  # QuantizationMethod.BITS_AND_BYTES, a str enum


def build_model(spec, shape: dict, device: str):
    """The base model as the harness loads it for ``spec``: random weights made directly on ``device`` in the
    harness's weight dtype for that device, quantized for 4/8-bit methods. LoRA and the k-bit preparation are
    left to harness.cell.training.train, as in every cell."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.cell.load import keep_4bit_unpacked
    from harness.spec.precision import compute_dtype, weight_dtype

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(llama_config(shape), dtype=weight_dtype(spec, device))
    if spec.quantized:
        quantize_in_memory(model, spec, compute_dtype(device))
        if device == "cpu" and spec.load_in_4bit:
            keep_4bit_unpacked(model)  # as harness.cell.load.load_model does on a CPU
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return model


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer over a whole vocabulary: 'w17' is token 17, so a row of n random words is n tokens.

    It stands in for a model's own tokenizer when only the vocabulary size matters (Llama-2's is gated).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL)} | {f"w{i}": i for i in range(len(SPECIAL), vocab_size)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def random_pairs(rows: int, seq: int, vocab_size: int, seed: int, mixed: bool = False) -> list[dict]:
    """Prompt/completion rows that tokenize to exactly ``seq`` tokens once trl appends EOS: half prompt, half
    completion, so the loss covers the second half of each row. ``mixed``: each row's length is drawn uniformly
    from seq/4 to seq instead, so that a padded batch pads (about 3/8 of its positions) and a padding-free one
    does not."""
    rng = random.Random(seed)

    def words(n: int) -> str:
        return " ".join(f"w{rng.randrange(len(SPECIAL), vocab_size)}" for _ in range(n))

    out = []
    for _ in range(rows):
        n = rng.randint(seq // 4, seq) if mixed else seq
        half = n // 2
        out.append({"prompt": words(half), "completion": " " + words(n - half - 1)})
    return out
