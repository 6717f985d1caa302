"""FLOP counting sees CPU attention, and the block's training cost is counted inside the block."""

from __future__ import annotations

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import rllm_zoo  # noqa: F401
from rllm_zoo.flops import block_flops, flop_counter


def _explicit_attention(q, k, v):
    return ((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5).softmax(-1) @ v


def test_cpu_sdpa_forward_counts_like_explicit_matmuls():
    q, k, v = (torch.randn(2, 3, 17, 8) for _ in range(3))
    with FlopCounterMode(display=False) as plain:
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
    with flop_counter() as ours:
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
    with flop_counter() as explicit:
        _explicit_attention(q, k, v)
    assert plain.get_total_flops() == 0  # what torch alone sees of CPU attention
    assert ours.get_total_flops() == explicit.get_total_flops() == 2 * 2 * (2 * 3 * 17 * 17 * 8)


def test_cpu_sdpa_backward_is_counted():
    q, k, v = (torch.randn(1, 2, 9, 4, requires_grad=True) for _ in range(3))
    with flop_counter() as fwd:
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
    with flop_counter() as both:
        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
    # torch's formula for the fused backward: QK^T recomputed, then dV, dP, dQ, dK (5 products)
    assert both.get_total_flops() == fwd.get_total_flops() * 7 // 2


def test_vit_count_includes_its_attention():
    model = timm.create_model("rllm_vit_micro_patch4_28", booster=False).eval()
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad(), FlopCounterMode(display=False) as plain:
        model(x)
    with torch.no_grad(), flop_counter() as ours:
        model(x)
    tokens, dim, depth = 50, model.embed_dim, len(model.blocks)
    assert ours.get_total_flops() - plain.get_total_flops() == depth * 2 * 2 * tokens * tokens * dim


def test_frozen_block_training_flops_are_counted_inside_the_block():
    x = torch.randn(1, 3, 28, 28)
    ratios = {}
    for freeze in (True, False):
        model = timm.create_model("rllm_vit_micro_patch4_28", llm="random:smollm2", freeze_llm=freeze)
        with torch.no_grad(), flop_counter() as fwd:
            model.eval()(x)
        with flop_counter() as train:
            model.train()(x).sum().backward()
        forward = block_flops(fwd.get_flop_counts())
        assert 0 < forward < fwd.get_total_flops()
        ratios[freeze] = block_flops(train.get_flop_counts()) / forward
    # frozen: forward + input gradients (2x) plus the attention kernel's recompute; unfrozen: + weight grads
    assert 2.0 < ratios[True] < 2.1 and 3.0 < ratios[False] < 3.1
