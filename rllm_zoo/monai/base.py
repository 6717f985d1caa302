"""What the boosted MONAI networks share: input checks, CLS pooling, trainable parameters.

Subclasses build ``self.head`` and ``self.booster`` and implement :meth:`forward_features`,
which returns the final (normalised) tokens with the CLS token first. Their ``forward`` calls
the booster itself (``self.booster(tokens)``, registered by
``rllm_zoo.plug.attach_booster(..., hook=False)``), so TorchScript, ``torch.jit.trace``,
``torch.fx``, ``torch.compile`` and ``torch.export`` all see the same graph as eager mode; the
input checks run in eager mode only (:func:`~rllm_zoo.monai.checks.is_tracing`).

Example:
    >>> import torch
    >>> from rllm_zoo.monai import create_network
    >>> net = create_network("rllm_vit3d_small", num_classes=2, use_booster=False).eval()
    >>> scripted = torch.jit.script(net)
    >>> x = torch.rand(1, 1, 28, 28, 28)
    >>> torch.allclose(scripted(x), net(x), atol=1e-5)
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from monai.networks.blocks import PatchEmbeddingBlock, TransformerBlock
from torch import nn

from ..plug import remove_booster_hooks
from .checks import (
    as_spatial_tuple,
    check_input,
    check_patch_grid,
    check_positive_int,
    check_spatial_dims,
    check_transformer_sizes,
    is_tracing,
)

__all__ = ["BoostedNetwork", "transformer_stack"]


class SplitHeads(nn.Module):
    """``(B, N, 3 * heads * d) -> (3, B, heads, N, d)``: MONAI's einops ``Rearrange`` of the qkv projection.

    Same values as ``Rearrange("b h (qkv l d) -> qkv b l h d", qkv=3, l=heads)``, written with
    tensor methods so that ``torch.fx.symbolic_trace`` can trace it (einops layers index a dict by
    ``x.ndim``, which fx proxies cannot do). No parameters: state dicts do not change.

    Example:
        >>> SplitHeads(4)(torch.rand(2, 5, 3 * 4 * 8)).shape
        torch.Size([3, 2, 4, 5, 8])
    """

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)


class MergeHeads(nn.Module):
    """``(B, heads, N, d) -> (B, N, heads * d)``: MONAI's ``Rearrange("b l h d -> b h (l d)")``, fx-traceable.

    Example:
        >>> MergeHeads()(torch.rand(2, 4, 5, 8)).shape
        torch.Size([2, 5, 32])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).flatten(2)


def transformer_stack(
    num_layers: int,
    hidden_size: int,
    mlp_dim: int,
    num_heads: int,
    dropout_rate: float = 0.0,
    qkv_bias: bool = False,
) -> nn.ModuleList:
    """``num_layers`` MONAI :class:`~monai.networks.blocks.TransformerBlock` (pre-norm, SDPA attention).

    Example:
        >>> blocks = transformer_stack(2, hidden_size=32, mlp_dim=64, num_heads=4)
        >>> len(blocks)
        2
    """
    blocks = nn.ModuleList(
        TransformerBlock(
            hidden_size,
            mlp_dim,
            num_heads,
            dropout_rate=dropout_rate,
            qkv_bias=qkv_bias,
            use_flash_attention=True,
        )
        for _ in range(num_layers)
    )
    for block in blocks:
        # MONAI builds this norm even without cross-attention; it never gets a gradient, so keep it
        # out of the optimizer and out of DDP's gradient reduction (which would fail on it).
        block.norm_cross_attn.requires_grad_(False)
        # the same reshapes as MONAI's einops layers, traceable by torch.fx (no parameters)
        block.attn.input_rearrange = SplitHeads(num_heads)
        block.attn.out_rearrange = MergeHeads()
    return blocks


