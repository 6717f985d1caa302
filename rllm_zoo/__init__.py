"""rllm_zoo: residual-based LLM boosters (R-LLM) for biomedical imaging, for timm and MONAI.

Example:
    >>> import torch, rllm_zoo
    >>> block = rllm_zoo.load_llm_block("smollm2", layer=-1)      # doctest: +SKIP
    >>> booster = rllm_zoo.LLMBooster(dim=384, block=block)        # doctest: +SKIP
    >>> booster(torch.randn(2, 197, 384)).shape                    # doctest: +SKIP
    torch.Size([2, 197, 384])
    >>> model = rllm_zoo.boost(timm.create_model("convnext_atto"), llm="smollm2")  # doctest: +SKIP
"""

from . import timm_boost, timm_vit  # noqa: F401  (register the rllm_vit_* family and r_llm_boost in timm)
from .booster import VARIANTS, LLMBooster, UnitRMSNorm, trainable_parameters
from .hub import HubError, load_from_hub, push_to_hub, save_pretrained
from .llm import (
    DEFAULT_LLM,
    BlockInfo,
    CheckpointError,
    LLMBlock,
    LLMChecksumError,
    LLMSourceError,
    UnsupportedArchitectureError,
    load_llm_block,
)
from .plug import BoostSite, boost, find_booster
from .timm_vit import BoostedVisionTransformer, booster_args

__version__ = "0.1.0"


def __getattr__(name: str):
    # the training layer sits above the hub: imported on first use only
    if name == "push_run":
        from .training.package import push_run

        return push_run
    raise AttributeError(f"module 'rllm_zoo' has no attribute {name!r}")


__all__ = [
    "DEFAULT_LLM",
    "VARIANTS",
    "BlockInfo",
    "BoostSite",
    "BoostedVisionTransformer",
    "CheckpointError",
    "HubError",
    "LLMBlock",
    "LLMBooster",
    "LLMChecksumError",
    "LLMSourceError",
    "UnitRMSNorm",
    "UnsupportedArchitectureError",
    "__version__",
    "boost",
    "booster_args",
    "find_booster",
    "load_from_hub",
    "load_llm_block",
    "push_run",
    "push_to_hub",
    "save_pretrained",
    "trainable_parameters",
]
