"""Predictions and MedMNIST metrics (through ``medmnist.Evaluator``)."""

from __future__ import annotations

import medmnist
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data import DatasetInfo

__all__ = ["loss_fn", "medmnist_metrics", "predict", "probabilities"]


def loss_fn(info: DatasetInfo, label_smoothing: float = 0.0) -> nn.Module:
    """BCE-with-logits for multi-label tasks, cross-entropy otherwise (binary and ordinal as classes)."""
    if info.multi_label:
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


def targets_for_loss(info: DatasetInfo, y: torch.Tensor) -> torch.Tensor:
    return y.float() if info.multi_label else y.view(-1).long()


def probabilities(info: DatasetInfo, logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if info.multi_label else torch.softmax(logits, dim=-1)


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: DataLoader,
    info: DatasetInfo,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Class scores, labels and mean loss (no label smoothing) over ``loader``."""
    model.eval()
    crit = loss_fn(info)
    scores, labels, total, n = [], [], 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.autocast(
            device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
        ):
            logits = model(x)
        logits = logits.float()
        total += float(crit(logits, targets_for_loss(info, y))) * len(x)
        n += len(x)
        scores.append(probabilities(info, logits).cpu().numpy())
        labels.append(y.cpu().numpy())
    return np.concatenate(scores), np.concatenate(labels), total / max(n, 1)


def medmnist_metrics(flag: str, split: str, scores: np.ndarray, root: str, size: int) -> dict[str, float]:
    """ACC and AUC as the MedMNIST benchmark computes them for the flag's task type."""
    evaluator = medmnist.Evaluator(flag, split, size=size, root=root)
    auc, acc = evaluator.evaluate(scores)
    return {"auc": float(auc), "acc": float(acc)}
