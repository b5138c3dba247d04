"""Count the floating-point operations of a model call with torch's FlopCounterMode.

Convention: a multiply-add counts as 2 FLOPs (FlopCounterMode's, and that of GPU peak figures).
Model cards often quote multiply-adds as "GFLOPs" (fvcore, thop): CLIP ViT-B/32's "4.4 GFLOPs" per
224px image is 4.4 G multiply-adds = about 8.8 GFLOPs here. Only matmuls, convolutions and
attention are counted (elementwise work is small and memory-bound).
"""

from __future__ import annotations


def _sdpa_formula(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _extra_formulas() -> dict:
    """SDPA kernels FlopCounterMode does not know (the CPU flash kernel) get its SDPA formula."""
    import torch

    names = ("_scaled_dot_product_flash_attention_for_cpu",)
    ops = (getattr(torch.ops.aten, name, None) for name in names)
    return {op: _sdpa_formula for op in ops if op is not None}


def count_flops(fn, *args, **kwargs) -> int:
    """FLOPs of one call fn(*args, **kwargs) (the call really runs, on whatever device it uses)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    with torch.compiler.set_stance("force_eager"), counter, torch.inference_mode():
        fn(*args, **kwargs)  # --compile'd functions run eagerly here: the count sees every op
    return int(counter.get_total_flops())
