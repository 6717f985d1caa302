"""Named presets of the boosted MONAI networks: the paper's sizes and small CPU-friendly ones.

The paper sizes follow the R-LLM code (ZhixinLai/LLMBoostMedical, 3D_classification/main.py):
28^3 inputs, 4^3 patches, 8 heads, MLP width equal to the token width.

Example:
    >>> from rllm_zoo.monai import create_network, list_networks
    >>> "rllm_vit3d_small" in list_networks()
    True
    >>> net = create_network("rllm_vivit_tiny", num_classes=3, llm="random:smollm2")
    >>> type(net).__name__, net.num_classes
    ('BoostedViViT', 3)
"""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn

from .networks import MONAI_NETWORKS, create_monai_network
from .vit import BoostedViT
from .vivit import BoostedViViT

__all__ = ["PRESETS", "create_network", "fit_patch_size", "list_networks", "preset_config"]

_PAPER_3D: dict[str, Any] = dict(spatial_dims=3, img_size=28, patch_size=4, num_heads=8)
_SMALL: dict[str, Any] = dict(hidden_size=192, mlp_dim=768, num_heads=3)

#: name -> (network class, default arguments, one-line description)
PRESETS: dict[str, tuple[type[nn.Module], dict[str, Any], str]] = {
    "rllm_vit3d_paper": (
        BoostedViT,
        dict(_PAPER_3D, hidden_size=1024, mlp_dim=1024, num_layers=8),
        "the paper's ViT3D: dim 1024, 8 layers, 8 heads, 4^3 patches on 28^3 (344 tokens)",
    ),
    "rllm_vit3d_small": (
        BoostedViT,
        dict(_SMALL, spatial_dims=3, img_size=28, patch_size=7, num_layers=4),
        "small ViT3D for CPU: dim 192, 4 layers, 7^3 patches on 28^3 (65 tokens)",
    ),
    "rllm_vit3d_small_p4": (
        BoostedViT,
        dict(_SMALL, spatial_dims=3, img_size=28, patch_size=4, num_layers=4),
        "small ViT3D with the paper's 4^3 patches: dim 192, 4 layers (344 tokens)",
    ),
    "rllm_vit2d_small": (
        BoostedViT,
        dict(_SMALL, spatial_dims=2, img_size=28, patch_size=4, num_layers=4),
        "small 2D ViT for 28x28 MedMNIST images: dim 192, 4 layers, 4x4 patches (50 tokens)",
    ),
    "rllm_vivit_s": (
        BoostedViViT,
        dict(_PAPER_3D, hidden_size=512, mlp_dim=512, num_layers=4, num_temporal_layers=4),
        "the paper's ViViT-S: dim 512, 4 spatial + 4 temporal layers, 4^3 patches on 28^3",
    ),
    "rllm_vivit_m": (
        BoostedViViT,
        dict(_PAPER_3D, hidden_size=1024, mlp_dim=1024, num_layers=8, num_temporal_layers=8),
        "the paper's ViViT-M: dim 1024, 8 spatial + 8 temporal layers, 4^3 patches on 28^3",
    ),
    "rllm_vivit_tiny": (
        BoostedViViT,
        dict(_SMALL, spatial_dims=3, img_size=28, patch_size=4, num_layers=2, num_temporal_layers=2),
        "small ViViT for CPU: dim 192, 2 spatial + 2 temporal layers, 4^3 patches on 28^3",
    ),
}


def list_networks() -> list[str]:
    """Preset names accepted by :func:`create_network`, sorted.

    Example:
        >>> list_networks()[:2]
        ['rllm_vit2d_small', 'rllm_vit3d_paper']
    """
    return sorted(PRESETS)


