"""The memory estimate's arithmetic on known shapes, and the `plan` command's output and one-line errors."""

import json

import pytest

from harness.cli import main
from harness.cli.plan import largest_batch
from harness.core.errors import ConfigError
from harness.core.units import GIB as GiB
from harness.plan import memory_rules as rules
from harness.plan.budget import device_memory
from harness.plan.estimate import _bytes, estimate, estimate_for_cell
from harness.plan.shape import Shape, shipped_names, shipped_shape
from harness.spec.config import RunConfig
from harness.spec.methods import resolve_method

TINY = Shape(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=49152, head_dim=16, tie_word_embeddings=True, name="tiny")
KW = {"batch_size": 4, "seq_len": 512, "lora_r": 16, "gradient_checkpointing": False}


def test_shipped_configs_give_the_published_parameter_counts():
    assert shipped_names() == ["llama2-13b", "llama2-70b", "llama2-7b", "llama3-8b", "mistral-7b", "smollm2-135m"]
    counts = {"llama2-7b": 6_738_415_616, "llama2-13b": 13_015_864_320, "llama2-70b": 68_976_648_192,
              "llama3-8b": 8_030_261_248, "mistral-7b": 7_241_732_096, "smollm2-135m": 134_515_008}
    for name, n in counts.items():
        assert shipped_shape(name).n_params == n, name
    assert shipped_shape("meta-llama/Llama-2-7b-chat-hf").name == "llama2-7b"
    assert shipped_shape("no/such-model") is None


