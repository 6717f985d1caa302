"""LLMBooster: the five variants give exactly the paper's equations on hand-built blocks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rllm_zoo import VARIANTS, LLMBooster, UnitRMSNorm, trainable_parameters

DIM, WIDTH = 12, 20


class Doubler(nn.Module):
    """A hand-built 'block': B(h) = 2 h + w, with one parameter and a declared width."""

    width = WIDTH

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((WIDTH,), 0.5))
        self.drop = nn.Dropout(0.9)

    def forward(self, h):
        return self.drop(2 * h + self.w)


def rms(x, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


@pytest.mark.parametrize("post_norm", [False, True])
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_equations(variant, post_norm):
    torch.manual_seed(0)
    booster = LLMBooster(DIM, Doubler(), variant=variant, post_norm=post_norm)
    booster.train()  # the frozen block must still skip dropout
    z = torch.randn(3, 7, DIM)
    a_in, a_out = booster.adapter_in, booster.adapter_out
    h = a_in(z)
    b = 2 * h + 0.5
    if post_norm:
        b = rms(b)
    expected = {
        "residual": a_out(b + h),
        "out": a_out(b) + z,
        "hybrid": a_out(b + h) + z,
        "none": a_out(b),
        "mlp": a_out(h) + z,
    }[variant]
    torch.testing.assert_close(booster(z), expected, atol=1e-6, rtol=1e-6)


def test_mlp_variant_needs_no_block_and_holds_none():
    booster = LLMBooster(DIM, None, variant="mlp", llm_width=WIDTH)
    assert booster.block is None
    assert booster(torch.randn(2, 3, DIM)).shape == (2, 3, DIM)
    assert LLMBooster(DIM, Doubler(), variant="mlp").block is None


def test_freeze_keeps_block_out_of_the_optimizer():
    booster = LLMBooster(DIM, Doubler())
    trainable = booster.trainable_parameters()
    assert {id(p) for p in trainable} == {id(booster.adapter_in.weight), id(booster.adapter_out.weight)}
    assert not booster.block.w.requires_grad
    assert trainable_parameters(nn.Sequential(booster)) == trainable
    z = torch.randn(2, 4, DIM, requires_grad=True)
    booster(z).sum().backward()
    assert booster.block.w.grad is None
    assert booster.adapter_in.weight.grad is not None and z.grad is not None
    booster.train()
    assert booster.training and not booster.block.training


def test_unfrozen_block_trains():
    booster = LLMBooster(DIM, Doubler(), freeze=False)
    assert any(p is booster.block.w for p in booster.trainable_parameters())
    booster(torch.randn(2, 4, DIM)).sum().backward()
    assert booster.block.w.grad is not None


def test_block_runs_under_callers_autocast_dtype():
    seen = {}

    class Probe(nn.Module):
        width = WIDTH

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(WIDTH, WIDTH)

        def forward(self, h):
            out = self.lin(h)
            seen["dtype"] = out.dtype
            return out

    booster = LLMBooster(DIM, Probe())
    z = torch.randn(2, 5, DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = booster(z)
    assert seen["dtype"] == torch.bfloat16 and y.shape == z.shape
    booster(z)
    assert seen["dtype"] == torch.float32
    # a bf16-stored block is fed bf16 outside autocast, and the result returns to fp32
    booster.block.to(torch.bfloat16)
    assert booster(z).dtype == torch.float32 and seen["dtype"] == torch.bfloat16


def test_unit_rmsnorm_matches_formula():
    x = torch.randn(4, 9, 16)
    torch.testing.assert_close(UnitRMSNorm(1e-5)(x), rms(x, 1e-5))
    assert list(UnitRMSNorm().parameters()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(variant="residul"), "unknown booster variant 'residul'; choose one of residual"),
        (dict(llm_width=32), "llm_width=32 does not match the block's width 20"),
        (dict(block=None), "variant 'residual' needs an LLM block"),
        (dict(block=nn.Identity()), "cannot tell the LLM width"),
    ],
)
def test_bad_arguments_have_clear_errors(kwargs, match):
    args = dict(dim=DIM, block=Doubler())
    args.update(kwargs)
    if args["block"] is None:
        args["llm_width"] = WIDTH
    with pytest.raises(ValueError, match=match):
        LLMBooster(**args)


def test_wrong_token_width_is_reported():
    booster = LLMBooster(DIM, Doubler())
    with pytest.raises(ValueError, match=r"expected tokens of shape \(B, N, 12\), got \(2, 3, 5\)"):
        booster(torch.randn(2, 3, 5))


def test_block_returning_wrong_shape_is_reported():
    class Bad(nn.Module):
        width = WIDTH

        def forward(self, h):
            return h[..., :3]

    with pytest.raises(RuntimeError, match="must map \\(B, N, llm_width\\) to the same shape"):
        LLMBooster(DIM, Bad())(torch.randn(1, 2, DIM))


def test_frozen_block_is_held_as_buffers_under_the_same_names():
    from rllm_zoo.booster import frozen_state_names, parameter_counts

    frozen, tuned = LLMBooster(DIM, Doubler()), LLMBooster(DIM, Doubler(), freeze=False)
    assert set(frozen.state_dict()) == set(tuned.state_dict())  # checkpoints fit both ways
    assert not list(frozen.block.parameters()) and [n for n, _ in frozen.block.named_buffers()] == ["w"]
    assert frozen_state_names(frozen) == {"block.w"} and frozen_state_names(tuned) == set()
    assert parameter_counts(frozen) == (2 * DIM * WIDTH, WIDTH)
    assert parameter_counts(tuned) == (2 * DIM * WIDTH + WIDTH, 0)
    frozen.load_state_dict(tuned.state_dict())  # strict: same keys
    # the contract timm checks: every parameter gets a gradient, the frozen block needs none
    frozen(torch.randn(2, 3, DIM)).sum().backward()
    assert all(p.grad is not None for p in frozen.parameters())
    frozen.set_frozen(False)
    assert [n for n, _ in frozen.block.named_parameters()] == ["w"] and frozen.block.w.requires_grad
    frozen.set_frozen(True)
    assert not list(frozen.block.parameters())


@pytest.mark.parametrize("variant", VARIANTS)
def test_booster_scripts_traces_exports_like_eager(variant, tiny_llm_dir):
    """With a LLaMA-family block (native twin): script, trace, fx, compile, export, meta == eager."""
    import rllm_zoo

    folder = str(tiny_llm_dir("llama"))
    block = rllm_zoo.load_llm_block(folder, layer=1) if variant != "mlp" else None
    booster = LLMBooster(DIM, block, variant=variant, llm_width=64).eval()
    z = torch.randn(2, 5, DIM)
    z3 = torch.randn(3, 7, DIM)
    with torch.no_grad():
        ref, ref3 = booster(z), booster(z3)
        runs = {
            "script": torch.jit.script(booster),
            "trace": torch.jit.trace(LLMBooster(DIM, block, variant=variant, llm_width=64).eval(), z),
            "fx": torch.fx.symbolic_trace(booster),
            "export": torch.export.export(booster, (z,)).module(),
        }
        runs["trace"].load_state_dict(booster.state_dict())
        for name, fn in runs.items():
            torch.testing.assert_close(fn(z), ref, atol=1e-5, rtol=1e-5, msg=name)
        torch.testing.assert_close(runs["script"](z3), ref3, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(runs["trace"](z3), ref3, atol=1e-5, rtol=1e-5)  # not frozen to one shape
        compiled = torch.compile(booster, fullgraph=True)
        torch.testing.assert_close(compiled(z), ref, atol=1e-5, rtol=1e-5)
    with torch.device("meta"):
        meta_block = rllm_zoo.load_llm_block(folder, layer=1) if variant != "mlp" else None
        meta = LLMBooster(DIM, meta_block, variant=variant, llm_width=64)
        out = meta(torch.randn(2, 5, DIM))
    assert out.device.type == "meta" and out.shape == ref.shape
