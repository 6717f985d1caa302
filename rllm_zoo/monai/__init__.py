"""R-LLM boosted 3D (and 2D) transformers built from MONAI's blocks, plus bundle helpers.

Networks: :class:`BoostedViT` (ViT3D / 2D ViT) and :class:`BoostedViViT` (factorised
ViViT), both ``forward(x) -> logits (B, num_classes)``. Presets by name through
:func:`create_network` / :func:`list_networks`, which also builds MONAI's own ``ViT``,
``UNETR``, ``SwinUNETR`` and ``BasicUNet`` boosted (:mod:`rllm_zoo.monai.networks`). Bundle helpers: :func:`medmnist_records`
(MedMNIST as MONAI records) and :class:`MetricsJSONSaver`. See ``examples/bundles/``.

Example:
    >>> import torch
    >>> from rllm_zoo.monai import create_network
    >>> net = create_network("rllm_vit3d_small", num_classes=2, llm="random:smollm2")
    >>> net(torch.rand(1, 1, 28, 28, 28)).shape
    torch.Size([1, 2])
    >>> opt = torch.optim.Adam(net.trainable_parameters(), lr=1e-4)  # frozen LLM block left out
"""

from .base import BoostedNetwork
from .boosting import build_booster
from .data import medmnist_records
from .handlers import MetricsJSONSaver
from .io import ReadVolumed
from .networks import MONAI_NETWORKS, create_monai_network
from .presets import PRESETS, create_network, list_networks, preset_config
from .vit import BoostedViT
from .vivit import BoostedViViT

__all__ = [
    "MONAI_NETWORKS",
    "PRESETS",
    "BoostedNetwork",
    "BoostedViT",
    "BoostedViViT",
    "MetricsJSONSaver",
    "ReadVolumed",
    "build_booster",
    "create_monai_network",
    "create_network",
    "list_networks",
    "medmnist_records",
    "preset_config",
]