def test_bad_configs_are_one_line():
    with pytest.raises(ConfigError, match="has no intermediate_size"):
        Shape.from_config({"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 9})
    with pytest.raises(ConfigError, match="multiple of num_key_value_heads"):
        Shape.from_config({"hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
                           "num_attention_heads": 3, "num_key_value_heads": 2, "vocab_size": 9})


def test_weights_gradients_and_optimizer_states_of_llama2_7b():
    shape = shipped_shape("llama2-7b")
    n = shape.n_params
    full = estimate(shape, resolve_method("full"), **KW)
    assert full.breakdown["weights"] == 2 * n  # bf16, no master copy
    assert full.breakdown["optimizer"] == 4 * n  # AdamW: two bf16 states
    assert full.breakdown["gradients"] == 2 * n  # the peak is in the backward pass or the optimizer step
    t4 = estimate(shape, resolve_method("full"), mixed_precision="fp16", **KW)
    assert t4.breakdown["weights"] == 4 * n and t4.breakdown["optimizer"] == 8 * n  # fp32 master weights
    # LoRA r=16 on all 7 projections: r * (in + out) per projection, 32 layers, fp32
    adapters = 32 * 16 * (4 * (4096 + 4096) + 2 * (4096 + 11008) + (11008 + 4096))
    lora = estimate(shape, resolve_method("lora"), **KW)
    assert lora.breakdown["adapters"] == 4 * adapters == 4 * 39_976_960
    assert lora.breakdown["optimizer"] == 8 * adapters
    assert estimate(shape, resolve_method("lora"), optimizer="sgd", **KW).breakdown.get("optimizer", 0) == 0
    eight = estimate(shape, resolve_method("full"), optimizer="adamw_8bit", **KW).breakdown["optimizer"]
    assert 2 * n < eight < 2.05 * n  # 1 byte per state plus one fp32 absmax per 256 values


def test_nf4_is_smaller_than_int8_which_is_smaller_than_bf16():
    shape = shipped_shape("llama2-7b")
    w = {m: estimate(shape, resolve_method(m), **KW).breakdown for m in ("lora", "qlora4", "qlora8")}
    assert w["qlora4"]["weights"] < w["qlora8"]["weights"] < w["lora"]["weights"]
    linear = 32 * shape.layer_linear_params
    # NF4: half a byte per projection weight; embeddings, norms and lm_head in fp32 (prepare_model_for_kbit_training)
    assert w["qlora4"]["weights"] == linear // 2 + 4 * shape.other_params
    # double quantization: 8-bit absmax per 64 weights + fp32 absmax per 256 blocks + a 256-entry code per tensor
    assert linear / 64 < w["qlora4"]["quant_constants"] < linear / 64 * 1.03
    no_dq = estimate(shape, resolve_method("qlora4:bnb_4bit_use_double_quant=false"), **KW).breakdown
    assert no_dq["quant_constants"] == linear // 64 * 4  # an fp32 absmax per 64-weight block


def test_saved_activations_of_one_layer_match_the_probe():
    """Per token, full fine-tuning on CPU, no padding: what autograd was seen to save for the tiny model
    (saved_tensors_hooks, docs/memory.md): 2 norms x (fp32 input + normalised x + rsqrt), q/k/v/o's and
    gate/up's inputs, q, k, v, SDPA's output and logsumexp, and gate, act(gate), up and their product."""
    b = _bytes(resolve_method("full"), "cpu", None)
    norms = 2 * (4 * 64 + 4 * 64 + 4)
    attention = 4 * (64 + 32 + 32 + 64) + 4 * 4
    assert rules.layer_saved(TINY, resolve_method("full"), b, {}, 16, True, True, rows=1) == \
        norms + attention + 4 * (64 + 64) + 4 * 4 * 128 == 4376


def test_checkpointing_lowers_activations_and_batches_scale_them():
    shape = shipped_shape("llama2-7b")
    for method in ("full", "lora", "qlora4", "qlora8"):
        spec = resolve_method(method)
        plain = estimate(shape, spec, **KW)
        ckpt = estimate(shape, spec, **{**KW, "gradient_checkpointing": True})
        if method == "full":  # the peak is the end of the backward pass: every gradient, one layer's activations
            assert ckpt.phase == plain.phase == "backward"
            assert abs(ckpt.total_bytes - plain.total_bytes) < 0.001 * plain.total_bytes
        else:
            # (bitsandbytes' 8-bit matmul holds its inputs outside autograd, so checkpointing frees less)
            assert ckpt.breakdown["activations"] < plain.breakdown["activations"] / 3, method
            assert ckpt.total_bytes < plain.total_bytes, method
        two = estimate(shape, spec, **{**KW, "batch_size": 2}).breakdown["activations"]
        four = estimate(shape, spec, **{**KW, "batch_size": 4}).breakdown["activations"]
        assert four == 2 * two


def test_gradient_accumulation_keeps_gradients_through_later_forwards():
    shape, spec = shipped_shape("smollm2-135m"), resolve_method("full")
    kw = {**KW, "device": "cpu"}
    one, two = estimate(shape, spec, **kw), estimate(shape, spec, grad_accum=2, **kw)
    assert two.phase.startswith("loss") and two.breakdown["gradients"] == 4 * shape.n_params
    assert two.total_bytes > one.total_bytes


def test_adapter_dtype_follows_the_device():
    """trl casts QLoRA adapters to bf16; harness.cell.trl_changes casts them back to fp32 on CPU."""
    shape, spec = shipped_shape("llama2-7b"), resolve_method("qlora4")
    cpu = estimate(shape, spec, **{**KW, "device": "cpu"}).breakdown["adapters"]
    cuda = estimate(shape, spec, **KW).breakdown["adapters"]
    assert cpu == 2 * cuda == estimate(shape, resolve_method("lora"), **KW).breakdown["adapters"]


def test_largest_batch_is_the_boundary():
    shape, spec = shipped_shape("llama2-7b"), resolve_method("qlora4")
    kw = {"seq_len": 512, "lora_r": 16, "gradient_checkpointing": True}
    budget = 16 * GiB
    best = largest_batch(shape, spec, budget, **kw)
    assert best >= 1
    assert estimate(shape, spec, batch_size=best, **kw).total_bytes <= budget
    assert estimate(shape, spec, batch_size=best + 1, **kw).total_bytes > budget
    assert largest_batch(shape, resolve_method("full"), budget, **kw) == 0


def test_describe_is_one_line():
    est = estimate(shipped_shape("llama2-7b"), resolve_method("qlora4"), **KW)
    line = est.describe()
    assert line.startswith(f"est. peak {est.total_bytes / GiB:.1f} GiB") and "(nf4+dq)" in line
    assert "\n" not in line


def test_device_memory():
    assert device_memory("cpu") is None
    assert device_memory("cuda", "T4") == 16 * GiB
    assert device_memory("cuda", "H200") == 141 * GiB
    with pytest.raises(ConfigError, match="--gpu 'V100' is not known"):
        device_memory("cuda", "V100")


def test_estimate_for_cell(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 49152, "tie_word_embeddings": True}))
    cfg = RunConfig(max_seq_len=128, batch_size=2)
    est = estimate_for_cell(str(tmp_path), resolve_method("lora"), cfg, "cpu")
    assert est is not None and est.method == "lora" and est.total_bytes > 0
    hub = estimate_for_cell("meta-llama/Llama-2-7b-chat-hf", resolve_method("qlora4"), RunConfig(), "cpu")
    assert hub is not None and hub.weight_format == "nf4+dq"
    assert estimate_for_cell("someone/unknown-model", resolve_method("lora"), cfg, "cpu") is None
    # base's peak is the evaluation's generation
    assert estimate_for_cell(str(tmp_path), resolve_method("base"), cfg, "cpu").phase == "generation"


