"""Count the floating-point operations of a model call with torch's FlopCounterMode.

Convention: a multiply-add counts as 2 FLOPs (FlopCounterMode's, and that of GPU peak figures).
Model cards often quote multiply-adds as "GFLOPs" (fvcore, thop): CLIP ViT-B/32's "4.4 GFLOPs" per
224px image is 4.4 G multiply-adds = about 8.8 GFLOPs here. Only matmuls, convolutions and
attention are counted (elementwise work is small and memory-bound).
"""

from __future__ import annotations


def _sdpa_formula(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """torch's SDPA count, with grouped-query attention (fewer key/value heads than query heads, as
    in Qwen2 and Llama) counted as the query heads' attention over the shared keys and values:
    torch's own formula refuses those shapes, which the CUDA kernels receive unexpanded."""
    from torch.utils.flop_counter import sdpa_flop_count

    batch, heads = query_shape[:2]
    key_shape, value_shape = (batch, heads, *key_shape[2:]), (batch, heads, *value_shape[2:])
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# the forward SDPA kernels (query, key, value first): the CPU flash kernel FlopCounterMode does not
# know, and the CUDA ones, whose registered formula fails on grouped-query shapes
SDPA_KERNELS = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")


def _extra_formulas() -> dict:
    import torch

    ops = (getattr(torch.ops.aten, name, None) for name in SDPA_KERNELS)
    return {op: _sdpa_formula for op in ops if op is not None}


def count_flops(fn, *args, **kwargs) -> int:
    """FLOPs of one call fn(*args, **kwargs) (the call really runs, on whatever device it uses)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    with torch.compiler.set_stance("force_eager"), counter, torch.inference_mode():
        fn(*args, **kwargs)  # --compile'd functions run eagerly here: the count sees every op
    return int(counter.get_total_flops())
