"""Grad-CAM overlays for a trained run (``rllm-zoo cam``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..cam import grad_cam, save_overlays
from ..data import build_dataset, dataset_info
from .checkpoint import load_checkpoint, load_weights
from .config import load_config
from .models import build_model, input_norm

__all__ = ["cam_for_run"]


def cam_for_run(
    run_dir: str | os.PathLike,
    split: str = "test",
    indices: list[int] | None = None,
    n: int = 8,
    out: str | os.PathLike | None = None,
) -> Path:
    """Grad-CAM of the run's selected checkpoint on ``split`` images; writes one PNG."""
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run} is not a run folder (no config.yaml); pass the --out of a train run")
    cfg = load_config(run / "config.yaml")
    info = dataset_info(cfg.flag)
    model = build_model(cfg, info)
    load_weights(model, load_checkpoint(run / "best.pt"))
    model.eval()
    mean, std = input_norm(model)
    ds = build_dataset(cfg.flag, split, root=cfg.data_root, size=cfg.size, mean=mean, std=std)
    indices = indices if indices else list(range(min(n, len(ds))))
    if any(i < 0 or i >= len(ds) for i in indices):
        raise ValueError(f"indices must be in 0..{len(ds) - 1} for the {split} split")
    images = torch.stack([ds[i][0] for i in indices])
    labels = [ds[i][1].view(-1).tolist() for i in indices]
    with torch.no_grad():
        preds = model(images).argmax(-1).tolist()
    maps = grad_cam(model, images)
    titles = [
        f"#{i} label {lab if info.multi_label else lab[0]} ({'' if info.multi_label else info.class_names[lab[0]][:18]}) "
        f"pred {p}"
        for i, lab, p in zip(indices, labels, preds)
    ]
    return save_overlays(images, maps, out or run / f"cam_{split}.png", titles)
