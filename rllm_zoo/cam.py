"""Grad-CAM for boosted ViTs (2D timm and 3D MONAI), through ``monai.visualize.GradCAM``.

ViT activations are tokens, not feature maps: the tokens entering the last encoder block
(whose output feeds the booster) are laid out on their patch grid by an identity "tap"
module, which is Grad-CAM's target layer. Gradients reach it through the last block, the
frozen LLM block and the head.

Example:
    >>> maps = grad_cam(model, images)            # (B, 1, H, W) or (B, 1, D, H, W), in [0, 1]  # doctest: +SKIP
    >>> save_overlays(images, maps, "cam.png")                                                  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["TokenGridTap", "grad_cam", "save_overlays"]


def _tap_point(model: nn.Module) -> tuple[nn.Module, tuple[int, ...], int]:
    """(module whose input is tapped, patch grid, number of prefix tokens)."""
    blocks = getattr(model, "blocks", None)
    if blocks is not None and hasattr(model, "patch_embed"):  # timm ViT
        return blocks[-1], tuple(model.patch_embed.grid_size), int(model.num_prefix_tokens)
    if blocks is not None and hasattr(model, "grid"):  # rllm_zoo.monai.BoostedViT (CLS first)
        return blocks[-1], tuple(model.grid), 1
    raise ValueError(
        f"Grad-CAM needs a ViT with a patch grid (timm rllm_vit_* or rllm_zoo.monai BoostedViT); "
        f"{type(model).__name__} is not supported"
    )


class TokenGridTap(nn.Module):
    """Wrap ``model`` so the tokens entering its last block pass through ``self.tap`` as a grid.

    The tap is an identity: outputs are unchanged (tested), only hooks see a
    ``(B, C, *grid)`` activation.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.tap = nn.Identity()
        block, self.grid, self.prefix = _tap_point(model)
        self._handle = block.register_forward_pre_hook(self._through_tap)

    def _through_tap(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        prefix, tokens = x[:, : self.prefix], x[:, self.prefix :]
        b, _, c = tokens.shape
        grid = self.tap(tokens.transpose(1, 2).reshape(b, c, *self.grid))
        return (torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1), *args[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def remove(self) -> None:
        self._handle.remove()


def grad_cam(model: nn.Module, images: torch.Tensor, class_idx: int | None = None) -> torch.Tensor:
    """Grad-CAM maps for ``images`` (the predicted class unless ``class_idx``), upsampled to input size."""
    from monai.visualize import GradCAM

    wrapped = TokenGridTap(model).eval()
    try:
        cam = GradCAM(nn_module=wrapped, target_layers="tap")
        return cam(x=images, class_idx=class_idx).detach()
    finally:
        wrapped.remove()


def _to_display(img: np.ndarray) -> np.ndarray:
    """Channels-last, [0, 1]."""
    img = np.moveaxis(img, 0, -1) if img.ndim == 3 else img
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo + 1e-8)
    return img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img


def save_overlays(
    images: torch.Tensor,
    maps: torch.Tensor,
    path: str | os.PathLike,
    titles: list[str] | None = None,
    alpha: float = 0.45,
) -> Path:
    """One PNG: each image with its Grad-CAM heat map (3D: the central slice of each axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imgs, cams = images.detach().float().cpu().numpy(), maps.float().cpu().numpy()
    is_3d = imgs.ndim == 5
    cols = 3 if is_3d else 1
    fig, axes = plt.subplots(len(imgs), cols * 2, figsize=(2.2 * cols * 2, 2.3 * len(imgs)), squeeze=False)
    for i in range(len(imgs)):
        if is_3d:
            d, h, w = imgs.shape[2:]
            views = [
                (imgs[i, :, d // 2], cams[i, 0, d // 2]),
                (imgs[i, :, :, h // 2], cams[i, 0, :, h // 2]),
                (imgs[i, :, :, :, w // 2], cams[i, 0, :, :, w // 2]),
            ]
        else:
            views = [(imgs[i], cams[i, 0])]
        for j, (img, cam) in enumerate(views):
            shown = _to_display(img)
            cmap = "gray" if shown.ndim == 2 else None
            axes[i, 2 * j].imshow(shown, cmap=cmap)
            axes[i, 2 * j + 1].imshow(shown, cmap=cmap)
            axes[i, 2 * j + 1].imshow(cam, cmap="jet", alpha=alpha, vmin=0, vmax=1)
        if titles:
            axes[i, 0].set_title(titles[i], fontsize=7, loc="left")
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
