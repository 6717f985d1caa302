"""Training and evaluation on MedMNIST (the layer above the model families)."""

from .config import TrainConfig, load_config
from .engine import RunExistsError, evaluate_run, fit, fit_seeds, summarize_seeds
from .package import package_run

__all__ = [
    "RunExistsError",
    "TrainConfig",
    "evaluate_run",
    "fit",
    "fit_seeds",
    "load_config",
    "package_run",
    "summarize_seeds",
]
