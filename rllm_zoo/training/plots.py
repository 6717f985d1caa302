"""PNG training curves and ROC curves (matplotlib, headless)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["plot_curves", "plot_roc"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)


def _epoch_axis(ax, ep: list) -> None:
    """Whole-number epoch ticks only, with room on both sides so a single epoch is visible."""
    from matplotlib.ticker import MaxNLocator

    if ep:
        lo, hi = min(ep), max(ep)
        pad = max(0.5, 0.04 * (hi - lo))
        ax.set_xlim(lo - pad, hi + pad)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1, steps=[1, 2, 5, 10]))
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.25)


def _curves_figure(history: list[dict], title: str = ""):
    """The figure :func:`plot_curves` saves (the caller closes it)."""
    plt = _plt()
    ep = [h["epoch"] for h in history]
    # dots on every point while they stay readable (a 1-epoch run is then a visible dot, not nothing)
    style = {"marker": "o" if len(ep) <= 30 else None, "ms": 4, "lw": 1.5}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(ep, [h["train_loss"] for h in history], label="train loss", **style)
    ax1.plot(ep, [h["val_loss"] for h in history], label="val loss", **style)
    ax1.set_ylabel("loss")
    ax2.plot(ep, [h["val_auc"] for h in history], label="val AUC", **style)
    ax2.plot(ep, [h["val_acc"] for h in history], label="val ACC", **style)
    best = [h["epoch"] for h in history if h.get("best")]
    if best:
        ax2.axvline(best[-1], color="grey", ls="--", lw=1, label=f"selected (epoch {best[-1]})")
    for ax in (ax1, ax2):
        _epoch_axis(ax, ep)
        ax.legend()
    ax2.set_ylim(0, 1)
    fig.suptitle(title)
    return fig


def plot_curves(history: list[dict], path: str | os.PathLike, title: str = "") -> None:
    """Loss (train / val) and validation AUC / ACC per epoch; the selected epoch is marked."""
    plt = _plt()
    fig = _curves_figure(history, title)
    try:
        _save(fig, Path(path))
    finally:
        plt.close(fig)


def plot_roc(
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    multi_label: bool,
    path: str | os.PathLike,
    title: str = "",
) -> None:
    """One-vs-rest ROC per class on the given split."""
    from sklearn.metrics import auc, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    n = scores.shape[1]
    for c in range(n):
        truth = labels[:, c] if multi_label else (labels.reshape(-1) == c)
        if truth.min() == truth.max():
            continue
        fpr, tpr, _ = roc_curve(truth, scores[:, c])
        name = class_names[c] if c < len(class_names) else str(c)
        ax.plot(fpr, tpr, lw=1.2, label=f"{name[:28]} (AUC {auc(fpr, tpr):.3f})")
        if n == 2 and not multi_label:
            break  # binary: one curve says it all
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title)
    _save(fig, Path(path))
    plt.close(fig)
