"""MONAI's own networks, boosted: ``ViT``, ``UNETR``, ``SwinUNETR`` and ``BasicUNet`` by name.

:func:`rllm_zoo.monai.create_network` accepts these names besides the presets: the network
gets its own MONAI arguments, and the booster the presets' (``use_booster``, ``llm``,
``llm_layer``, ``booster``, ``freeze_llm``, ``llm_post_norm``, ``llm_width``...) plus
``boost_at`` (see :func:`rllm_zoo.boost`). The booster only transforms the encoder's tokens or
features, so a segmentation network keeps its output shape:

* ``ViT``: after its last transformer block, before the final norm (tokens);
* ``UNETR``: after the last block of its ViT encoder (the tokens the decoder's deepest level reads);
* ``SwinUNETR``: after its last Swin stage (``swinViT.layers4``), before the encoder's output norm
  (the bottleneck map, flattened to tokens and folded back);
* ``BasicUNet``: after ``down_4``, the bottleneck (flattened to tokens and folded back).

In a MONAI bundle::

    "network_def": {"_target_": "rllm_zoo.monai.create_network", "name": "UNETR",
                    "in_channels": 1, "out_channels": 3, "img_size": 96, "llm": "smollm2"}

Example:
    >>> import torch
    >>> from rllm_zoo.monai import create_network
    >>> net = create_network("BasicUNet", spatial_dims=2, in_channels=1, out_channels=2,
    ...                      features=(4, 4, 8, 8, 16, 4), llm="random:smollm2")
    >>> net.boost_site
    BoostSite(name='down_4', dim=16, layout='channels_first')
    >>> net(torch.rand(1, 1, 32, 32)).shape
    torch.Size([1, 2, 32, 32])
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..plug import attach_booster, resolve_site
from .boosting import build_booster

__all__ = ["MONAI_NETWORKS", "NETWORK_BOOSTER_ARGS", "create_monai_network"]

#: MONAI network classes create_network accepts by name.
MONAI_NETWORKS: tuple[str, ...] = ("ViT", "UNETR", "SwinUNETR", "BasicUNet")
#: The booster's arguments (the rest goes to the MONAI network).
NETWORK_BOOSTER_ARGS: tuple[str, ...] = (
    "use_booster",
    "llm",
    "llm_layer",
    "booster",
    "freeze_llm",
    "llm_post_norm",
    "llm_width",
    "llm_revision",
    "llm_sha256",
    "llm_config",
    "llm_license",
    "boost_at",
)


def create_monai_network(name: str, **kwargs: Any) -> nn.Module:
    """The MONAI network ``name`` built from ``kwargs``, with the booster the booster arguments ask for.

    ``use_booster=False`` gives MONAI's network exactly (same parameters, same outputs for the
    same seed); ``net.booster`` is then ``None``. The booster is built like the presets'
    (:func:`rllm_zoo.monai.build_booster`: default SmolLM2 layer -1, ``llm=None`` is the ``mlp``
    control) and attached by :func:`rllm_zoo.plug.attach_booster`.

    Example:
        >>> net = create_monai_network("ViT", in_channels=1, img_size=32, patch_size=16, hidden_size=32,
        ...                            mlp_dim=64, num_layers=2, num_heads=4, use_booster=False)
        >>> net.booster is None
        True
    """
    import monai.networks.nets as nets

    if name not in MONAI_NETWORKS:
        raise ValueError(
            f"unknown MONAI network {name!r}; boosted MONAI networks: {', '.join(MONAI_NETWORKS)}"
        )
    boost_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in NETWORK_BOOSTER_ARGS}
    net = getattr(nets, name)(**kwargs)
    at = boost_kw.pop("boost_at", None)
    site = resolve_site(net, at)
    booster = build_booster(site.dim, **boost_kw)
    attach_booster(net, booster, site)
    return net
