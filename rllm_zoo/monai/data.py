"""Turn a ``medmnist`` dataset into MONAI records (``{"image", "label", "id"}`` dicts).

MONAI's dictionary transforms, engines and writers work on such records: the image stays
channel-first ``uint8`` (scale it with ``ScaleIntensityRanged(a_min=0, a_max=255, ...)``),
the label is an ``int`` (a ``float32`` vector for multi-label sets) and ``id`` names the
sample in prediction files.

Example:
    >>> import medmnist                                                   # doctest: +SKIP
    >>> ds = medmnist.AdrenalMNIST3D(split="test", root="../shared/medmnist", download=False)  # doctest: +SKIP
    >>> rec = medmnist_records(ds, limit=2)                               # doctest: +SKIP
    >>> rec[0]["image"].shape, rec[0]["label"], rec[0]["id"]              # doctest: +SKIP
    ((1, 28, 28, 28), 0, 'adrenalmnist3d_test_0000')
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["medmnist_records"]


def medmnist_records(dataset: Any, limit: int | None = None) -> list[dict[str, Any]]:
    """Records of a ``medmnist`` dataset (2D or 3D), in split order.

    Args:
        dataset: a ``medmnist`` dataset instance, e.g.
            ``medmnist.AdrenalMNIST3D(split="train", root=..., download=False)``.
        limit: keep only the first ``limit`` samples (``None`` or ``<= 0``: all), for quick runs.

    Returns:
        A list of ``{"image": uint8 array (C, *spatial), "label": int, "id": str}``; ``C`` is 3
        when the dataset was opened with ``as_rgb=True``.
    """
    imgs = np.asarray(dataset.imgs)
    labels = np.asarray(dataset.labels)
    is_3d = type(dataset).__name__.endswith("3D") or imgs.ndim == 5
    if is_3d or imgs.ndim == 3:  # (N, D, H, W) volumes or (N, H, W) grey images
        imgs = imgs[:, None]
    else:  # (N, H, W, C) colour images
        imgs = np.moveaxis(imgs, -1, 1)
    if getattr(dataset, "as_rgb", False) and imgs.shape[1] == 1:
        imgs = np.repeat(imgs, 3, axis=1)
    multi_label = "multi-label" in str(getattr(dataset, "info", {}).get("task", ""))
    n = len(imgs) if limit is None or limit <= 0 else min(int(limit), len(imgs))
    prefix = f"{getattr(dataset, 'flag', 'medmnist')}_{getattr(dataset, 'split', 'data')}"
    records = []
    for i in range(n):
        label: Any = labels[i].astype(np.float32) if multi_label else int(labels[i].reshape(-1)[0])
        records.append({"image": np.ascontiguousarray(imgs[i]), "label": label, "id": f"{prefix}_{i:04d}"})
    return records
