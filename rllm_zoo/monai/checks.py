"""Argument and input checks shared by the MONAI networks, with errors that name the fix.

Example:
    >>> from rllm_zoo.monai.checks import as_spatial_tuple, check_patch_grid
    >>> as_spatial_tuple(28, 3, "img_size")
    (28, 28, 28)
    >>> check_patch_grid((28, 28, 28), (7, 7, 7))
    (4, 4, 4)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..booster import is_tracing  # re-exported: the networks' checks step aside while tracing

__all__ = [
    "as_spatial_tuple",
    "check_input",
    "check_patch_grid",
    "check_positive_int",
    "check_spatial_dims",
    "check_transformer_sizes",
    "is_tracing",
]


def check_spatial_dims(
    spatial_dims: int, allowed: Sequence[int] = (2, 3), network: str = "this network"
) -> int:
    """Return ``spatial_dims`` if it is one of ``allowed``; raise a ``ValueError`` otherwise."""
    if isinstance(spatial_dims, bool) or spatial_dims not in tuple(allowed):
        choices = " or ".join(str(a) for a in allowed)
        hint = "" if 2 in allowed else "; for 2D images use BoostedViT(spatial_dims=2, ...)"
        raise ValueError(
            f"{network} supports spatial_dims={choices}, got spatial_dims={spatial_dims!r}: "
            f"pass spatial_dims=3 for volumes (B, C, D, H, W){hint}"
        )
    return int(spatial_dims)


def check_positive_int(value: int, name: str) -> int:
    """Return ``value`` if it is a positive int; raise a ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def as_spatial_tuple(value: int | Sequence[int], spatial_dims: int, name: str) -> tuple[int, ...]:
    """An int or a sequence of ``spatial_dims`` positive ints, as a tuple of length ``spatial_dims``."""
    if isinstance(value, int) and not isinstance(value, bool):
        out = (value,) * spatial_dims
    elif isinstance(value, Sequence) and not isinstance(value, str):
        out = tuple(value)
        if len(out) != spatial_dims:
            raise ValueError(
                f"{name}={tuple(value)} has {len(out)} entries but spatial_dims={spatial_dims}: "
                f"pass one int or {spatial_dims} ints"
            )
    else:
        raise ValueError(f"{name} must be an int or a sequence of {spatial_dims} ints, got {value!r}")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}={out} must hold positive ints")
    return out


def check_patch_grid(img_size: tuple[int, ...], patch_size: tuple[int, ...]) -> tuple[int, ...]:
    """Patches along each axis; ``img_size`` must be divisible by ``patch_size`` on every axis."""
    for axis, (m, p) in enumerate(zip(img_size, patch_size)):
        if m % p != 0:
            divisors = [d for d in range(1, m + 1) if m % d == 0]
            raise ValueError(
                f"img_size {img_size} is not divisible by patch_size {patch_size} along axis {axis} "
                f"({m} % {p} = {m % p}): pick a patch size that divides {m} (one of {divisors}) "
                f"or resize the images"
            )
    return tuple(m // p for m, p in zip(img_size, patch_size))


def check_transformer_sizes(hidden_size: int, mlp_dim: int, num_heads: int, dropout_rate: float) -> None:
    """Check the encoder sizes before MONAI's blocks see them."""
    check_positive_int(hidden_size, "hidden_size")
    check_positive_int(mlp_dim, "mlp_dim")
    check_positive_int(num_heads, "num_heads")
    if hidden_size % num_heads != 0:
        raise ValueError(
            f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}: "
            f"pick num_heads among the divisors of {hidden_size} (e.g. {hidden_size // 64 or 1} for 64-wide heads)"
        )
    if not 0.0 <= float(dropout_rate) <= 1.0:
        raise ValueError(f"dropout_rate must lie in [0, 1], got {dropout_rate!r}")


def check_input(x: torch.Tensor, in_channels: int, img_size: tuple[int, ...]) -> None:
    """Raise a ``ValueError`` unless ``x`` has shape ``(B, in_channels, *img_size)``."""
    spatial_dims = len(img_size)
    layout = "(B, C, H, W)" if spatial_dims == 2 else "(B, C, D, H, W)"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"expected a {spatial_dims + 2}D tensor {layout} for spatial_dims={spatial_dims}, got shape "
            f"{tuple(x.shape)}: add the batch/channel axes (x[None] or x[:, None]) or build the network "
            f"with spatial_dims={x.ndim - 2}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"expected {in_channels} input channel(s), got {x.shape[1]} (input shape {tuple(x.shape)}): "
            f"build the network with in_channels={x.shape[1]} or convert the images "
            f"(e.g. medmnist's as_rgb=False for grayscale)"
        )
    if tuple(x.shape[2:]) != tuple(img_size):
        raise ValueError(
            f"expected spatial size {tuple(img_size)} (img_size), got {tuple(x.shape[2:])}: "
            f"resize the input (e.g. monai.transforms.Resize) or build the network with "
            f"img_size={tuple(x.shape[2:])}"
        )
