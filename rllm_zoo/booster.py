"""The LLM booster: one frozen transformer block between two trainable adapters.

This module depends on torch only. With ``z`` the encoder tokens, ``h = A_in(z)``
and ``B`` the frozen block (followed by a unit-weight RMSNorm, as in the R-LLM
code), the variants are::

    residual  z' = A_out(B(h) + h)        # R-LLM, the default
    out       z' = A_out(B(h)) + z
    hybrid    z' = A_out(B(h) + h) + z
    none      z' = A_out(B(h))            # LM4VisualEncoding
    mlp       z' = A_out(h) + z           # control, no LLM

Example:
    >>> import torch
    >>> from rllm_zoo.booster import LLMBooster
    >>> block = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU())
    >>> booster = LLMBooster(dim=32, block=block, llm_width=64)
    >>> booster(torch.randn(2, 50, 32)).shape
    torch.Size([2, 50, 32])
    >>> [n for n, _ in booster.named_trainable_parameters()]
    ['adapter_in.weight', 'adapter_out.weight']
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["VARIANTS", "LLMBooster", "UnitRMSNorm", "trainable_parameters"]

VARIANTS: tuple[str, ...] = ("residual", "out", "hybrid", "none", "mlp")


class UnitRMSNorm(nn.Module):
    """RMSNorm with a fixed unit weight (no parameters), computed in float32.

    Example:
        >>> UnitRMSNorm(eps=0.0)(torch.full((1, 2, 4), 3.0)).tolist()
        [[[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]]
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


def _block_width(block: nn.Module | None) -> int | None:
    """The token width a block declares (``block.width`` or ``block.info.width``), if any."""
    if block is None:
        return None
    width = getattr(block, "width", None)
    if width is None:
        width = getattr(getattr(block, "info", None), "width", None)
    return int(width) if width is not None else None


class LLMBooster(nn.Module):
    """Boost ViT tokens with one frozen LLM block (Lai et al., CVPR-W 2024).

    Args:
        dim: width of the encoder tokens ``z`` (the ViT embedding size).
        block: the frozen transformer block, mapping ``(B, N, llm_width)`` to the same
            shape (for example ``rllm_zoo.load_llm_block("smollm2")``). ``None`` only for
            the ``mlp`` variant.
        variant: one of :data:`VARIANTS`; ``residual`` is the paper's R-LLM.
        llm_width: width of the block's tokens. Inferred from ``block.width`` /
            ``block.info.width`` when omitted; required for ``mlp`` without a block.
        post_norm: apply a unit-weight RMSNorm after the block (the R-LLM code does).
        norm_eps: epsilon of that RMSNorm.
        freeze: keep the block frozen: no gradients for its parameters, always in eval
            mode, and never returned by :meth:`trainable_parameters`. ``False`` fine-tunes the
            block (its parameters get gradients), the ablation the paper found to hurt.
        adapter_bias: give the adapters a bias (the paper's adapters have none).

    Under ``torch.autocast`` the block runs in the caller's autocast dtype; outside of
    autocast it runs in the dtype of its parameters and the result is cast back to the
    input dtype.
    """

    def __init__(
        self,
        dim: int,
        block: nn.Module | None = None,
        variant: str = "residual",
        llm_width: int | None = None,
        post_norm: bool = True,
        norm_eps: float = 1e-6,
        freeze: bool = True,
        adapter_bias: bool = False,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown booster variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        declared = _block_width(block)
        if llm_width is not None and declared is not None and int(llm_width) != declared:
            raise ValueError(
                f"llm_width={llm_width} does not match the block's width {declared}; "
                f"drop llm_width or pass llm_width={declared}"
            )
        width = llm_width if llm_width is not None else declared
        if width is None:
            raise ValueError(
                "cannot tell the LLM width: pass llm_width=... or a block with a `width` attribute"
            )
        if block is None and variant != "mlp":
            raise ValueError(f"variant {variant!r} needs an LLM block; only 'mlp' runs without one")
        self.dim = dim
        self.llm_width = int(width)
        self.variant = variant
        self.freeze = bool(freeze)
        self.adapter_in = nn.Linear(dim, self.llm_width, bias=adapter_bias)
        self.adapter_out = nn.Linear(self.llm_width, dim, bias=adapter_bias)
        # The mlp control never calls a block: do not carry one around.
        self.block = block if variant != "mlp" else None
        self.post_norm = UnitRMSNorm(norm_eps) if (post_norm and self.block is not None) else nn.Identity()
        if self.block is not None:
            # frozen (the paper): no gradients, always eval; unfrozen: the block is fine-tuned
            self.block.requires_grad_(not self.freeze)
            if self.freeze:
                self.block.eval()

    def train(self, mode: bool = True) -> LLMBooster:
        super().train(mode)
        if self.block is not None and self.freeze:
            self.block.eval()  # a frozen block never runs dropout
        return self

    def run_block(self, h: torch.Tensor) -> torch.Tensor:
        """``B(h)``: the block followed by the optional unit RMSNorm."""
        assert self.block is not None
        if torch.is_autocast_enabled(h.device.type):
            out = self.block(h)
        else:
            p = next(self.block.parameters(), None)
            dtype = p.dtype if p is not None and p.is_floating_point() else h.dtype
            out = self.block(h.to(dtype))
        if out.shape != h.shape:
            raise RuntimeError(
                f"the LLM block returned shape {tuple(out.shape)} for input {tuple(h.shape)}; "
                "a booster block must map (B, N, llm_width) to the same shape"
            )
        return self.post_norm(out).to(h.dtype)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 3 or z.shape[-1] != self.dim:
            raise ValueError(f"expected tokens of shape (B, N, {self.dim}), got {tuple(z.shape)}")
        h = self.adapter_in(z)
        v = self.variant
        if v == "mlp":
            return self.adapter_out(h) + z
        b = self.run_block(h)
        if v == "residual":
            return self.adapter_out(b + h)
        if v == "out":
            return self.adapter_out(b) + z
        if v == "hybrid":
            return self.adapter_out(b + h) + z
        return self.adapter_out(b)  # none

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) pairs an optimizer should receive."""
        for name, p in self.named_parameters():
            if p.requires_grad:
                yield name, p

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters an optimizer should receive: the adapters (and the block if unfrozen)."""
        return [p for _, p in self.named_trainable_parameters()]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, llm_width={self.llm_width}, variant={self.variant!r}, freeze={self.freeze}"


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of any model that require gradients (frozen booster blocks excluded).

    Example:
        >>> opt = torch.optim.AdamW(trainable_parameters(torch.nn.Linear(2, 2)), lr=1e-3)
    """
    return [p for p in model.parameters() if p.requires_grad]
