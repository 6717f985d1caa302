"""Turn a finished run into a publishable folder (the same one ``rllm-zoo push`` uploads).

Example:
    >>> folder = package_run("runs/demo-retinamnist")                       # doctest: +SKIP
    >>> timm.create_model(f"local-dir:{folder}", pretrained=True)          # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from ..data import dataset_info
from .checkpoint import load_checkpoint, load_weights
from .config import TrainConfig, load_config
from .models import build_model

__all__ = ["load_run", "package_run"]


def load_run(run_dir: str | os.PathLike) -> tuple[nn.Module, TrainConfig, dict[str, Any] | None]:
    """(model with the run's best weights, its config, its ``metrics.json`` or ``None``)."""
    run = Path(run_dir)
    if not (run / "config.yaml").is_file() or not (run / "best.pt").is_file():
        raise FileNotFoundError(
            f"{run} is not a finished rllm-zoo run (needs config.yaml and best.pt); train one with "
            "`rllm-zoo train --out DIR ...`"
        )
    cfg = load_config(run / "config.yaml")
    model = build_model(cfg, dataset_info(cfg.flag))
    load_weights(model, load_checkpoint(run / "best.pt"))
    model.eval()
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else None
    return model, cfg, metrics


def package_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    weights: str = "auto",
    repo_id: str | None = None,
) -> Path:
    """Write ``<run>/package`` (or ``out``): the run as a Hub repo folder with its model card.

    2D runs give a timm folder (``timm.create_model("local-dir:<folder>", pretrained=True)``);
    3D runs give a MONAI bundle. The folder is assembled in a temporary sibling and renamed
    into place, so a failure never leaves a half-written package.
    """
    from ..hub import save_pretrained

    model, cfg, metrics = load_run(run_dir)
    dest = Path(out) if out is not None else Path(run_dir) / "package"
    save_pretrained(
        model,
        dest,
        weights=weights,
        dataset_flag=cfg.flag,
        metrics=metrics,
        train_config=cfg.to_dict(),
        run_dir=run_dir,
        repo_id=repo_id,
        model_args=dict(cfg.model_kwargs) if not dataset_info(cfg.flag).is_3d else None,
        extra_files=[Path(run_dir) / "config.yaml"],
    )
    return dest
