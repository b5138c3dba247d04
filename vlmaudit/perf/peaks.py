"""Dense fp16/bf16 tensor-core peaks (TFLOP/s, no sparsity) of known GPUs, for MFU.

Vendor datasheet figures; SXM parts unless the name says otherwise. Override with --peak-tflops.
"""

from __future__ import annotations

# Most specific first: the first name that occurs in torch.cuda.get_device_name() wins.
PEAK_TFLOPS = (
    ("GB200", 2500.0),
    ("B200", 2250.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("V100", 125.0),
    ("T4", 65.0),
)


def table_peak(device_name: str) -> tuple[float, str] | None:
    """(peak TFLOP/s, the table entry) for a CUDA device name, or None when unknown."""
    for name, peak in PEAK_TFLOPS:
        if name.lower() in device_name.lower():
            return peak, name
    return None


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    import platform

    return platform.processor() or platform.machine() or "cpu"


def resolve_peak(device: str, override: float | None) -> tuple[float | None, str]:
    """(peak TFLOP/s or None, where it came from)."""
    if override is not None:
        return override, "--peak-tflops"
    if not device.startswith("cuda"):
        return None, "unknown for CPUs (pass --peak-tflops)"
    found = table_peak(device_name(device))
    if found is None:
        return None, f"{device_name(device)!r} is not in the table (pass --peak-tflops)"
    return found[0], f"table: {found[1]} dense fp16/bf16"


def mfu(flops_per_sample: float, samples_per_s: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the peak."""
    if not peak_tflops or not flops_per_sample:
        return None
    return flops_per_sample * samples_per_s / (peak_tflops * 1e12)
