"""Grad-CAM overlays for a trained run (``rllm-zoo cam``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..cam import grad_cam, save_overlays
from .run import open_run

__all__ = ["cam_for_run"]


def cam_for_run(
    run_dir: str | os.PathLike,
    split: str = "test",
    indices: list[int] | None = None,
    n: int = 8,
    out: str | os.PathLike | None = None,
) -> Path:
    """Grad-CAM of the run's selected checkpoint on ``split`` images; writes one PNG."""
    run = open_run(run_dir)
    info, model = run.info, run.model
    ds = run.data().dataset(split, run.prep, progress=False)
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
    return save_overlays(images, maps, out or run.path / f"cam_{split}.png", titles)
