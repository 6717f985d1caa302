"""The data a run trains on, MedMNIST or your own files, behind one interface.

:func:`open_data` returns a :class:`RunData`: the task (:class:`DatasetInfo`), the splits as
datasets of ``(input, label)`` pairs through a :class:`Preprocessing`, ACC / AUC computed by
``medmnist``'s evaluator functions, and the records a run folder keeps (``dataset.json``, plus the
file list of own data).

Example:
    >>> data = open_data(data="my_images/")                                # doctest: +SKIP
    >>> data.info.class_names, data.info.n_channels                        # doctest: +SKIP
    (('benign', 'malignant'), 3)
    >>> test = data.dataset("test", preprocessing)                        # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from .cache import ImageFiles, cached_volumes
from .errors import DataError
from .medmnist_sets import DatasetInfo, build_dataset, check_available, dataset_info
from .own import OwnData, scan, write_file_list
from .preprocessing import Preprocessing

__all__ = ["DATASET_FILE", "FileData", "MedMNISTData", "RunData", "open_data"]

#: What a run folder records of its task (:class:`DatasetInfo` and the data's source).
DATASET_FILE = "dataset.json"


class RunData:
    """Base: ``info``, ``dataset(split, preprocessing, train_aug)``, ``metrics(split, scores, labels)``."""

    info: DatasetInfo

    def dataset(
        self, split: str, prep: Preprocessing, train_aug: str = "none", progress: bool = True
    ) -> Dataset:
        raise NotImplementedError

    def metrics(self, split: str, scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """ACC and AUC as the MedMNIST benchmark computes them for the task type."""
        from medmnist.evaluator import getACC, getAUC

        return {
            "auc": float(getAUC(labels, scores, self.info.task)),
            "acc": float(getACC(labels, scores, self.info.task)),
        }

    def describe(self) -> dict[str, Any]:
        """What ``dataset.json`` records (the task, and where the data came from)."""
        return {"info": self.info.to_dict()}

    def write_records(self, folder: str | os.PathLike) -> list[Path]:
        """Write ``dataset.json`` (and the file list of own data) into a run folder."""
        from ..atomic import atomic_write_text

        out = Path(folder) / DATASET_FILE
        atomic_write_text(out, json.dumps(self.describe(), indent=2) + "\n")
        return [out]


class MedMNISTData(RunData):
    """A MedMNIST flag from ``root`` at ``size`` (the official ``.npz`` files)."""

    def __init__(self, flag: str, root: str | None = None, size: int = 28, download: bool = False) -> None:
        self.info = dataset_info(flag)
        self.size = size
        self.download = download
        self.root = check_available(self.info.flag, root, size, download)

    def dataset(
        self, split: str, prep: Preprocessing, train_aug: str = "none", progress: bool = True
    ) -> Dataset:
        return build_dataset(
            self.info.flag, split, root=self.root, size=self.size, train_aug=train_aug,
            download=self.download, preprocessing=prep,
        )  # fmt: skip

    def metrics(self, split: str, scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        import medmnist

        auc, acc = medmnist.Evaluator(self.info.flag, split, size=self.size, root=self.root).evaluate(scores)
        return {"auc": float(auc), "acc": float(acc)}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "source": {"kind": "medmnist", "flag": self.info.flag, "size": self.size},
        }


def _image_channels(data: OwnData) -> int:
    """1 when every image is grayscale, else 3 (read from the file headers only)."""
    from PIL import Image, UnidentifiedImageError

    gray = True
    for s in data.samples:
        try:
            with Image.open(s.path) as img:
                mode = img.mode
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{s.path}: cannot read this image ({e}); replace or remove the file") from e
        gray = gray and mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
    return 1 if gray else 3


class FileData(RunData):
    """Own files (see :mod:`rllm_zoo.data.own`); 2D through :class:`ImageFiles`, 3D through MONAI."""

    def __init__(self, data: OwnData) -> None:
        self.data = data
        if data.is_3d:
            from ..monai.io import ReadVolumed

            channels = int(ReadVolumed("image").read(data.samples[0].path).shape[0])
        else:
            channels = _image_channels(data)
        k = len(data.classes)
        self.info = DatasetInfo(
            flag=None,
            is_3d=data.is_3d,
            task="binary-class" if k == 2 else "multi-class",
            n_channels=channels,
            n_classes=k,
            class_names=data.classes,
            license=None,
            name=data.name,
        )

    def dataset(
        self, split: str, prep: Preprocessing, train_aug: str = "none", progress: bool = True
    ) -> Dataset:
        samples = self.data.split(split)
        aug = train_aug if split == "train" else "none"
        what = f"{split} split"
        if self.info.is_3d:
            records = [{"image": s.path, "label": s.label, "id": s.path} for s in samples]
            return cached_volumes(records, prep, aug, what=what, progress=progress)
        return ImageFiles([s.path for s in samples], [s.label for s in samples], prep, aug, what, progress)

    def labels(self, split: str) -> np.ndarray:
        return np.array([[s.label] for s in self.data.split(split)], dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        source = {"kind": self.data.kind, "path": self.data.source, "split": self.data.split_note}
        return {**super().describe(), "source": source, "counts": self.data.counts()}

    def write_records(self, folder: str | os.PathLike) -> list[Path]:
        return [*super().write_records(folder), write_file_list(self.data, folder)]


def open_data(
    flag: str | None = None,
    data: str | None = None,
    *,
    data_root: str | None = None,
    size: int = 28,
    download: bool = False,
    split: str | tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    classes: tuple[str, ...] | None = None,
) -> RunData:
    """MedMNIST (``flag``) or own data (``data``: folder, CSV or datalist); exactly one of them."""
    if (flag is None) == (data is None):
        raise DataError(
            "give either flag (a MedMNIST set, --flag) or data (your folder, CSV or datalist, --data)"
            + (", not both" if flag is not None else "")
        )
    if flag is not None:
        return MedMNISTData(flag, data_root, size, download)
    return FileData(scan(data, split=split, seed=seed, classes=classes))
