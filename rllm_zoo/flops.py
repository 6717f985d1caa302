"""FLOP counting that sees every attention kernel: ``torch.utils.flop_counter`` plus CPU SDPA.

``torch.utils.flop_counter.FlopCounterMode`` knows the CUDA attention kernels, but on the CPU
``F.scaled_dot_product_attention`` (used by timm's and MONAI's attention) dispatches to
``aten._scaled_dot_product_flash_attention_for_cpu``, which it does not count: QK^T and AV
would silently drop out of every ViT's total. :func:`flop_counter` adds that kernel and its
backward, with torch's own SDPA formulas. A multiply-add counts as 2 FLOPs.

Example:
    >>> import torch
    >>> q = torch.randn(1, 2, 10, 8)
    >>> with flop_counter() as counter:
    ...     _ = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    >>> counter.get_total_flops()  # 2 * (10 * 10 * 8) for QK^T and again for AV, 2 heads, 2 per MAC
    6400
    >>> block_flops({"Net.booster.block": {"mm": 10}, "Net.booster.block.layer": {"mm": 10}, "Net": {"mm": 30}})
    10
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

__all__ = ["block_flops", "flop_counter"]


def _sdpa_cpu(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward(
    grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _cpu_attention_mapping() -> dict[Any, Any]:
    ops = torch.ops.aten
    mapping = {}
    for name, formula in (
        ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_cpu_backward),
    ):
        if hasattr(ops, name):  # present in every torch this project supports; checked for safety
            mapping[getattr(ops, name)] = formula
    return mapping


def flop_counter(display: bool = False, depth: int | None = None) -> FlopCounterMode:
    """A ``FlopCounterMode`` that also counts CPU scaled-dot-product attention (forward and backward).

    Use it like torch's: ``with flop_counter() as c: model(x)``, then ``c.get_total_flops()`` or,
    per module, ``c.get_flop_counts()``. Backward passes run inside the context are counted too.
    """
    return FlopCounterMode(display=display, depth=depth, custom_mapping=_cpu_attention_mapping())


def block_flops(flop_counts: dict[str, dict[Any, int]], suffix: str = "booster.block") -> int:
    """FLOPs spent inside the LLM block, from ``counter.get_flop_counts()`` (the module named ``*suffix``)."""
    return sum(sum(ops.values()) for name, ops in flop_counts.items() if name.endswith(suffix))