class BoostedNetwork(nn.Module):
    """Base of :class:`BoostedViT` and :class:`BoostedViViT` (not used on its own).

    Attributes set by subclasses: ``in_channels`` (int), ``img_size`` (tuple of ints),
    ``booster`` (an :class:`~rllm_zoo.booster.LLMBooster` or ``None``) and ``head``. They carry no
    class-level annotations: TorchScript reads those and rejects ``X | None``.
    """

    # properties TorchScript must not compile (they return Python objects)
    __jit_unused_properties__ = ("llm_info", "num_tokens")

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        _drop_booster_hooks(self)

    def _init_patch_embedding(
        self,
        name: str,
        spatial_dims: int,
        allowed_dims: tuple[int, ...],
        in_channels: int,
        img_size: int | Sequence[int],
        patch_size: int | Sequence[int],
        hidden_size: int,
        mlp_dim: int,
        num_heads: int,
        num_layers: int,
        num_classes: int,
        dropout_rate: float,
    ) -> None:
        """Validate the arguments both families share, set the geometry, build ``patch_embedding``."""
        self.spatial_dims = check_spatial_dims(spatial_dims, allowed_dims, name)
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.img_size = as_spatial_tuple(img_size, self.spatial_dims, "img_size")
        self.patch_size = as_spatial_tuple(patch_size, self.spatial_dims, "patch_size")
        self.grid = check_patch_grid(self.img_size, self.patch_size)
        check_transformer_sizes(hidden_size, mlp_dim, num_heads, dropout_rate)
        check_positive_int(num_layers, "num_layers")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"num_classes must be an int >= 1 (the number of logits {name} outputs, e.g. 2 for a "
                f"binary task), got {num_classes!r}"
            )
        self.num_classes = num_classes
        self.hidden_size = hidden_size
        self.patch_embedding = PatchEmbeddingBlock(
            in_channels=in_channels,
            img_size=self.img_size,
            patch_size=self.patch_size,
            hidden_size=hidden_size,
            num_heads=num_heads,
            proj_type="conv",
            pos_embed_type="learnable",
            dropout_rate=dropout_rate,
            spatial_dims=self.spatial_dims,
        )

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ``ValueError`` that names the fix unless ``x`` is ``(B, in_channels, *img_size)``.

        Skipped while tracing (:func:`~rllm_zoo.monai.checks.is_tracing`); ``forward`` also skips it
        under TorchScript.
        """
        if is_tracing():
            return
        check_input(x, self.in_channels, self.img_size)

    def run_booster(self, tokens: torch.Tensor) -> torch.Tensor:
        """``self.booster(tokens)``, or ``tokens`` unchanged for the plain baseline (``booster=None``).

        The boost site (``self.boost_site``) is where subclasses call this: after the last block.
        """
        if self.booster is not None:
            return self.booster(tokens)
        return tokens

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` from the CLS token of :meth:`forward_features`."""
        return self.head(self.forward_features(x)[:, 0])

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) pairs an optimizer should receive: the frozen LLM block is left out."""
        for name, p in self.named_parameters():
            if p.requires_grad:
                yield name, p

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters an optimizer should receive (``requires_grad``); the frozen LLM block is left out.

        Example:
            >>> opt = torch.optim.AdamW(net.trainable_parameters(), lr=1e-4)   # doctest: +SKIP
        """
        return [p for _, p in self.named_trainable_parameters()]

    @property
    def llm_info(self) -> dict | None:
        """Where the booster's LLM block came from (``BlockInfo.to_dict()``), if it has one."""
        block = getattr(self.booster, "block", None) if self.booster is not None else None
        info = getattr(block, "info", None)
        return info.to_dict() if hasattr(info, "to_dict") else None


def _drop_booster_hooks(model: nn.Module) -> None:
    """Remove the forward hooks of networks pickled when the booster ran as a hook on the last block.

    The classes now call the booster in ``forward``; keeping an old hook would run it twice.
    """
    remove_booster_hooks(model)
