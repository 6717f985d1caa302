"""``BoostedViViT``: a factorised (spatial, then "temporal") 3D transformer with an R-LLM booster.

A volume ``(B, C, D, H, W)`` is cut by MONAI's ``PatchEmbeddingBlock`` into a grid of
``nD x nH x nW`` patches (learnable positions over the whole grid). The depth axis plays the
role of time, as in the paper's ViViT (Arnab et al., 2021, factorised encoder):

1. spatial encoder: each of the ``nD`` slabs (``nH * nW`` tokens plus a spatial CLS token)
   runs through ``num_layers`` MONAI ``TransformerBlock`` and a ``LayerNorm``;
2. temporal encoder: the ``nD`` slab CLS tokens plus a temporal CLS token run through
   ``num_temporal_layers`` blocks;
3. the booster (frozen LLM block between trainable adapters), the final ``LayerNorm``,
   temporal-CLS pooling and a linear head.

Example:
    >>> import torch
    >>> from rllm_zoo.monai import BoostedViViT
    >>> net = BoostedViViT(in_channels=1, img_size=28, patch_size=7, hidden_size=64, mlp_dim=128,
    ...                    num_layers=1, num_heads=4, num_classes=3, llm="random:smollm2")
    >>> net(torch.rand(2, 1, 28, 28, 28)).shape
    torch.Size([2, 3])
    >>> net.forward_features(torch.rand(2, 1, 28, 28, 28)).shape   # temporal CLS + 4 slabs
    torch.Size([2, 5, 64])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..plug import attach_booster
from .base import BoostedNetwork, transformer_stack
from .boosting import build_booster
from .checks import (
    check_positive_int,
)

__all__ = ["BoostedViViT"]


class BoostedViViT(BoostedNetwork):
    """Factorised video-style transformer for volumes with an R-LLM booster (the paper's ViViT-S/M).

    Args:
        spatial_dims: must be 3; the first spatial axis (D) is the "temporal" axis.
        in_channels: input channels.
        img_size: ``(D, H, W)`` or one int.
        patch_size: ``(pD, pH, pW)`` or one int; ``pD`` sets the slab thickness. Must divide
            ``img_size``.
        hidden_size, mlp_dim, num_heads, dropout_rate, qkv_bias: as in :class:`BoostedViT`.
        num_layers: blocks of the spatial encoder.
        num_temporal_layers: blocks of the temporal encoder (default: ``num_layers``).
        num_classes: output logits.
        use_booster, llm, llm_layer, booster, freeze_llm, llm_post_norm, llm_width, llm_revision,
            llm_sha256, llm_config, llm_license: the booster
            options of :class:`BoostedViT`; the booster sits after the temporal encoder.

    ``forward(x)`` returns logits ``(B, num_classes)``; :meth:`forward_features` returns the
    final temporal tokens ``(B, 1 + nD, hidden_size)`` with the temporal CLS token first.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        img_size: int | Sequence[int] = 28,
        patch_size: int | Sequence[int] = 4,
        hidden_size: int = 192,
        mlp_dim: int = 768,
        num_layers: int = 2,
        num_heads: int = 3,
        num_classes: int = 2,
        dropout_rate: float = 0.0,
        num_temporal_layers: int | None = None,
        qkv_bias: bool = False,
        use_booster: bool = True,
        llm: str | nn.Module | None = "smollm2",
        llm_layer: int = -1,
        booster: str = "residual",
        freeze_llm: bool = True,
        llm_post_norm: bool = True,
        llm_width: int | None = None,
        llm_revision: str | None = None,
        llm_sha256: str | None = None,
        llm_config: dict | None = None,
        llm_license: str | None = None,
    ) -> None:
        super().__init__()
        self._init_patch_embedding(
            "BoostedViViT",
            spatial_dims,
            (3,),
            in_channels,
            img_size,
            patch_size,
            hidden_size,
            mlp_dim,
            num_heads,
            num_layers,
            num_classes,
            dropout_rate,
        )
        num_temporal_layers = num_layers if num_temporal_layers is None else num_temporal_layers
        check_positive_int(num_temporal_layers, "num_temporal_layers")
        self.spatial_cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.temporal_cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.spatial_blocks = transformer_stack(
            num_layers, hidden_size, mlp_dim, num_heads, dropout_rate, qkv_bias
        )
        self.spatial_norm = nn.LayerNorm(hidden_size)
        self.temporal_blocks = transformer_stack(
            num_temporal_layers, hidden_size, mlp_dim, num_heads, dropout_rate, qkv_bias
        )
        self.booster = build_booster(
            hidden_size,
            use_booster=use_booster,
            llm=llm,
            llm_layer=llm_layer,
            booster=booster,
            freeze_llm=freeze_llm,
            llm_post_norm=llm_post_norm,
            llm_width=llm_width,
            llm_revision=llm_revision,
            llm_sha256=llm_sha256,
            llm_config=llm_config,
            llm_license=llm_license,
        )
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, num_classes)
        # the generic mechanism (rllm_zoo.plug): booster.* keys and boost_site (the last block); no
        # hook: forward calls the booster itself, so TorchScript and torch.fx see the call
        attach_booster(self, self.booster, hook=False)

    def encode_slabs(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial encoder: one CLS token per depth slab, ``(B, nD, hidden_size)``."""
        if not torch.jit.is_scripting():
            self.check_input(x)  # eager only: skipped under TorchScript and tracing
        tokens = self.patch_embedding(x)  # (B, nD * nH * nW, hidden), depth-major order
        b = tokens.shape[0]
        n_slabs = self.grid[0]
        tokens = tokens.reshape(b * n_slabs, -1, self.hidden_size)
        cls = self.spatial_cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        for block in self.spatial_blocks:
            tokens = block(tokens)
        return self.spatial_norm(tokens[:, 0]).reshape(b, n_slabs, self.hidden_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final temporal tokens ``(B, 1 + nD, hidden_size)`` after booster and norm, CLS first."""
        slabs = self.encode_slabs(x)
        cls = self.temporal_cls_token.expand(slabs.shape[0], -1, -1)
        tokens = torch.cat([cls, slabs], dim=1)
        for block in self.temporal_blocks:
            tokens = block(tokens)
        return self.norm(self.run_booster(tokens))
