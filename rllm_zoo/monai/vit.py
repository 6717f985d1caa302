"""``BoostedViT``: a MONAI ViT (2D or 3D) with an R-LLM booster before the final norm.

Layout: MONAI ``PatchEmbeddingBlock`` (conv patches + learnable positions), a CLS token,
``num_layers`` MONAI ``TransformerBlock``, the booster (one frozen LLM block between two
trainable adapters), the final ``LayerNorm``, CLS pooling and a linear head.

Example:
    >>> import torch
    >>> from rllm_zoo.monai import BoostedViT
    >>> net = BoostedViT(in_channels=1, img_size=28, patch_size=7, hidden_size=64, mlp_dim=128,
    ...                  num_layers=2, num_heads=4, num_classes=2, llm="random:smollm2")
    >>> net(torch.rand(2, 1, 28, 28, 28)).shape
    torch.Size([2, 2])
    >>> net.forward_features(torch.rand(2, 1, 28, 28, 28)).shape   # CLS + 4*4*4 patch tokens
    torch.Size([2, 65, 64])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..plug import attach_booster
from .base import BoostedNetwork, transformer_stack
from .boosting import build_booster

__all__ = ["BoostedViT"]


class BoostedViT(BoostedNetwork):
    """Vision transformer for 2D/3D classification with an R-LLM booster (Lai et al., CVPR-W 2024).

    Args:
        spatial_dims: 3 for volumes ``(B, C, D, H, W)`` (ViT3D), 2 for images ``(B, C, H, W)``.
        in_channels: input channels (1 for the 3D MedMNIST sets).
        img_size: input size, an int or one int per spatial axis.
        patch_size: patch size, an int or one per axis; must divide ``img_size``.
        hidden_size: token width.
        mlp_dim: hidden width of each transformer MLP.
        num_layers: transformer blocks.
        num_heads: attention heads (must divide ``hidden_size``).
        num_classes: output logits.
        dropout_rate: dropout in the patch embedding and the transformer blocks.
        qkv_bias: bias in the attention's qkv projection.
        use_booster: ``False`` gives the plain ViT baseline (no booster at all).
        llm: LLM source for :func:`rllm_zoo.load_llm_block` (default ``"smollm2"``, the embedded
            SmolLM2-135M; ``"random:smollm2"`` for the random-weights ablation), an ``nn.Module``
            block, or ``None`` for the no-LLM ``mlp`` control.
        llm_layer: layer of the LLM (``-1``: the last).
        booster: booster variant: ``residual`` (R-LLM), ``out``, ``hybrid``, ``none`` or ``mlp``.
        freeze_llm: keep the LLM block frozen (the paper's setting).
        llm_post_norm: unit-weight RMSNorm after the LLM block.
        llm_width: adapter width (read from the block when omitted).
        llm_revision, llm_sha256, llm_config, llm_license: how published checkpoints pin their block (see
            :func:`rllm_zoo.llm.referenced_block`): the Hub revision, the sha256 the layer must
            hash to, and the LLM config to rebuild the block from when the checkpoint holds it.

    ``forward(x)`` returns logits ``(B, num_classes)``; :meth:`forward_features` returns the
    final tokens ``(B, 1 + num_patches, hidden_size)`` with the CLS token first.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        img_size: int | Sequence[int] = 28,
        patch_size: int | Sequence[int] = 7,
        hidden_size: int = 192,
        mlp_dim: int = 768,
        num_layers: int = 4,
        num_heads: int = 3,
        num_classes: int = 2,
        dropout_rate: float = 0.0,
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
            "BoostedViT",
            spatial_dims,
            (2, 3),
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
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.blocks = transformer_stack(num_layers, hidden_size, mlp_dim, num_heads, dropout_rate, qkv_bias)
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

    @property
    def num_tokens(self) -> int:
        """Tokens the encoder sees: the patches plus the CLS token."""
        n = 1
        for g in self.grid:
            n *= g
        return n + 1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final tokens ``(B, 1 + num_patches, hidden_size)`` after booster and norm, CLS first."""
        if not torch.jit.is_scripting():
            self.check_input(x)  # eager only: skipped under TorchScript and tracing
        tokens = self.patch_embedding(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(self.run_booster(tokens))