def test_plan_prints_every_method_with_its_fit(capsys):
    assert main(["plan", "--model", "llama2-7b", "--gpu", "T4", "--methods", "full,lora,qlora4,qlora8",
                 "--batch-size", "1", "--gradient-checkpointing"]) == 0
    out = capsys.readouterr().out
    table = out.split("memory:")[0]
    lines = {line.split()[0]: line.split() for line in table.splitlines() if line.split()}
    header = lines["method"]
    for col in ("weights", "gradients", "optimizer", "activations", "logits", "fits", "largest"):
        assert col in header
    assert "NO" in lines["full"] and "none" in lines["full"]  # fp32 master weights + grads + AdamW: 16 B/param
    assert "yes" in lines["qlora4"]  # QLoRA fits a 7B model on a 16 GiB T4 at 512 tokens
    assert "budget: 16.0 GiB" in out
    assert "FLOPs: 6N" in out and "FLOPs: 4N" in out and "35% MFU of 65 TFLOPS" in out


def test_plan_takes_time_from_measured_cells(tmp_path, capsys):
    for i, rate in enumerate((100.0, 300.0)):
        cell = tmp_path / f"run{i}" / "cnn" / "lora"
        cell.mkdir(parents=True)
        (cell / "config.json").write_text(json.dumps({"model": "smollm2-135m",
                                                      "method": {"name": "lora", "finetune": "lora"}}))
        (cell / "env.json").write_text(json.dumps({"device": "cpu", "gpu": None}))
        (cell / "metrics.json").write_text(json.dumps({"measurements": {"timing": {"train_tokens_per_s": rate}}}))
    assert main(["plan", "--model", "smollm2-135m", "--methods", "lora,full", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "200 training tok/s  measured: mean of 2 measured cells" in out
    assert "no measured cells and no --gpu" in out  # full has none, and a CPU has no FLOPs figure


def test_plan_names_the_measured_cells_it_could_not_read(tmp_path, capsys):
    """A cell whose records do not read is skipped for its tokens/s, and the plan says how many and names one."""
    for i, text in enumerate(('{"measurements": {"timing": {"train_tokens_per_s": 100.0}}}', '{"measurements": {',
                              '{"measurements": {}}')):
        cell = tmp_path / f"run{i}" / "cnn" / "lora"
        cell.mkdir(parents=True)
        (cell / "config.json").write_text(json.dumps({"model": "smollm2-135m",
                                                      "method": {"name": "lora", "finetune": "lora"}}))
        (cell / "env.json").write_text(json.dumps({"device": "cpu", "gpu": None}))
        (cell / "metrics.json").write_text(text)
    assert main(["plan", "--model", "smollm2-135m", "--methods", "lora", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "100 training tok/s  measured: mean of 1 measured cell " in out
    assert (f"skipped 2 earlier cells whose records do not read (e.g. {tmp_path / 'run1' / 'cnn' / 'lora'}: "
            "JSONDecodeError: ") in out


@pytest.mark.parametrize("argv, expected", [
    (["--model", "llama9-1t"], "--model 'llama9-1t': no config to read; shipped: llama2-13b, llama2-70b"),
    (["--model", "llama2-7b", "--memory-budget", "12XB"], "--memory-budget '12XB' is not a size"),
    (["--model", "llama2-7b", "--methods", "lora,qlora16"], "unknown method 'qlora16'"),
    (["--model", "llama2-7b", "--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--model", "llama2-7b", "--gpu", "T4", "--device", "cpu"], "--gpu plans for a CUDA device"),
])
def test_plan_bad_input_is_one_line(argv, expected, capsys):
    assert main(["plan", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err


def test_plan_unknown_gpu_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["plan", "--model", "llama2-7b", "--gpu", "V100"])
    assert exit_.value.code == 2
    assert "invalid choice: 'V100'" in capsys.readouterr().err


def test_dora_with_checkpointing_peaks_at_the_merge_on_cpu_holding_a_copy_of_the_adapted_weights():
    # Measured on SmolLM2, 4 x 128 tokens, checkpointing on (docs/memory.md): the peak was peft's DoRA merge after
    # training, 985.9 MiB, with a new float32 tensor for each of the 30 layers' adapted weights (3,538,944 elements
    # a layer) beside the file-mapped originals, and three weight-sized temporaries of the last module.
    shape = shipped_shape("smollm2-135m")
    kw = dict(batch_size=4, seq_len=128, lora_r=16, device="cpu", gradient_checkpointing=True)
    dora = estimate(shape, resolve_method("dora"), **kw)
    assert dora.phase == "merge"
    assert dora.breakdown["workspace"] == 30 * 3_538_944 * 4 + 3 * 1536 * 576 * 4
    assert 0.97 < dora.total_bytes / (985.9 * 2**20) < 1.03
    # No merge phase where nothing new is allocated for the merge's result: LoRA adds in place, QDoRA's adapter
    # stays unmerged; on CUDA each old weight is freed as its module merges, so only the temporaries remain.
    for method in ("lora", "qdora"):
        assert estimate(shape, resolve_method(method), **kw).phase != "merge"
    on_cuda = estimate(shape, resolve_method("dora"), **{**kw, "device": "cuda"})
    assert on_cuda.phase != "merge"
    assert not any(n.startswith("the CPU peak of this method") for n in dora.notes)


def test_pissa_on_cpu_counts_a_copy_of_the_adapted_weights_and_qdora_the_dequantized_ones():
    # Both measured at +402 MiB on SmolLM2 before these rules (docs/memory.md): one float32 copy of the 30 layers'
    # adapted weights (3,538,944 elements a layer).
    shape = shipped_shape("smollm2-135m")
    kw = dict(batch_size=4, seq_len=128, lora_r=16, device="cpu", gradient_checkpointing=False)
    copy = 30 * 3_538_944 * 4
    lora, pissa, olora = (estimate(shape, resolve_method(m), **kw) for m in ("lora", "pissa", "olora"))
    assert pissa.breakdown["weights"] - lora.breakdown["weights"] == copy
    assert olora.breakdown["weights"] == lora.breakdown["weights"]  # OLoRA writes its residual in place
    on_cuda = {m: estimate(shape, resolve_method(m), **{**kw, "device": "cuda"}).breakdown["weights"]
               for m in ("lora", "pissa")}
    assert on_cuda["pissa"] == on_cuda["lora"]  # copied off the file mapping, the originals freed
    with_dropout = estimate(shape, resolve_method("qdora"), lora_dropout=0.05, **kw)
    without = estimate(shape, resolve_method("qdora"), lora_dropout=0.0, **kw)
    assert with_dropout.total_bytes - without.total_bytes >= copy
