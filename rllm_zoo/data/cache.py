"""Datasets that read every file once (decoded, resized, validated) and augment per epoch.

2D images are decoded and resized once into one ``uint8`` array; 3D volumes go through MONAI's
``CacheDataset``, which runs the deterministic part of the preprocessing (read, orient, resize,
scale) once and the random augmentation per item. Both yield ``(input, label)`` pairs, the label
a ``long`` tensor of shape ``(1,)``, and raise a one-line :class:`DataError` naming any file that
cannot be read, before training starts.

Example:
    >>> import numpy as np
    >>> from rllm_zoo.data import Preprocessing
    >>> prep = Preprocessing(spatial_dims=3, size=(8, 8, 8), channels=1)
    >>> recs = [{"image": np.zeros((1, 4, 4, 4), np.uint8), "label": 1}]
    >>> x, y = cached_volumes(recs, prep, progress=False)[0]
    >>> tuple(x.shape), y.tolist()
    ((1, 8, 8, 8), [1])
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataError
from .preprocessing import Preprocessing

__all__ = ["ImageFiles", "VolumePairs", "cached_volumes", "image_pipeline"]


def image_pipeline(prep: Preprocessing, train_aug: str = "none"):
    """PIL image -> tensor: :meth:`Preprocessing.prepare_image`, then its ``image_transform``."""
    from torchvision import transforms as T

    return T.Compose([T.Lambda(prep.prepare_image), prep.image_transform(train_aug)])


class ImageFiles(Dataset):
    """2D image files, decoded and resized once (see :class:`Preprocessing`), augmented per item.

    Args:
        paths, labels: the files and their class indices.
        prep: the run's preprocessing (2D).
        train_aug: ``none``, ``light`` or ``strong``.
        what: how progress lines and errors name this set (e.g. ``"train split"``).
        progress: show a progress bar / periodic lines while reading.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int],
        prep: Preprocessing,
        train_aug: str = "none",
        what: str = "images",
        progress: bool = True,
    ) -> None:
        from ..progress import progress as bar

        self.paths, self.labels, self.prep = list(paths), [int(v) for v in labels], prep
        self.transform = prep.image_transform(train_aug)
        arrays = []
        for path in bar(self.paths, desc=f"reading {what}", unit="img", disable=not progress, leave=False):
            try:
                arrays.append(np.asarray(prep.read_image(path)))
            except FileNotFoundError as e:
                raise DataError(f"{path}: no such image file; fix the path or remove it from the list") from e
            except (OSError, ValueError, SyntaxError) as e:
                raise DataError(
                    f"{path}: cannot read this image ({str(e) or type(e).__name__}); replace or remove the file"
                ) from e
        h, w = prep.size
        self.images = np.stack(arrays) if arrays else np.zeros((0, h, w), np.uint8)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        img = Image.fromarray(self.images[i], mode=self.prep.pil_mode)
        return self.transform(img), torch.tensor([self.labels[i]], dtype=torch.long)


class VolumePairs(Dataset):
    """A MONAI dataset of ``{"image", "label"}`` records seen as ``(image, label)`` pairs."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    @property
    def transform(self) -> Any:  # the training loop re-seeds MONAI's random transforms through it
        return self.dataset.transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.dataset[i]
        return torch.as_tensor(d["image"]), torch.tensor([int(d["label"])], dtype=torch.long)


def cached_volumes(
    records: Sequence[dict[str, Any]],
    prep: Preprocessing,
    train_aug: str = "none",
    what: str = "volumes",
    progress: bool = True,
) -> VolumePairs:
    """Records (``image``: a path or a channel-first array; ``label``: int) through the run's 3D
    preprocessing, cached by ``monai.data.CacheDataset``; every volume is read here, once."""
    from monai.data import CacheDataset

    if progress and not sys.stderr.isatty() and len(records):
        print(f"reading {what}: {len(records)} volumes", file=sys.stderr, flush=True)
    try:
        ds = CacheDataset(
            data=list(records),
            transform=prep.volume_transform(train_aug),
            cache_rate=1.0,
            num_workers=1,
            progress=progress and sys.stderr.isatty(),
        )
    except RuntimeError as e:  # MONAI wraps a transform's error; ReadVolumed's names the file
        cause = e
        while cause is not None and not isinstance(cause, ValueError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise DataError(str(cause)) from e
    for rec, item in zip(records, ds._cache):  # CacheDataset keeps the deterministic results here
        channels = int(item["image"].shape[0])
        if channels != prep.channels:
            name = rec["image"] if isinstance(rec["image"], str) else f"record {rec.get('id', '?')}"
            raise DataError(
                f"{name}: {channels} channel(s), but the run's volumes have {prep.channels}; "
                "give all volumes the same number of channels"
            )
    return VolumePairs(ds)
