"""Training and evaluation on MedMNIST and own data, and publishing runs (the layer above the hub)."""

from .config import TrainConfig, load_config
from .engine import RunExistsError, evaluate_run, fit, fit_seeds, summarize_seeds
from .package import package_run, push_run
from .release import release_zoo

__all__ = [
    "RunExistsError",
    "TrainConfig",
    "evaluate_run",
    "fit",
    "fit_seeds",
    "load_config",
    "package_run",
    "push_run",
    "release_zoo",
    "summarize_seeds",
]
