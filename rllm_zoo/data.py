"""MedMNIST data through the ``medmnist`` package: datasets, transforms and task facts.

Example:
    >>> from rllm_zoo.data import dataset_info, build_dataset
    >>> dataset_info("retinamnist").task                                   # doctest: +SKIP
    'ordinal-regression'
    >>> ds = build_dataset("retinamnist", "train", root="../shared/medmnist")  # doctest: +SKIP
    >>> x, y = ds[0]; x.shape, y                                           # doctest: +SKIP
    (torch.Size([3, 28, 28]), tensor([0]))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import medmnist
import numpy as np
import torch

__all__ = [
    "FLAGS_2D",
    "FLAGS_3D",
    "DataError",
    "DatasetInfo",
    "build_dataset",
    "dataset_info",
    "default_root",
]

FLAGS_3D: tuple[str, ...] = tuple(sorted(f for f in medmnist.INFO if f.endswith("3d")))
FLAGS_2D: tuple[str, ...] = tuple(sorted(f for f in medmnist.INFO if not f.endswith("3d")))
SIZES = (28, 64, 128, 224)


class DataError(ValueError):
    """Missing or unusable MedMNIST data, with the fix in the message."""


@dataclass(frozen=True)
class DatasetInfo:
    flag: str
    is_3d: bool
    task: str  # "multi-class", "binary-class", "multi-label, binary-class", "ordinal-regression"
    n_channels: int
    n_classes: int
    class_names: tuple[str, ...]
    license: str

    @property
    def multi_label(self) -> bool:
        return self.task.startswith("multi-label")


def dataset_info(flag: str) -> DatasetInfo:
    """Facts about a MedMNIST flag (``retinamnist``, ``adrenalmnist3d``...)."""
    flag = flag.lower()
    if flag not in medmnist.INFO:
        raise DataError(f"unknown MedMNIST flag {flag!r}; choose one of {', '.join(FLAGS_2D + FLAGS_3D)}")
    info = medmnist.INFO[flag]
    labels = info["label"]
    names = tuple(labels[str(i)] for i in range(len(labels)))
    return DatasetInfo(
        flag=flag,
        is_3d=flag in FLAGS_3D,
        task=info["task"],
        n_channels=int(info["n_channels"]),
        n_classes=len(names),
        class_names=names,
        license=info.get("license", "CC BY 4.0"),
    )


def default_root() -> str:
    """medmnist's default data root (``~/.medmnist``)."""
    return medmnist.info.DEFAULT_ROOT


def npz_path(flag: str, root: str | os.PathLike, size: int) -> Path:
    return Path(root) / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")


def check_available(flag: str, root: str | os.PathLike | None, size: int, download: bool = False) -> str:
    """Return the root to use; raise a clear error when the file is missing and not downloadable."""
    if size not in SIZES:
        raise DataError(f"size must be one of {SIZES}, got {size}")
    root = str(root or default_root())
    path = npz_path(flag, root, size)
    if not path.is_file() and not download:
        raise DataError(
            f"{path} not found. Pass --data-root pointing at a folder that holds {path.name}, "
            "or --download to fetch it (needs internet access to Zenodo)."
        )
    if download:
        Path(root).mkdir(parents=True, exist_ok=True)
    return root


def _transform_2d(info: DatasetInfo, size: int, train: bool, aug: str, mean, std):
    from torchvision import transforms as T

    steps = []
    if train and aug == "light":
        steps += [T.RandomResizedCrop(size, scale=(0.85, 1.0), ratio=(0.95, 1.05)), T.RandomHorizontalFlip()]
    elif train and aug == "strong":
        steps += [
            T.RandomResizedCrop(size, scale=(0.7, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(),
            T.RandAugment(num_ops=2, magnitude=7),
        ]
    steps += [T.ToTensor(), T.Normalize(mean[: info.n_channels], std[: info.n_channels])]
    return T.Compose(steps)


def _transform_3d(train: bool, aug: str):
    from monai.transforms import Compose, EnsureType, RandAffine, RandFlip, ScaleIntensityRange

    steps = [EnsureType(data_type="tensor", dtype=torch.float32), ScaleIntensityRange(0.0, 1.0, -1.0, 1.0)]
    if train and aug in ("light", "strong"):
        steps += [RandFlip(prob=0.5, spatial_axis=2)]
        if aug == "strong":
            steps += [RandAffine(prob=0.5, rotate_range=(0.15, 0.15, 0.15), scale_range=(0.1, 0.1, 0.1))]
    return Compose(steps)


class _Targets:
    """medmnist labels (np arrays of shape (L,)) as torch tensors."""

    def __init__(self, multi_label: bool) -> None:
        self.multi_label = multi_label

    def __call__(self, target: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(target))
        return t.float() if self.multi_label else t.long().view(-1)[:1]


def _sized(cls: type) -> type:
    """The medmnist class, with its length read from the file rather than checked against INFO.

    medmnist asserts the official split sizes; subsets and locally made files in the same
    format (smaller, or re-split) are legitimate inputs too.
    """
    return type(
        cls.__name__, (cls,), {"__len__": lambda self: int(self.imgs.shape[0]), "__module__": __name__}
    )


def build_dataset(
    flag: str,
    split: str,
    root: str | os.PathLike | None = None,
    size: int = 28,
    train_aug: str = "none",
    download: bool = False,
    mean: tuple[float, ...] = (0.5, 0.5, 0.5),
    std: tuple[float, ...] = (0.5, 0.5, 0.5),
) -> torch.utils.data.Dataset:
    """A medmnist dataset with tensors out: 2D images normalised with ``mean``/``std``,
    3D volumes scaled to [-1, 1]; ``train_aug`` in ``none``/``light``/``strong`` applies to
    the train split only (torchvision for 2D, MONAI transforms for 3D)."""
    if split not in ("train", "val", "test"):
        raise DataError(f"split must be train, val or test, got {split!r}")
    if train_aug not in ("none", "light", "strong"):
        raise DataError(f"train_aug must be none, light or strong, got {train_aug!r}")
    info = dataset_info(flag)
    root = check_available(info.flag, root, size, download)
    cls = _sized(getattr(medmnist, medmnist.INFO[info.flag]["python_class"]))
    train = split == "train"
    transform = (
        _transform_3d(train, train_aug)
        if info.is_3d
        else _transform_2d(info, size, train, train_aug, mean, std)
    )
    return cls(
        split=split,
        root=root,
        size=size,
        download=download,
        transform=transform,
        target_transform=_Targets(info.multi_label),
    )
