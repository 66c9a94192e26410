"""The device a run uses and the numbers it computes in: float32 on a CPU, bfloat16 or float16 mixed precision on
a GPU by its compute capability. The planner, the trainer and every record read these rules from here."""

from __future__ import annotations

from harness.core.errors import ConfigError


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA device is visible; use --device cpu or --device auto")
    return requested


# bfloat16 tensor cores arrived with Ampere, compute capability 8.0 (NVIDIA A100 Tensor Core GPU Architecture
# whitepaper; the CUDA C++ Programming Guide's capability table). A T4 (7.5) or V100 (7.0) only emulates bfloat16,
# and torch.cuda.is_bf16_supported() counts that emulation as support, so the capability is asked directly.
BF16_MIN_CAPABILITY = (8, 0)


def cuda_capability() -> tuple[int, int]:
    import torch

    return tuple(torch.cuda.get_device_capability())


def mixed_precision(device: str) -> str:
    """The trainer's mixed-precision mode: 'bf16' on CUDA from capability 8.0 up, 'fp16' below it (T4, V100:
    the QLoRA-on-T4 recipe), 'no' on CPU."""
    if device != "cuda":
        return "no"
    return "bf16" if cuda_capability() >= BF16_MIN_CAPABILITY else "fp16"


def compute_dtype(device: str):
    """float32 on CPU (bfloat16 matmuls are about 10x slower on these CPUs, see the stack notes); on CUDA the
    dtype of ``mixed_precision``: bfloat16 (the QLoRA recipe) from capability 8.0 up, float16 below."""
    import torch

    return {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision(device)]


def weight_dtype(spec, device: str):
    """The dtype the weights are loaded in: the compute dtype, except that full fine-tuning under float16 mixed
    precision keeps float32 master weights, because torch's GradScaler refuses to unscale float16 gradients
    ("Attempting to unscale FP16 gradients", torch/amp/grad_scaler.py). Adapters train in float32 anyway: peft
    upcasts them over float16 and bfloat16 bases (autocast_adapter_dtype)."""
    import torch

    if getattr(spec, "finetune", None) == "full" and mixed_precision(device) == "fp16":
        return torch.float32
    return compute_dtype(device)


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def precision_record(spec, device: str) -> dict:
    """What a cell records about its numerics, next to env.json's device."""
    record = {"weight_dtype": dtype_name(weight_dtype(spec, device)),
              "compute_dtype": dtype_name(compute_dtype(device)), "mixed_precision": mixed_precision(device)}
    if device == "cuda":
        record["cuda_capability"] = "{}.{}".format(*cuda_capability())
    return record
