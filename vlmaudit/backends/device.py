"""Pick the torch device and the inference precision."""

from __future__ import annotations

from vlmaudit.errors import UserError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"--device {name}: expected auto, cpu, cuda or cuda:N")
    return name


def cpu_supports_bf16() -> bool:
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str, device: str) -> str:
    """auto: fp16 weights on CUDA, bf16 autocast on CPUs with native bf16, else fp32."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


def autocast_context(device: str, precision: str):
    """bf16 autocast on CPU; on CUDA the weights are cast instead, so no autocast is needed."""
    import contextlib

    import torch

    if precision == "bf16" and device == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def weight_dtype(device: str, precision: str):
    import torch

    if device.startswith("cuda") and precision in ("fp16", "bf16"):
        return torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.float32


def to_device(tensor, device: str):
    """Host-to-device copy; non-blocking (asynchronous) from pinned memory on CUDA. Later work on
    the same stream waits for it, so the batch is safe to use right away."""
    if tensor.device.type == "cpu" and device.startswith("cuda"):
        return tensor.to(device, non_blocking=tensor.is_pinned())
    return tensor.to(device)


def compiled(fn):
    """torch.compile (--compile); shapes vary with the last batch of a shard, hence dynamic."""
    import torch

    return torch.compile(fn, dynamic=True)
