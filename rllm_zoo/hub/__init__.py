"""Publish and reuse boosted models on the Hugging Face Hub (timm repos and MONAI bundles).

Example:
    >>> import rllm_zoo
    >>> result = rllm_zoo.push_to_hub(model, "me/retina-r-llm", dataset_flag="retinamnist")  # doctest: +SKIP
    >>> again = rllm_zoo.load_from_hub("me/retina-r-llm")                                    # doctest: +SKIP
"""

from .cards import render_model_card
from .errors import HubError
from .folders import save_pretrained
from .pull import load_from_folder, load_from_hub
from .push import PushResult, push_to_hub
from .weights import WEIGHT_MODES, llm_reference, resolve_weights_mode

__all__ = [
    "WEIGHT_MODES",
    "HubError",
    "PushResult",
    "llm_reference",
    "load_from_folder",
    "load_from_hub",
    "push_to_hub",
    "render_model_card",
    "resolve_weights_mode",
    "save_pretrained",
]