def _lookup(name: str) -> tuple[type[nn.Module], dict[str, Any], str]:
    if name not in PRESETS:
        close = difflib.get_close_matches(str(name), [*PRESETS, *MONAI_NETWORKS], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(
            f"unknown network {name!r}{hint}; known networks: {', '.join(list_networks())}; "
            f"MONAI networks (create_network only): {', '.join(MONAI_NETWORKS)}"
        )
    return PRESETS[name]


def preset_config(name: str) -> dict[str, Any]:
    """The class name, default arguments and description of a preset (a copy).

    Example:
        >>> preset_config("rllm_vivit_s")["args"]["hidden_size"]
        512
    """
    cls, args, doc = _lookup(name)
    return {"class": cls.__name__, "args": dict(args), "description": doc}


def fit_patch_size(name: str, img_size: int | tuple[int, ...]) -> tuple[int, ...]:
    """A patch size for preset ``name`` at ``img_size`` that divides it, keeping the preset's token grid.

    Per axis, the divisor of the size nearest to ``preset_patch * size / preset_size`` (ties: the
    larger patch); a ``ValueError`` names the sizes that work when no divisor is within 2x of it.

    Example:
        >>> fit_patch_size("rllm_vit3d_small", 64)       # 7^3 patches on 28^3 -> a 4^3 grid at 64^3
        (16, 16, 16)
        >>> fit_patch_size("rllm_vit3d_small", 28)
        (7, 7, 7)
    """
    _, args, _ = _lookup(name)
    dims = int(args.get("spatial_dims", 3))
    sizes = tuple(img_size) if isinstance(img_size, (tuple, list)) else (int(img_size),) * dims
    base_size = args.get("img_size", 28)
    base_patch = args.get("patch_size", 4)
    base_size = tuple(base_size) if isinstance(base_size, (tuple, list)) else (base_size,) * dims
    base_patch = tuple(base_patch) if isinstance(base_patch, (tuple, list)) else (base_patch,) * dims
    patch = []
    for size, b_size, b_patch in zip(sizes, base_size, base_patch):
        target = b_patch * size / b_size
        divisors = [d for d in range(1, size + 1) if size % d == 0]
        best = min(divisors, key=lambda d: (abs(d - target), -d))
        if not target / 2 <= best <= target * 2:
            good = sorted({b_size // b_patch * k for k in range(1, 9)})
            raise ValueError(
                f"{name}: no patch size near {target:.1f} divides the input size {size}; pass patch_size= "
                f"(model_kwargs) or use a size divisible by {b_size // b_patch} (e.g. {', '.join(map(str, good[:6]))})"
            )
        patch.append(best)
    return tuple(patch)


def create_network(name: str, **overrides: Any) -> nn.Module:
    """Build the preset ``name`` (or a boosted MONAI network); ``overrides`` replace or add arguments.

    Any argument of :class:`BoostedViT` / :class:`BoostedViViT` can be overridden, e.g.
    ``num_classes``, ``in_channels``, ``llm`` (``"smollm2"``, ``"random:smollm2"``, ``None``),
    ``booster`` or ``use_booster=False`` for the baseline. From a MONAI bundle config::

        "network_def": {"_target_": "rllm_zoo.monai.create_network",
                        "name": "rllm_vit3d_small", "num_classes": 2, "llm": "smollm2"}

    An ``img_size`` the preset's patch size does not divide gets a patch size that does
    (:func:`fit_patch_size`), recorded in ``net.network_overrides`` so bundles rebuild the same.

    ``name`` may also be one of MONAI's networks (:data:`~rllm_zoo.monai.networks.MONAI_NETWORKS`:
    ``"ViT"``, ``"UNETR"``, ``"SwinUNETR"``, ``"BasicUNet"``) with its own MONAI arguments plus the
    same booster arguments and ``boost_at`` (see :mod:`rllm_zoo.monai.networks`).

    Example:
        >>> net = create_network("rllm_vit3d_small", use_booster=False)
        >>> net.booster is None
        True
        >>> create_network("rllm_vit3d_small", img_size=64, use_booster=False).patch_size
        (16, 16, 16)
        >>> unetr = create_network("UNETR", in_channels=1, out_channels=2, img_size=32, feature_size=4,
        ...                        hidden_size=32, mlp_dim=64, num_heads=4, llm="random:smollm2")
        >>> unetr.boost_site.name
        'vit.blocks.11'
    """
    if name in MONAI_NETWORKS:
        net = create_monai_network(name, **overrides)
        net.network_name = name
        net.network_overrides = dict(overrides)
        return net
    cls, args, _ = _lookup(name)
    if "img_size" in overrides and "patch_size" not in overrides:
        patch = fit_patch_size(name, overrides["img_size"])
        preset_patch = args.get("patch_size")
        if patch != (
            tuple(preset_patch) if isinstance(preset_patch, (list, tuple)) else (preset_patch,) * len(patch)
        ):
            overrides = {**overrides, "patch_size": list(patch)}
    net = cls(**{**args, **overrides})
    # what rebuilds it (a published bundle's network_def records the same)
    net.network_name = name
    net.network_overrides = dict(overrides)
    return net
